/** Graceful shutdown: close() sends what is buffered and leaves nothing running. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { TallyClient, type UsageDeliveryError } from '../src';
import { FAST_RETRY, scriptedApi } from './support';

test('close() sends every buffered event, then the process exits on its own: no timer or socket left', async () => {
  const api = await scriptedApi();
  const entry = path.join(__dirname, '../src/index.js');
  // The flush interval is a minute: only close() can send these events before the process would exit.
  const script = `
    const { TallyClient } = require(${JSON.stringify(entry)});
    const client = new TallyClient({ baseUrl: process.argv[1], apiKey: 'tk_test', flushIntervalMs: 60000 });
    for (let i = 0; i < 1500; i += 1) client.track({ metric: 'm', quantity: 1 });
    client.close().then(() => { console.log(JSON.stringify(client.stats())); });
  `;
  const started = Date.now();
  const child = spawn(process.execPath, ['-e', script, api.url], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exit = await new Promise<number | null>((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve(null);
    }, 10_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
  assert.equal(exit, 0, `the process did not exit by itself within 10 s:\n${out}`);
  assert.ok(Date.now() - started < 10_000);
  assert.equal(JSON.parse(out).delivered, 1500);
  assert.deepEqual(api.received.map((r) => r.events.length), [1000, 500]);
  await api.close();
});

test('an idle client holds no handle; close() is idempotent and clears the pending interval timer', async () => {
  const api = await scriptedApi();
  const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const before = timers();
  const client = new TallyClient({ baseUrl: api.url, apiKey: 'tk_test', flushIntervalMs: 60_000, retry: FAST_RETRY });
  assert.equal(timers(), before, 'no timer before the first event');
  client.track({ metric: 'm', quantity: 1 });
  assert.equal(timers(), before + 1, 'the interval timer runs while an event waits');
  const first = client.close();
  assert.equal(client.close(), first);
  await first;
  assert.equal(timers(), before, 'no timer after close');
  assert.equal(api.accepted().length, 1);
  await api.close();
});

test('close({ timeoutMs }) against an API that never answers: gives the events to onError and returns on time', async () => {
  const api = await scriptedApi(() => 'hang');
  const errors: UsageDeliveryError[] = [];
  const client = new TallyClient({ baseUrl: api.url, apiKey: 'tk_test', maxBatchEvents: 2, flushIntervalMs: 60_000, requestTimeoutMs: 60_000, onError: (e) => errors.push(e) });
  for (let i = 0; i < 5; i += 1) client.track({ metric: 'm', quantity: 1 });
  const started = Date.now();
  await client.close({ timeoutMs: 300 });
  const took = Date.now() - started;
  assert.ok(took >= 290 && took < 2_000, `close took ${took} ms`);
  assert.equal(errors.reduce((n, e) => n + e.events.length, 0), 5);
  assert.ok(errors.every((e) => e.reason === 'closed'));
  assert.deepEqual(client.stats().failed, { rejected: 0, retries_exhausted: 0, closed: 5 });
  await api.close();
});
