import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** One request a receiver got, and how (whether) it answered. */
export interface ReceiverHit {
  path: string;
  raw: string;
  signature: string | undefined;
  answered: number | 'never';
  /** True while the request is held open (the sender has not given up yet). */
  open: boolean;
}

/** A misbehaving webhook receiver on a loopback port. */
export interface FaultyReceiver {
  url: string;
  hits: ReceiverHit[];
  /** Requests being held open right now. */
  hanging(): number;
  close(): Promise<void>;
}

/**
 * A webhook receiver that misbehaves by path:
 * - `/hang-*`: the first `hangs` requests per path are never answered (later ones get 200), so
 *   only the sender's own timeout ends them; `hangs: Infinity` never answers at all;
 * - `/redirect-*`: 302 to `redirectTo`;
 * - anything else: 200.
 */
export function startFaultyReceiver(options: { hangs?: number; redirectTo?: string } = {}): Promise<FaultyReceiver> {
  const hangs = options.hangs ?? 0;
  const redirectTo = options.redirectTo ?? 'http://127.0.0.1:9/';
  const hits: ReceiverHit[] = [];
  const held = new Set<http.ServerResponse>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '/';
      const hit: ReceiverHit = {
        path,
        raw: Buffer.concat(chunks).toString('utf8'),
        signature: req.headers['x-billing-signature'] as string | undefined,
        answered: 'never',
        open: false,
      };
      const earlier = hits.filter((h) => h.path === path).length;
      hits.push(hit);
      if (path.startsWith('/hang-') && earlier < hangs) {
        hit.open = true;
        held.add(res);
        res.on('close', () => {
          hit.open = false;
          held.delete(res);
        });
        return;
      }
      if (path.startsWith('/redirect-')) {
        hit.answered = 302;
        res.writeHead(302, { location: redirectTo }).end();
        return;
      }
      hit.answered = 200;
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      resolve({
        url: `http://127.0.0.1:${port}`,
        hits,
        hanging: () => held.size,
        close: () =>
          new Promise<void>((done) => {
            for (const res of held) res.destroy();
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
