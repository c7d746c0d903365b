import type { retention } from '../../src/workflows/retention';
import { RETENTION_SCHEDULE_ID, ensureRetentionSchedule } from '../../src/workers/retention-schedule';
import { startApiHarness, eventually, everyRow, type ApiHarness } from '../support/api-harness';
import { unique } from '../support/stack';

/**
 * Retention through the real stack: a plan with a short retention (0 days: purged at the next
 * run), the `retention` workflow on the real worker, and the daily schedule created idempotently.
 * Only invoiced periods past retention lose their raw events; invoices, counters and summaries stay;
 * a rerun that would need the purged events answers 409 `events_purged`.
 */
let api: ApiHarness;
beforeAll(async () => {
  api = await startApiHarness();
});
afterAll(async () => {
  await api?.client.schedule.getHandle(RETENTION_SCHEDULE_ID).delete().catch(() => undefined);
  await api?.stop();
});

async function createPlan(retentionDays?: number): Promise<string> {
  const id = unique('retention');
  const res = await api.call('POST', '/v1/plans', {
    body: {
      id,
      name: 'Retention',
      currency: 'USD',
      interval: 'month',
      base_fee: '0.00',
      grace_period_seconds: 0,
      ...(retentionDays === undefined ? {} : { retention_days: retentionDays }),
      meters: [{ metric: 'api_calls', aggregation: 'sum', pricing: { model: 'per_unit', unit_price: '0.10' } }],
    },
  });
  expect(res.status).toBe(201);
  return id;
}

async function tenantWithInvoicedPeriod(planId: string, events: number) {
  const id = unique('retention');
  const created = await api.call('POST', '/v1/tenants', { body: { id, name: id, plan_id: planId } });
  expect(created.status).toBe(201);
  const key = created.body.api_key as string;
  const batch = Array.from({ length: events }, (_, i) => ({ id: `old-${i}`, metric: 'api_calls', quantity: 1, properties: { region: 'eu' } }));
  expect((await api.call('POST', '/v1/events', { key, body: { events: batch } })).status).toBe(202);
  expect((await api.call('GET', `/v1/tenants/${id}/usage?consistent=true`, { key })).status).toBe(200);
  const close = await api.call('POST', `/v1/tenants/${id}/close-period`, { body: { finalize: true } });
  expect(close.status).toBe(200);
  const invoice = await eventually(async () => {
    const res = await api.call('GET', `/v1/invoices/${close.body.invoice_id}`);
    return res.body?.status === 'finalized' ? res.body : undefined;
  }, 30_000, 'finalized invoice');
  // The next period (open) has events too: retention never touches it.
  expect((await api.call('POST', '/v1/events', { key, body: { events: [{ id: 'new-1', metric: 'api_calls', quantity: 2 }] } })).status).toBe(202);
  return { id, key, invoice, closed: close.body.closed_period as { start: string; end: string } };
}

/**
 * A retention run by hand over this file's tenants only: other files, running beside this one,
 * have invoiced periods of their own that a run over every tenant would purge under them.
 */
function runRetention(defaultRetentionDays: number, tenantIds: string[]) {
  return api.client.workflow.execute<typeof retention>('retention', {
    taskQueue: api.taskQueue,
    workflowId: unique('retention'),
    args: [{ default_retention_days: defaultRetentionDays, batch_size: 3, tenant_ids: tenantIds }],
  });
}

const storedEvents = (tenantId: string, periodStart: string) =>
  api.db('usage_events').where({ tenant_id: tenantId, period_start: periodStart }).count({ n: '*' }).first().then((r) => Number(r!.n));

