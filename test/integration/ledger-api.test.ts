import { Worker } from '@temporalio/worker';
import { startApiHarness, eventually, type ApiHarness } from '../support/api-harness';
import { connectToTestTemporal, quietLogger, unique, workflowBundle } from '../support/stack';
import { createApp } from '../../src/api/app';
import { listen } from '../../src/api/server';
import { createActivities } from '../../src/activities';
import { createRecordingNotifier } from '../../src/notifications/notifier';
import { tenantWorkflowId } from '../../src/workflows/messages';
import { ledgerPlan, settledUsage, tenantOn as tenantOnApi } from '../support/api-tenants';

/**
 * Core v2 through the real API (docs/design/core-v2.md), and the defects of issue 17 that it had
 * to fix: PostgreSQL is the event ledger, the workflow only counts what is stored, and no client
 * load, no race and no cancellation loses an acknowledged event or breaks a tenant.
 */
let api: ApiHarness;
beforeAll(async () => {
  api = await startApiHarness();
});
afterAll(async () => {
  await api?.stop();
});

const plan = ledgerPlan;
const tenantOn = (planBody: ReturnType<typeof ledgerPlan>, id?: string) => tenantOnApi(api, planBody, id);
const settled = (tenant: { id: string; key: string }) => settledUsage(api, tenant);
/** A finance close with finalize and this `Idempotency-Key`. */
const keyedClose = (tenantId: string, key: string) =>
  fetch(`${api.baseUrl}/v1/tenants/${tenantId}/close-period`, {
    method: 'POST',
    headers: { 'x-api-key': api.adminKey, 'content-type': 'application/json', 'idempotency-key': key },
    body: JSON.stringify({ finalize: true }),
  }).then(async (r) => ({ status: r.status, body: (await r.json()) as any }));

test('concurrent authorize requests never pass a hard limit (issue 17, item 1)', async () => {
  const tenant = await tenantOn(plan(unique('auth')));
  const answers = await Promise.all(
    Array.from({ length: 20 }, (_, i) => api.call('POST', `/v1/tenants/${tenant.id}/authorize`, { key: tenant.key, body: { id: `r${i}`, metric: 'calls', quantity: 10 } })),
  );
  expect(answers.map((a) => a.status)).toEqual(Array(20).fill(200));
  const allowed = answers.filter((a) => a.body.allowed);
  expect(allowed).toHaveLength(10);
  // Served one at a time: each allowed answer saw the one before it.
  expect(allowed.map((a) => a.body.remaining).sort((a: number, b: number) => a - b)).toEqual([0, 10, 20, 30, 40, 50, 60, 70, 80, 90]);
  expect(answers.filter((a) => !a.body.allowed).every((a) => a.body.reason === 'hard_limit' && a.body.remaining === 0)).toBe(true);
  expect((await settled(tenant)).metrics.calls.used).toBe(100);
});

test('three concurrent requests at the largest size the API accepts are all counted, and the tenant keeps working (issue 17, item 2)', async () => {
  const tenant = await tenantOn(plan(unique('big')));
  const filler = 'x'.repeat(900);
  const request = (r: number) => ({ events: Array.from({ length: 1000 }, (_, i) => ({ id: `b${r}-${i}`, metric: 'tokens', quantity: 1, properties: { note: filler } })) });
  expect(Buffer.byteLength(JSON.stringify(request(0)))).toBeGreaterThan(950_000);
  const answers = await Promise.all([0, 1, 2].map((r) => api.call('POST', '/v1/events', { key: tenant.key, body: request(r) })));
  expect(answers.map((a) => a.status)).toEqual([202, 202, 202]);
  expect((await settled(tenant)).metrics.tokens.used).toBe(3000);
  const close = await api.call('POST', `/v1/tenants/${tenant.id}/close-period`, { body: { finalize: true } });
  expect(close.status).toBe(200);
});

