import knex from 'knex';
import pino from 'pino';
import { Client, Connection } from '@temporalio/client';
import type { Express } from 'express';
import { createApp } from '../../../src/api/app';
import { listen } from '../../../src/api/server';

const quiet = () => {};

export const ADMIN_KEY = 'unit-test-admin-key-0123456789';

/**
 * The real app over a PostgreSQL and a Temporal that do not exist: both connect lazily, so the
 * router can be read and routes reached (a query answers 503) without either.
 */
export function offlineApp(): { app: Express; close: () => Promise<void> } {
  // knex would print every refused connection on the console.
  const db = knex({ client: 'pg', connection: 'postgres://nobody@127.0.0.1:1/nothing', pool: { min: 0, max: 2 }, log: { warn: quiet, error: quiet, deprecate: quiet, debug: quiet } });
  const app = createApp({
    db,
    temporal: new Client({ connection: Connection.lazy({ address: '127.0.0.1:1' }) }),
    taskQueue: 'billing',
    namespace: 'default',
    adminKey: ADMIN_KEY,
    logger: pino({ level: 'silent' }),
  });
  return { app, close: () => db.destroy() };
}

/** The app listening on an ephemeral loopback port. */
export async function serveOffline(): Promise<{ app: Express; url: string; close: () => Promise<void> }> {
  const { app, close } = offlineApp();
  const server = await listen(app, 0, '127.0.0.1');
  return {
    app,
    url: `http://127.0.0.1:${server.port}`,
    close: async () => {
      await server.close();
      await close();
    },
  };
}