test('purges only invoiced periods past retention, in batches; keeps invoices, counters and summaries; refuses reruns', async () => {
  const short = await tenantWithInvoicedPeriod(await createPlan(0), 7);
  const kept = await tenantWithInvoicedPeriod(await createPlan(), 4); // the default, 90 days
  const summaryBefore = (await everyRow(api, `/v1/summaries?month=${short.closed.start.slice(0, 7)}`)).find((r: any) => r.tenant_id === short.id);
  expect(summaryBefore).toMatchObject({ tenant_id: short.id });
  const countersBefore = await api.db('period_counters').where({ tenant_id: short.id, period_start: short.closed.start }).select('metric', 'total');

  const result = await runRetention(90, [short.id, kept.id]);
  expect(result.periods).toBeGreaterThanOrEqual(1);
  expect(result.events).toBeGreaterThanOrEqual(7);

  // The short plan's invoiced period: events gone, marked; the open period and the other tenant untouched.
  expect(await storedEvents(short.id, short.closed.start)).toBe(0);
  const period = await api.db('periods').where({ tenant_id: short.id, start: short.closed.start }).first();
  expect(period.events_purged_at).not.toBeNull();
  expect(period.events_purge_finished_at).not.toBeNull();
  expect(await api.db('usage_events').where({ tenant_id: short.id }).pluck('event_id')).toEqual(['new-1']);
  expect(await storedEvents(kept.id, kept.closed.start)).toBe(4);

  // Invoices, lines, counters and the month's summary stay as they were.
  const invoice = await api.call('GET', `/v1/invoices/${short.invoice.id}`);
  expect(invoice.body).toEqual(short.invoice);
  expect(await api.db('period_counters').where({ tenant_id: short.id, period_start: short.closed.start }).select('metric', 'total')).toEqual(countersBefore);
  const summaryAfter = (await everyRow(api, `/v1/summaries?month=${short.closed.start.slice(0, 7)}`)).find((r: any) => r.tenant_id === short.id);
  expect(summaryAfter).toEqual(summaryBefore);

  // The events list says where retention stopped.
  const events = await api.call('GET', `/v1/tenants/${short.id}/events`, { key: short.key });
  expect(events.body.retained_since).toBe(short.closed.end);
  expect(events.body.data.map((e: any) => e.id)).toEqual(['new-1']);
  expect((await api.call('GET', `/v1/tenants/${kept.id}/events`, { key: kept.key })).body.retained_since).toBeNull();

  // A rerun, or its preview, would need the purged events: refused, nothing started.
  for (const body of [{ reason: 'recount' }, { reason: 'recount', dry_run: true }]) {
    const rerun = await api.call('POST', `/v1/invoices/${short.invoice.id}/rerun`, { body });
    expect({ status: rerun.status, code: rerun.body.code }).toEqual({ status: 409, code: 'events_purged' });
  }
  expect(await api.db('invoices').where({ tenant_id: short.id }).pluck('status')).toEqual(['finalized']);
  // The kept tenant's period can still be rerun (previewed here).
  expect((await api.call('POST', `/v1/invoices/${kept.invoice.id}/rerun`, { body: { reason: 'check', dry_run: true } })).status).toBe(200);

  // Ingest into the open period goes on, and a second run finds nothing of these tenants to do.
  expect((await api.call('POST', '/v1/events', { key: short.key, body: { events: [{ id: 'new-2', metric: 'api_calls' }] } })).status).toBe(202);
  const again = await runRetention(90, [short.id, kept.id]);
  expect(await storedEvents(kept.id, kept.closed.start)).toBe(4);
  expect(again.as_of > result.as_of).toBe(true);
});

test('the daily schedule is created once and updated on every later start', async () => {
  await api.client.schedule.getHandle(RETENTION_SCHEDULE_ID).delete().catch(() => undefined);
  expect(await ensureRetentionSchedule(api.client, { taskQueue: api.taskQueue, defaultRetentionDays: 90 })).toBe('created');
  expect(await ensureRetentionSchedule(api.client, { taskQueue: api.taskQueue, defaultRetentionDays: 30 })).toBe('updated');
  const described = await api.client.schedule.getHandle(RETENTION_SCHEDULE_ID).describe();
  expect(described.action).toMatchObject({ type: 'startWorkflow', workflowType: 'retention', taskQueue: api.taskQueue, args: [{ default_retention_days: 30 }] });
  expect(described.spec.calendars).toEqual([expect.objectContaining({ hour: [{ start: 3, end: 3, step: 1 }], minute: [{ start: 0, end: 0, step: 1 }] })]);
  expect(described.policies.overlap).toBe('SKIP');
  expect(described.action).toMatchObject({ staticSummary: 'Purge raw events of invoiced periods past retention (default 30 days)', priority: { priorityKey: 1 } });
  // Paused by ops: a later start updates it and leaves it paused.
  await api.client.schedule.getHandle(RETENTION_SCHEDULE_ID).pause('paused by ops');
  expect(await ensureRetentionSchedule(api.client, { taskQueue: api.taskQueue, defaultRetentionDays: 90 })).toBe('updated');
  expect((await api.client.schedule.getHandle(RETENTION_SCHEDULE_ID).describe()).state.paused).toBe(true);
});