test('a close ends the period at its instant, even after a future-stamped event; a retried close with the same Idempotency-Key closes once (issue 17, items 12 and 13)', async () => {
  const tenant = await tenantOn(plan(unique('close')));
  const ahead = new Date(Date.now() + 4 * 60_000).toISOString();
  expect((await api.call('POST', '/v1/events', { key: tenant.key, body: { events: [{ id: 'now', metric: 'tokens', quantity: 5 }, { id: 'ahead', metric: 'tokens', quantity: 7, timestamp: ahead }] } })).status).toBe(202);
  const requestedAt = Date.now();
  const close = (key: string) => keyedClose(tenant.id, key);
  const [first, concurrent] = await Promise.all([close('close-1'), close('close-1')]);
  const retried = await close('close-1');
  expect([first.status, concurrent.status, retried.status]).toEqual([200, 200, 200]);
  expect(concurrent.body).toEqual(first.body);
  expect(retried.body).toEqual(first.body);
  const closedEnd = Date.parse(first.body.closed_period.end);
  expect(closedEnd).toBeGreaterThanOrEqual(requestedAt - 1_000);
  expect(closedEnd).toBeLessThan(Date.parse(ahead));
  const periods = await api.call('GET', `/v1/tenants/${tenant.id}/periods`, { key: tenant.key });
  expect(periods.body.data).toHaveLength(2); // one close, not three
  // The future event belongs to the next period; the closed period's invoice is finalized without it.
  const invoice = await eventually(async () => {
    const res = await api.call('GET', `/v1/invoices/${first.body.invoice_id}`);
    return res.body?.status === 'finalized' ? res.body : undefined;
  }, 20_000, 'the invoice finalized');
  expect(invoice.lines.find((l: any) => l.metric === 'tokens')).toMatchObject({ quantity: 5 });
  expect((await settled(tenant)).metrics.tokens.used).toBe(7);
  // A new key is a new close.
  const second = await close('close-2');
  expect(second.body.closed_period.start).toBe(first.body.current_period.start);
});

test('closes sent at once with different Idempotency-Keys: a retry of each key answers what that key was answered, and closes nothing more', async () => {
  const tenant = await tenantOn(plan(unique('keys')));
  const close = (key: string) => keyedClose(tenant.id, key);
  const keys = ['k-a', 'k-b', 'k-c'];
  const firsts = await Promise.all(keys.map(close));
  expect(firsts.map((a) => a.status)).toEqual([200, 200, 200]);
  // Closes that reach the run before its rollover answers share that rollover.
  const closedStarts = new Set(firsts.map((a) => a.body.closed_period.start));
  const retries = await Promise.all(keys.map(close));
  expect(retries.map((a) => a.body)).toEqual(firsts.map((a) => a.body));
  const periods = await api.call('GET', `/v1/tenants/${tenant.id}/periods`, { key: tenant.key });
  expect(periods.body.data).toHaveLength(closedStarts.size + 1);
});

test('a DELETE that meets a close under way still cancels: the close is answered, and the subscription ends', async () => {
  // Sent at once, the DELETE meets the close before its rollover begins; later, during it or after.
  for (const delayMs of [0, 30, 60, 90, 120]) {
    const tenant = await tenantOn(plan(unique('cxl')));
    const close = api.call('POST', `/v1/tenants/${tenant.id}/close-period`, { body: { finalize: true } });
    await new Promise((r) => setTimeout(r, delayMs));
    const del = api.call('DELETE', `/v1/tenants/${tenant.id}`);
    const [closed, deleted] = await Promise.all([close, del]);
    expect([closed.status, deleted.status]).toEqual([200, 200]);
    // Either the cancellation made the close cancel (no period after it), or it came after the
    // close's rollover and ended the period that rollover opened.
    expect(deleted.body.closed_period.start).toBe(closed.body.current_period?.start ?? closed.body.closed_period.start);
    expect(deleted.body.status).toBe('cancelled');
    const stored = await api.call('GET', `/v1/tenants/${tenant.id}`);
    expect(stored.body.status).toBe('cancelled');
    // No period is left open to take usage.
    const periods = await api.call('GET', `/v1/tenants/${tenant.id}/periods`, { key: tenant.key });
    expect(periods.body.data.every((p: { status: string }) => p.status !== 'open')).toBe(true);
  }
});

