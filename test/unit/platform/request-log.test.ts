/**
 * The API's request log: one short line per request at info, headers (credentials redacted) only
 * at debug. Requests go through the real app in memory: no socket, no PostgreSQL, no Temporal
 * (the pool and the connection are lazy, and a 404 touches neither).
 */
import http from 'node:http';
import { Duplex, Writable } from 'node:stream';
import pino from 'pino';
import { Client, Connection } from '@temporalio/client';
import { createApp } from '../../../src/api/app';
import { createDb } from '../../../src/db/knex';

const db = createDb('postgres://nobody@127.0.0.1:1/nothing');
afterAll(() => db.destroy());

/** Sends one request through an app whose logger is at `level`; returns the log lines it wrote. */
async function logOf(level: pino.Level, request: { method: string; url: string; headers: http.IncomingHttpHeaders }): Promise<any[]> {
  const lines: any[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  const app = createApp({
    db,
    temporal: new Client({ connection: Connection.lazy({ address: '127.0.0.1:1' }) }),
    taskQueue: 'billing',
    namespace: 'default',
    adminKey: 'unit-test-admin-key-0123456789',
    logger: pino({ level }, sink),
  });
  // The response is written to a stream that keeps nothing: only the log matters here.
  const socket = new Duplex({ read() {}, write: (_chunk, _enc, done) => done() });
  const req = new http.IncomingMessage(socket as never);
  Object.assign(req, request);
  req.push(null);
  const res = new http.ServerResponse(req);
  res.assignSocket(socket as never);
  await new Promise<void>((resolve) => {
    res.on('finish', resolve);
    app(req, res);
  });
  return lines;
}

const request = { method: 'GET', url: '/no/such/route?x=1', headers: { 'x-api-key': 'ak_secret_value', 'user-agent': 'unit', 'x-request-id': 'req-1' } };

test('at info a request is one line without headers: method, url, status, time and request id', async () => {
  const lines = await logOf('info', request);
  expect(lines).toHaveLength(1);
  const [line] = lines;
  expect(line).toMatchObject({ level: 30, request_id: 'req-1', req: { method: 'GET', url: '/no/such/route?x=1' }, res: { statusCode: 404 } });
  expect(typeof line.responseTime).toBe('number');
  expect(line.req.headers).toBeUndefined();
  expect(line.res.headers).toBeUndefined();
  expect(JSON.stringify(line)).not.toContain('ak_secret_value');
});

test('at debug the line carries the request and response headers, credentials redacted', async () => {
  const lines = await logOf('debug', request);
  expect(lines).toHaveLength(1);
  const [line] = lines;
  expect(line.req.headers).toMatchObject({ 'x-api-key': '[redacted]', 'user-agent': 'unit' });
  expect(line.res.headers).toMatchObject({ 'x-request-id': 'req-1' });
  expect(JSON.stringify(line)).not.toContain('ak_secret_value');
});
