import { WorkflowIdConflictPolicy } from '@temporalio/client';
import { startApiHarness, eventually, type ApiHarness } from '../support/api-harness';
import { ledgerPlan, settledUsage, tenantOn } from '../support/api-tenants';
import { unique } from '../support/stack';
import { aggregateStoredUsage } from '../../src/db/usage';
import { recordUsageSignal, tenantWorkflowId } from '../../src/workflows/messages';
import { insertPlacedEvents } from '../../src/db/ingest';
import { CLAIM_LIMIT } from '../../src/activities/ledger';
import { RUN_ANSWER_DEADLINE_MS } from '../../src/api/billing-gateway';

/**
 * One tenant driven as hard as the API accepts (issue 11's liveness tests, short runs; the bench
 * runs them for minutes). These measure promptness under load, so `npm test` runs this file
 * alone, after the parallel files (jest.config.js, SERIAL).
 */
let api: ApiHarness;
beforeAll(async () => {
  api = await startApiHarness();
});
afterAll(async () => {
  await api?.stop();
});

test('under sustained ingest, steady authorize and read-your-writes requests answer promptly and the run still continues as new', async () => {
  const tenant = await tenantOn(api, ledgerPlan(unique('steady'), { meters: [{ metric: 'calls', aggregation: 'sum', limit: 1_000_000, hard_limit: true, pricing: { model: 'per_unit', unit_price: '0.01' } }, { metric: 'tokens', aggregation: 'sum', pricing: { model: 'per_unit', unit_price: '0.001' } }] }));
  // The same tenant, its run started again with low bounds, so continue-as-new comes within
  // seconds. Ingest below every threshold is counted in bulk and rings nothing; the authorizations
  // and settled reads claim, so the claims bound is the one they reach.
  const handle = await api.client.workflow.start('tenantBilling', {
    taskQueue: api.taskQueue,
    workflowId: tenantWorkflowId(tenant.id),
    args: [{ tenant_id: tenant.id, search_attributes: true, limits: { maxSignalsPerRun: 15, maxClaimsPerRun: 20 } }],
    workflowIdConflictPolicy: WorkflowIdConflictPolicy.TERMINATE_EXISTING,
  });
  const until = Date.now() + 6_000;
  let sent = 0;
  const ingest = async () => {
    while (Date.now() < until) {
      const res = await api.call('POST', '/v1/events', { key: tenant.key, body: { events: [{ id: `s${(sent += 1)}`, metric: 'tokens', quantity: 1 }] } });
      expect(res.status).toBe(202);
    }
  };
  const slowest = { authorize: 0, consistent: 0 };
  let authorized = 0;
  const authorize = async () => {
    while (Date.now() < until) {
      const started = Date.now();
      const res = await api.call('POST', `/v1/tenants/${tenant.id}/authorize`, { key: tenant.key, body: { id: `a${authorized}`, metric: 'calls', quantity: 1 } });
      expect(res.status).toBe(200);
      expect(res.body.allowed).toBe(true);
      authorized += 1;
      slowest.authorize = Math.max(slowest.authorize, Date.now() - started);
    }
  };
  let settledReads = 0;
  let unsettledReads = 0;
  const consistent = async () => {
    while (Date.now() < until) {
      const started = Date.now();
      const res = await api.call('GET', `/v1/tenants/${tenant.id}/usage?consistent=true`, { key: tenant.key });
      if (res.status === 503) {
        // The contract for a read that cannot settle within the deadline: 503 `unavailable`, retry.
        expect(res.body.code).toBe('unavailable');
        expect(res.headers.get('retry-after')).toBe('1');
        unsettledReads += 1;
      } else {
        expect(res.status).toBe(200);
        settledReads += 1;
      }
      slowest.consistent = Math.max(slowest.consistent, Date.now() - started);
    }
  };
  await Promise.all([ingest(), ingest(), authorize(), consistent()]);
  // Most answers take well under a second. A request that meets one of these continue-as-new
  // boundaries (one every 20 claims here) can wait seconds: up to 5.3 s measured, and once a
  // consistent read did not settle within the API's 10 s deadline and answered 503 as the contract
  // says (an open liveness defect, issue 11). Every authorize answered, and no read waited past
  // the deadline.
  expect(slowest.authorize).toBeLessThan(RUN_ANSWER_DEADLINE_MS);
  expect(slowest.consistent).toBeLessThan(RUN_ANSWER_DEADLINE_MS + 2_000);
  expect(settledReads).toBeGreaterThan(0);
  expect(unsettledReads).toBeLessThanOrEqual(1);
  const usage = await settledUsage(api, tenant);
  expect(usage.metrics.tokens.used).toBe(sent);
  expect(usage.metrics.calls.used).toBe(authorized);
  expect((await api.client.workflow.getHandle(handle.workflowId, handle.firstExecutionRunId).describe()).status.name).toBe('CONTINUED_AS_NEW');
  const stored = await aggregateStoredUsage(api.db, tenant.id, tenant.period.start, [{ metric: 'tokens', aggregation: 'sum' }, { metric: 'calls', aggregation: 'sum' }]);
  expect(stored).toEqual({ tokens: String(sent), calls: String(authorized) });
});