test('a close with finalize that meets a close without it still finalizes its invoice at once, and the period refuses late events from then on', async () => {
  // Sent at once, the finalizing close joins the other before its rollover begins; later, during
  // that rollover (which keeps the hour of grace) or after it (then it closes the next period).
  for (const delayMs of [0, 30, 60, 90, 120]) {
    const tenant = await tenantOn(plan(unique('fin'), { grace_period_seconds: 3600 }));
    const plain = api.call('POST', `/v1/tenants/${tenant.id}/close-period`, { body: {} });
    await new Promise((r) => setTimeout(r, delayMs));
    const finalizing = await api.call('POST', `/v1/tenants/${tenant.id}/close-period`, { body: { finalize: true } });
    const closed = await plain;
    expect([closed.status, finalizing.status]).toEqual([200, 200]);
    const invoice = await eventually(async () => {
      const read = await api.call('GET', `/v1/invoices/${finalizing.body.invoice_id}`);
      return read.body.status === 'finalized' ? read.body : undefined;
    }, 10_000, `invoice ${finalizing.body.invoice_id} finalized (close sent ${delayMs} ms after the other)`);
    expect(invoice.number).not.toBeNull();
    const periods = await api.call('GET', `/v1/tenants/${tenant.id}/periods`, { key: tenant.key });
    const period = periods.body.data.find((p: { start: string }) => p.start === finalizing.body.closed_period.start);
    expect(period.status).toBe('invoiced');
    expect(Date.parse(period.grace_ends_at)).toBeLessThanOrEqual(Date.now());
    const late = await api.call('POST', '/v1/events', {
      key: tenant.key,
      body: { events: [{ id: unique('late'), metric: 'tokens', quantity: 1, timestamp: period.start }] },
    });
    expect([late.status, late.body.code]).toEqual([422, 'late_event']);
  }
});

test('DELETE during ingest: every acknowledged event is billed on the final invoice, later ones are refused (issue 17, item 3)', async () => {
  const tenant = await tenantOn(plan(unique('del')));
  const acknowledged: string[] = [];
  const refused: number[] = [];
  let n = 0;
  let deleted = false;
  const sender = async () => {
    for (let i = 0; i < 400 && refused.length < 5; i += 1) {
      const events = Array.from({ length: 20 }, () => ({ id: `d${(n += 1)}`, metric: 'tokens', quantity: 1 }));
      const res = await api.call('POST', '/v1/events', { key: tenant.key, body: { events } });
      if (res.status === 202) {
        expect(deleted).toBe(false); // nothing is acknowledged once the DELETE has answered
        acknowledged.push(...events.map((e) => e.id));
      } else {
        expect(res.status).toBe(409);
        expect(res.body.code).toBe('subscription_cancelled');
        refused.push(res.status);
      }
    }
  };
  const senders = [sender(), sender(), sender(), sender()];
  await new Promise((r) => setTimeout(r, 700));
  const del = await api.call('DELETE', `/v1/tenants/${tenant.id}`);
  deleted = true;
  expect(del.status).toBe(200);
  await Promise.all(senders);
  expect(acknowledged.length).toBeGreaterThan(0);

  const stored = await api.db('usage_events').where({ tenant_id: tenant.id }).pluck('event_id');
  expect(new Set(stored)).toEqual(new Set(acknowledged));
  const invoice = await eventually(async () => {
    const res = await api.call('GET', `/v1/invoices/${del.body.final_invoice_id}`);
    return res.body?.status === 'finalized' ? res.body : undefined;
  }, 20_000, 'the final invoice');
  expect(invoice.lines.find((l: any) => l.metric === 'tokens').quantity).toBe(acknowledged.length);
});

