import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** One request the scripted API received. */
export interface Received {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** `events` of a `POST /v1/events` body. */
  events: Array<{ id: string; metric: string; quantity?: number; tenant_id?: string; timestamp?: string; properties?: Record<string, unknown> }>;
  at: number;
}

/** How the scripted API answers one request: a status, headers and a JSON body, or `destroy` (no answer at all). */
export type Answer = { status: number; headers?: Record<string, string>; body?: unknown } | 'destroy' | 'hang';

/**
 * A real HTTP server on loopback that plays the API: it records every request and answers each
 * with what `respond` returns (by default 202 `{ received: n }` for events, as the API does).
 */
export async function scriptedApi(respond: (req: Received, index: number) => Answer = () => ({ status: 202 }), port = 0): Promise<{
  url: string;
  port: number;
  received: Received[];
  /** The events of every answered 202, in order. */
  accepted: () => Received['events'];
  close: () => Promise<void>;
}> {
  const received: Received[] = [];
  const answered202: Received[] = [];
  const hanging = new Set<http.ServerResponse>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      let events: Received['events'] = [];
      if (req.url === '/v1/events' && body) events = (JSON.parse(body) as { events: Received['events'] }).events;
      const record: Received = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body, events, at: Date.now() };
      received.push(record);
      const answer = respond(record, received.length - 1);
      if (answer === 'destroy') {
        req.socket.destroy();
        return;
      }
      if (answer === 'hang') {
        hanging.add(res);
        return;
      }
      if (answer.status === 202) answered202.push(record);
      const payload = answer.body ?? (answer.status === 202 ? { received: events.length } : undefined);
      const type = answer.status >= 400 ? 'application/problem+json' : 'application/json';
      res.writeHead(answer.status, { 'content-type': type, ...answer.headers });
      res.end(payload === undefined ? '' : JSON.stringify(payload));
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  // A test that fails before its close() must not keep the test process alive.
  server.unref();
  const bound = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${bound}`,
    port: bound,
    received,
    accepted: () => answered202.flatMap((r) => r.events),
    close: () =>
      new Promise<void>((resolve) => {
        for (const res of hanging) res.destroy();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** A problem+json body as the API writes it. */
export function problem(status: number, code: string, errors?: Array<{ path: string; message: string }>): { status: number; body: unknown; headers?: Record<string, string> } {
  return { status, body: { type: `https://tally.dev/problems/${code}`, title: code, status, detail: `${code} (scripted)`, code, ...(errors ? { errors } : {}), request_id: 'req-1' } };
}

/** Polls until `check` is true or `ms` have passed. */
export async function until(check: () => boolean, ms = 5_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A retry policy fast enough for tests: attempts and time as given, waits of a few ms. */
export const FAST_RETRY = { baseDelayMs: 5, maxDelayMs: 20, maxAttempts: 10, maxElapsedMs: 10_000 };