test('one hot tenant from 32 concurrent senders: every acknowledged event is counted, the workflow stays alive with a bounded history', async () => {
  const tenant = await tenantOn(api, ledgerPlan(unique('hot')));
  const until = Date.now() + 8_000;
  let acknowledged = 0;
  let n = 0;
  const sender = async () => {
    while (Date.now() < until) {
      const events = Array.from({ length: 100 }, () => ({ id: `h${(n += 1)}`, metric: 'tokens', quantity: 1 }));
      const res = await api.call('POST', '/v1/events', { key: tenant.key, body: { events } });
      expect(res.status).toBe(202);
      acknowledged += events.length;
    }
  };
  await Promise.all(Array.from({ length: 32 }, sender));
  // Counting may trail ingest by a backlog: a read-your-writes read answers 503 until it can settle within 10 s.
  const usage = await eventually(async () => {
    const res = await api.call('GET', `/v1/tenants/${tenant.id}/usage?consistent=true`, { key: tenant.key });
    if (res.status === 503) return undefined;
    expect(res.status).toBe(200);
    return res.body;
  }, 120_000, 'the backlog counted');
  expect(usage.metrics.tokens.used).toBe(acknowledged);
  expect(usage.pending_events).toBe(0);
  const description = await api.client.workflow.getHandle(tenantWorkflowId(tenant.id)).describe();
  expect(description.status.name).toBe('RUNNING');
  expect(description.historyLength).toBeLessThan(10_000);
});


test('a backlog of many claims counted while doorbells keep arriving: no workflow task holds claim after claim', async () => {
  const tenant = await tenantOn(api, ledgerPlan(unique('backlog')));
  // Twenty claims' worth stored at once, as a burst the workflow has not been rung for yet.
  const backlog = 20 * CLAIM_LIMIT;
  const events = Array.from({ length: backlog }, (_, i) => ({ id: `b${i}`, metric: 'tokens', quantity: '1', timestamp: tenant.period.start, period_start: tenant.period.start }));
  await insertPlacedEvents(api.db, tenant.id, events, 'backlog', new Date());
  // Then a ring every 10 ms until it is counted (two API processes' doorbells): a workflow task
  // claiming the whole backlog in one go holds back more than the ~100 events Temporal buffers
  // beside it, and the server fails it, again on every retry while the rings go on.
  const handle = api.client.workflow.getHandle(tenantWorkflowId(tenant.id));
  let counted = false;
  const ringing = (async () => {
    while (!counted) {
      await handle.signal(recordUsageSignal, { events: 1, highest_seq: null });
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  })();
  try {
    const usage = await eventually(async () => {
      const res = await api.call('GET', `/v1/tenants/${tenant.id}/usage`, { key: tenant.key });
      return res.body.pending_events === 0 ? res.body : undefined;
    }, 60_000, 'the backlog counted');
    expect(usage.metrics.tokens.used).toBe(backlog);
  } finally {
    counted = true;
    await ringing;
  }
  const history = await handle.fetchHistory();
  expect(history.events?.filter((e) => e.workflowTaskFailedEventAttributes).length).toBe(0);
});
