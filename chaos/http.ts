import http from 'node:http';

/** The outcome of one HTTP request: a status and body, or a transport failure (status 0). */
export interface HttpResult {
  status: number;
  // Response bodies of many shapes; the callers check what they use.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
  /** Set when no response came back: connection refused or reset, or the timeout. */
  error?: string;
}

/**
 * A keep-alive JSON client that never throws: a refused or reset connection, or no answer within
 * the timeout, comes back as `status: 0` with `error`, which is what a caller retrying a batch
 * needs (the outcome of such a request is unknown: it may or may not have been recorded).
 */
export class ChaosHttp {
  private readonly agent: http.Agent;
  private readonly base: URL;

  constructor(baseUrl: string, private readonly key: string, maxSockets = 64) {
    this.base = new URL(baseUrl);
    this.agent = new http.Agent({ keepAlive: true, maxSockets });
  }

  request(method: string, pathname: string, body?: unknown, timeoutMs = 10_000): Promise<HttpResult> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve) => {
      let settled = false;
      const finish = (result: HttpResult) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(result);
      };
      const req = http.request(
        {
          host: this.base.hostname,
          port: this.base.port,
          method,
          path: pathname,
          agent: this.agent,
          headers: {
            'x-api-key': this.key,
            ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (err) => finish({ status: 0, body: undefined, error: `response: ${err.message}` }));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown = text;
            try {
              parsed = text ? JSON.parse(text) : undefined;
            } catch {
              // keep the text
            }
            finish({ status: res.statusCode ?? 0, body: parsed });
          });
        },
      );
      const timer = setTimeout(() => {
        req.destroy(new Error('timeout'));
        finish({ status: 0, body: undefined, error: 'timeout' });
      }, timeoutMs);
      req.on('error', (err: NodeJS.ErrnoException) => finish({ status: 0, body: undefined, error: err.code ?? err.message }));
      if (payload) req.write(payload);
      req.end();
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
