import net from 'node:net';
import pg from 'pg';
import { isDependencyOutage } from '../../src/api/errors';
import { testDatabaseUrl, testDbForFile } from '../support/stack';

/**
 * What node-postgres throws when PostgreSQL is away, produced for real: against sockets that
 * refuse, stay silent or close, and against the test run's PostgreSQL when it ends a backend (as
 * a restart does). Each must read as an outage (503 with Retry-After), not a 500.
 */
const db = testDbForFile();
async function caught(work: () => Promise<unknown>): Promise<unknown> {
  try {
    await work();
  } catch (err) {
    return err;
  }
  throw new Error('expected a failure');
}

/** A TCP server that accepts connections and then does what `onConnection` says. */
async function tcpServer(onConnection: (socket: net.Socket) => void): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    onConnection(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

test('a refused connection is an outage', async () => {
  const unused = await tcpServer(() => undefined);
  await unused.close();
  const err = await caught(() => new pg.Client({ host: '127.0.0.1', port: unused.port }).connect());
  expect(isDependencyOutage(err)).toBe(true);
});

test('a pool that cannot get a connection in time is an outage', async () => {
  const silent = await tcpServer(() => undefined);
  const pool = new pg.Pool({ host: '127.0.0.1', port: silent.port, connectionTimeoutMillis: 100, max: 1 });
  try {
    const err = await caught(() => pool.query('SELECT 1'));
    expect(isDependencyOutage(err)).toBe(true);
  } finally {
    await pool.end().catch(() => undefined);
    await silent.close();
  }
});

test('a connection closed as it is made is an outage', async () => {
  const closing = await tcpServer((socket) => setTimeout(() => socket.destroy(), 20));
  try {
    const err = await caught(() => new pg.Client({ host: '127.0.0.1', port: closing.port }).connect());
    expect(isDependencyOutage(err)).toBe(true);
  } finally {
    await closing.close();
  }
});

test('a backend PostgreSQL ends is an outage, and so is every later query on its client', async () => {
  const client = new pg.Client({ connectionString: testDatabaseUrl() });
  await client.connect();
  // The client may emit a second error as its socket closes ("Connection terminated
  // unexpectedly"): the listener stays, so that one is not an unhandled 'error' event.
  const ended = new Promise<unknown>((resolve) => client.on('error', resolve));
  try {
    const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    await db.raw('SELECT pg_terminate_backend(?)', [rows[0]!.pid]);
    expect(isDependencyOutage(await ended)).toBe(true); // 57P01, admin shutdown
    const later = await caught(() => client.query('SELECT 1'));
    expect((later as Error).message).toBe('Client has encountered a connection error and is not queryable');
    expect(isDependencyOutage(later)).toBe(true);
  } finally {
    await client.end().catch(() => undefined);
  }
});

test('a query on a client already closed is an outage', async () => {
  const client = new pg.Client({ connectionString: testDatabaseUrl() });
  await client.connect();
  await client.end();
  const err = await caught(() => client.query('SELECT 1'));
  expect(isDependencyOutage(err)).toBe(true);
});

test('a bug is not an outage', () => {
  expect(isDependencyOutage(new TypeError("Cannot read properties of undefined (reading 'start')"))).toBe(false);
  expect(isDependencyOutage(Object.assign(new Error('duplicate key value violates unique constraint'), { code: '23505' }))).toBe(false);
});
