import http from 'node:http';
import type { Express } from 'express';

/** A listening HTTP server that finishes in-flight requests when closed. */
export interface RunningServer {
  port: number;
  close(): Promise<void>;
}

/** Starts the app on `port` (0 picks a free one) and resolves once it listens. */
export async function listen(app: Express, port: number, host = '0.0.0.0'): Promise<RunningServer> {
  const server = http.createServer(app);
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}