test('DELETE finishes even when the tenant workflow is gone; a retry then answers 409 (issue 17, item 9)', async () => {
  const tenant = await tenantOn(plan(unique('gone')));
  await api.call('POST', '/v1/events', { key: tenant.key, body: { events: [{ id: 'g1', metric: 'tokens', quantity: 3 }] } });
  await settled(tenant);
  await api.client.workflow.getHandle(tenantWorkflowId(tenant.id)).terminate('lost by hand');
  const del = await api.call('DELETE', `/v1/tenants/${tenant.id}`);
  expect(del.status).toBe(200);
  expect(del.body.status).toBe('cancelled');
  expect((await api.call('DELETE', `/v1/tenants/${tenant.id}`)).status).toBe(409);
  const invoice = await eventually(async () => {
    const res = await api.call('GET', `/v1/invoices/${del.body.final_invoice_id}`);
    return res.body?.status === 'finalized' ? res.body : undefined;
  }, 20_000, 'the final invoice');
  expect(invoice.lines.find((l: any) => l.metric === 'tokens').quantity).toBe(3);
});

test('a plan change to a daily plan gives a one-day period from the close, and back to monthly tiles with it (issue 17, item 7)', async () => {
  const monthly = plan(unique('mon'));
  const tenant = await tenantOn(monthly);
  const daily = plan(unique('day'), { interval: 'day' });
  expect((await api.call('POST', '/v1/plans', { body: daily })).status).toBe(201);
  expect((await api.call('PATCH', `/v1/tenants/${tenant.id}`, { body: { plan_id: daily.id } })).status).toBe(200);
  const toDaily = await api.call('POST', `/v1/tenants/${tenant.id}/close-period`, { body: { finalize: true } });
  const midnight = new Date(toDaily.body.closed_period.end);
  midnight.setUTCHours(24, 0, 0, 0);
  expect(toDaily.body.current_period).toEqual({ start: toDaily.body.closed_period.end, end: midnight.toISOString() });
  const usage = await settled(tenant);
  expect(usage.period.interval).toBe('day');

  expect((await api.call('PATCH', `/v1/tenants/${tenant.id}`, { body: { plan_id: monthly.id } })).status).toBe(200);
  const toMonthly = await api.call('POST', `/v1/tenants/${tenant.id}/close-period`, { body: { finalize: true } });
  expect(toMonthly.body.closed_period.start).toBe(toDaily.body.current_period.start);
  expect(toMonthly.body.current_period).toEqual({ start: toMonthly.body.closed_period.end, end: tenant.period.end });
});

