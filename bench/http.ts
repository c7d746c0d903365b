import http from 'node:http';

/**
 * The outcome of one request to the billing API: a status and parsed body, or a transport
 * failure (status 0 with `error`). Bodies come in many shapes; the callers check what they use.
 */
export interface HttpResult {
  status: number;
  body: any;
  /** Set when no response came back: connection refused or reset, or the timeout. */
  error?: string;
}

/** A transport failure as `attempt` reports it, with the error `request` rejects with. */
type Exchange = HttpResult & { failure?: Error };

/**
 * A keep-alive JSON client for the billing API, shared by the benchmark and the chaos driver:
 * fetch's per-request overhead would dominate a load generator, and both drive the same API with
 * the same `x-api-key`. `request` rejects on a transport failure (a benchmark stops there);
 * `attempt` never throws (a chaos run retries, since such a request may or may not have counted).
 */
export class HttpClient {
  private readonly agent: http.Agent;
  private readonly base: URL;

  constructor(baseUrl: string, private readonly key: string, maxSockets = 256) {
    this.base = new URL(baseUrl);
    this.agent = new http.Agent({ keepAlive: true, maxSockets });
  }

  /**
   * Sends one request; resolves with the status and parsed body, rejects when no response came
   * back. `headers` may name another `x-api-key` (a tenant's own key).
   */
  async request(method: string, pathname: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
    const { status, body: parsed, failure } = await this.exchange(method, pathname, body, undefined, headers);
    if (failure) throw failure;
    return { status, body: parsed };
  }

  /**
   * Sends one request and never throws: a refused or reset connection, or no answer within
   * `timeoutMs`, resolves as `status: 0` with `error` (the request's outcome is then unknown).
   */
  async attempt(method: string, pathname: string, body?: unknown, timeoutMs = 10_000, headers: Record<string, string> = {}): Promise<HttpResult> {
    const { failure: _failure, ...result } = await this.exchange(method, pathname, body, timeoutMs, headers);
    return result;
  }

  /** Closes the kept-alive sockets. */
  close(): void {
    this.agent.destroy();
  }

  /** One request/response exchange; a transport failure resolves with `failure` set. */
  private exchange(method: string, pathname: string, body: unknown, timeoutMs: number | undefined, headers: Record<string, string> = {}): Promise<Exchange> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve) => {
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const finish = (result: Exchange) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(result);
      };
      const fail = (error: string, failure: Error) => finish({ status: 0, body: undefined, error, failure });
      const req = http.request(
        {
          host: this.base.hostname,
          port: this.base.port,
          method,
          path: pathname,
          agent: this.agent,
          headers: {
            'x-api-key': this.key,
            ...headers,
            ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (err) => fail(`response: ${err.message}`, err));
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
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          const timeout = new Error('timeout');
          req.destroy(timeout);
          fail('timeout', timeout);
        }, timeoutMs);
      }
      req.on('error', (err: NodeJS.ErrnoException) => fail(err.code ?? err.message, err));
      if (payload) req.write(payload);
      req.end();
    });
  }
}