test('pending_events counts acknowledged events until they are counted; a tenant too far behind is pushed back with 503', async () => {
  // An API whose tenants' workflows run on a task queue no worker polls yet.
  const taskQueue = unique('later');
  const app = createApp({ db: api.db, temporal: api.client, taskQueue, namespace: 'default', adminKey: api.adminKey, logger: quietLogger, maxPendingEvents: 5 });
  const server = await listen(app, 0, '127.0.0.1');
  try {
    const base = `http://127.0.0.1:${server.port}`;
    const call = (method: string, path: string, key: string, body?: unknown) =>
      fetch(`${base}${path}`, { method, headers: { 'x-api-key': key, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined }).then(async (r) => ({ status: r.status, body: (await r.json()) as any }));
    const planBody = plan(unique('pend'));
    await call('POST', '/v1/plans', api.adminKey, planBody);
    const id = unique('pend');
    const created = await call('POST', '/v1/tenants', api.adminKey, { id, name: id, plan_id: planBody.id });
    expect((await call('POST', '/v1/events', created.body.api_key, { events: Array.from({ length: 7 }, (_, i) => ({ id: `p${i}`, metric: 'tokens', quantity: 2 })) })).status).toBe(202);
    const waiting = await call('GET', `/v1/tenants/${id}/usage`, created.body.api_key);
    expect(waiting.body.pending_events).toBe(7);
    expect(waiting.body.metrics.tokens.used).toBe(0);
    // Seven waiting, over the limit of five: the next batch is refused until they are counted.
    await new Promise((r) => setTimeout(r, 1_100)); // the backlog is read at most once a second
    const pushedBack = await fetch(`${base}/v1/events`, {
      method: 'POST',
      headers: { 'x-api-key': created.body.api_key, 'content-type': 'application/json' },
      body: JSON.stringify({ events: [{ id: 'p-more', metric: 'tokens', quantity: 1 }] }),
    });
    expect(pushedBack.status).toBe(503);
    expect(pushedBack.headers.get('retry-after')).toBe('1');
    expect(((await pushedBack.json()) as any).code).toBe('unavailable');

    const temporal = await connectToTestTemporal();
    const worker = await Worker.create({
      connection: temporal.nativeConnection,
      taskQueue,
      workflowBundle: await workflowBundle(),
      activities: createActivities({ db: api.db, logger: quietLogger, notifier: createRecordingNotifier(quietLogger), temporal: api.client }),
    });
    const running = worker.run();
    try {
      const counted = await eventually(async () => {
        const res = await call('GET', `/v1/tenants/${id}/usage`, created.body.api_key);
        return res.body.pending_events === 0 ? res.body : undefined;
      }, 20_000, 'the events counted');
      expect(counted.metrics.tokens.used).toBe(14);
      await new Promise((r) => setTimeout(r, 1_100));
      expect((await call('POST', '/v1/events', created.body.api_key, { events: [{ id: 'p-more', metric: 'tokens', quantity: 1 }] })).status).toBe(202);
    } finally {
      worker.shutdown();
      await running;
      await temporal.nativeConnection.close();
      await temporal.connection.close();
    }
  } finally {
    await server.close();
  }
});

test('a late event within grace shows in the closed period of GET …/periods within a second', async () => {
  const tenant = await tenantOn(plan(unique('late'), { grace_period_seconds: 60 }));
  await api.call('POST', '/v1/events', { key: tenant.key, body: { events: [{ id: 'a', metric: 'tokens', quantity: 10 }] } });
  const close = await api.call('POST', `/v1/tenants/${tenant.id}/close-period`, { body: {} });
  const late = new Date(Date.parse(close.body.closed_period.end) - 1).toISOString();
  expect((await api.call('POST', '/v1/events', { key: tenant.key, body: { events: [{ id: 'late', metric: 'tokens', quantity: 5, timestamp: late }] } })).status).toBe(202);
  const sent = Date.now();
  const closed = await eventually(async () => {
    const res = await api.call('GET', `/v1/tenants/${tenant.id}/periods`, { key: tenant.key });
    const period = res.body.data.find((p: any) => p.start === close.body.closed_period.start);
    return period?.counters.tokens === 15 ? period : undefined;
  }, 5_000, 'the late event in the closed period');
  expect(Date.now() - sent).toBeLessThan(1_000);
  expect(closed.status).toBe('closed');
});

test('counters leave the API exactly: a decimal string beside every rounded JSON number (issue 17, item 14)', async () => {
  const tenant = await tenantOn(plan(unique('exact')));
  const events = [1e15, 1e15, 12469135712, 0.270368].map((quantity, i) => ({ id: `x${i}`, metric: 'tokens', quantity }));
  expect((await api.call('POST', '/v1/events', { key: tenant.key, body: { events } })).status).toBe(202);
  const exact = '2000012469135712.270368';
  const usage = await settled(tenant);
  expect(usage.metrics.tokens.used_decimal).toBe(exact);
  expect(String(usage.metrics.tokens.used)).not.toBe(exact); // the JSON number alone cannot hold it
  const periods = await api.call('GET', `/v1/tenants/${tenant.id}/periods`, { key: tenant.key });
  expect(periods.body.data[0].counters_decimal.tokens).toBe(exact);
  const close = await api.call('POST', `/v1/tenants/${tenant.id}/close-period`, { body: { finalize: true } });
  const invoice = await eventually(async () => {
    const res = await api.call('GET', `/v1/invoices/${close.body.invoice_id}`);
    return res.body?.status === 'finalized' ? res.body : undefined;
  }, 20_000, 'the invoice finalized');
  expect(invoice.lines.find((l: any) => l.metric === 'tokens').quantity_decimal).toBe(exact);
  expect(invoice.lines.find((l: any) => l.metric === 'tokens').amount).toBe('2000012469135.71');
});
