/**
 * Records workflow histories for the replay check (test/integration/replay.test.ts), which replays
 * every `test/histories/*.json` against the current workflow code. A change that would break
 * workflows already running (an activity, timer or other command added, removed or reordered
 * without `patched()`) then fails in CI instead of stalling tenants in production.
 *
 *   npm run histories:record                            # same as --self-contained
 *   npx tsx scripts/record-histories.ts [--out test/histories]
 *
 * Self-contained (the default when no workflow id is given): starts its own embedded PostgreSQL
 * and Temporal dev server (temporary DATA_DIR, free ports), migrates, runs a billing worker and the
 * HTTP API, and drives two tenants through a representative story, over HTTP like a client:
 *   plan + tenant → usage (one batch resends an event id) → read-your-writes usage (update) and
 *   the 80/90 % alerts → authorize allowed, then refused at the hard limit → an alert rule added
 *   mid-period → close without finalize (continue-as-new; invoice 1 waits out the hour of grace)
 *   → a late event for period 1 that crosses its 100 % (a late-event alert in run 2) → two closes
 *   with keys of their own, the second with finalize and sent as the first's rollover is under way
 *   (one rollover: invoice 2, finalized at once for the second) → a rerun of invoice 2
 *   → cancellation (run 3 waits out the grace); and a second tenant whose run, started again with
 *   a low signal bound, continues as new within its period. It waits for what finishes, then writes:
 *   tenant-billing-period-1.json   the first tenant's first run (ended by the first close)
 *   tenant-billing-period-2.json   its second run (late-event alert, closed, its invoice finalized at once)
 *   tenant-billing-cancelled.json  its third run, cancelled and waiting out the grace (a prefix)
 *   tenant-billing-continued.json  the second tenant's run that continued as new within its period
 *   tenant-billing-continued-next.json  the run it continued into, handed the patches (a prefix)
 *   tenant-billing-entitlements-1.json  a prepaid tenant's first run (patch entitlements-v1): a limit
 *                                  override, grants, a pack drawn from, balance alerts, authorize refused
 *                                  for balance and at the effective limit, closed with finalize
 *   period-invoice-1.json          invoice 1, still waiting on its grace timer (a prefix)
 *   period-invoice-2.json          invoice 2, finalized
 *   invoice-rerun-1.json           the rerun of invoice 2
 *   alert-delivery-1.json          the delivery of the first tenant's 80 % alert (runs that deliver
 *                                  inline first leave a delivery workflow only to alerts with an
 *                                  email channel: then alert-delivery-N.json, each of them)
 *   retention-1.json               a retention pass (0 days, batches of 2) run after the story
 * The tenant histories in test/histories/ were recorded this way as the code changed: each set's
 * name says after which patch (`tenant-billing-{local-claims,bulk-counting,inline-alerts,
 * alerts-recorded,grace-settled}-*.json`, then `tenant-billing-retired-patches-*.json`, recorded
 * once `no-timer-for-past-deadlines-v1`, `inline-alert-delivery-v1`,
 * `alerts-recorded-by-first-attempt-v1` and `grace-settled-by-later-claim-v1` were retired). A
 * history on the old path of a retired patch left the directory with it, so of the sets before
 * the retired patches only the runs that reach none of them remain (the `-continued` ones, and
 * `tenant-billing-continued.json`, recorded before any patch).
 * `tenant-billing-rules-stored-period-1.json` is the story's first run once a rule change reached
 * the run by the `alertRulesStored` update (a handler, not a patch: no earlier run meets it).
 * `tenant-billing-before-close-keys-period-2.json` is the story's second run, whose two keyed
 * closes share one rollover, recorded before patch `close-keys-v1` (its old path), and
 * `tenant-billing-close-keys-period-2.json` the same run recorded after it.
 * `tenant-billing-cancel-after-rollover-cancelled.json` is the story's third run, cancelled, recorded
 * after patch `cancel-after-rollover-v1`. `tenant-billing-finalize-joins-period-2.json` is the
 * second run once its second close asks to finalize during the first's rollover (patch
 * `finalize-joins-rollover-v1`: the run signals invoice 2's workflow), with the third run after it
 * (`tenant-billing-finalize-joins-cancelled.json`) and that invoice, finalized by the signal
 * (`period-invoice-finalized-early.json`). Beside them,
 * `tenant-billing-handed-patches-{period-1,period-2,cancelled,continued-next,entitlements-1}.json`
 * are the story's runs once the API's start and continue-as-new hand each run this code's patches
 * (src/workflows/run-patches.ts): they take every patch without a marker. (The second tenant's
 * first run, which the script starts itself with no patches handed, still records its markers.)
 * `tenant-billing-signals-during-claim-before-patch.json` and `tenant-billing-signals-during-claim.json`
 * are the run that stalled-claim.test.ts drove in its first form (a ring and a rule change reach it
 * while its claim, a local activity, is held past the task's heartbeat), printed and written with `--printed`:
 * before patch `signals-during-local-activities-v1` (the ring makes the run claim once more) and
 * after it (the ring dropped, the patch's deprecated marker recorded).
 * `tenant-billing-alert-after-claim-task.json` is a run printed by tenant-periods.test.ts whose
 * claim's result reached the workflow one task after the claim's marker was recorded, so that
 * its alert's patch markers lie a task later than the replay reaches them. It was recorded while
 * those patches were read with `patched()`; in the file their markers are marked deprecated, as
 * `deprecatePatch()` records them, since a plain marker in that place cannot be replayed.
 * Everything it started is stopped and its data directory removed. It takes about 10 seconds
 * (mostly starting the servers and bundling the workflows). To add histories next to the committed
 * ones, record with --out into a scratch directory and copy them in under new names (for example
 * `tenant-billing-packs-1.json`): the committed ones stay as recorded.
 *
 * From a running stack (`npm start`, or any deployment you can reach):
 *   TEMPORAL_ADDRESS=127.0.0.1:7233 DATABASE_URL=postgres://tally:tally@127.0.0.1:5433/tally \
 *     npx tsx scripts/record-histories.ts --workflow-id billing-acme [--workflow-id ...] [--include-running]
 * records every closed run of each id as `<workflow id>-<run id>.json` (the running run too with
 * --include-running: a prefix of a history replays just as well). With DATABASE_URL, a
 * `billing-<tenant>` id also brings the `invoice-<tenant>-...` workflows of the tenant's invoices.
 * TEMPORAL_ADDRESS defaults to 127.0.0.1:$TEMPORAL_PORT, the namespace to $TEMPORAL_NAMESPACE.
 *
 * From a history a test printed because it could not replay it (test/support/periods-harness.ts,
 * `unreplayableRuns`; the base64 text saved to a file):
 *   npx tsx scripts/record-histories.ts --printed FILE --name tenant-billing-<what it shows> [--out DIR]
 *
 * The committed histories are the compatibility baseline: never re-record them to make a failing
 * replay test pass (that hides exactly the break the test exists to catch). Re-record, or add
 * histories next to the old ones, when the workflows gain paths worth covering, after an
 * incompatible change has been made safe with `patched()`, or once no workflow runs old code.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { WorkflowIdConflictPolicy, type Client } from '@temporalio/client';
import { historyToJSON, type History } from '@temporalio/common/lib/proto-utils';
import { temporal as temporalProto } from '@temporalio/proto';
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import { createRecordingNotifier } from '../src/notifications/notifier';
import { createApp } from '../src/api/app';
import { listen } from '../src/api/server';
import { loadConfigOrExit } from '../src/config';
import { lockTenantLedger } from '../src/db/ingest';
import { createDb, migrateLatest, type Db } from '../src/db/knex';
import { logger as appLogger } from '../src/logger';
import { startEmbeddedPostgres } from '../src/platform/postgres';
import { startTemporalDevServer } from '../src/platform/temporal-server';
import { connectTemporal, temporalConnectionSettings } from '../src/temporal';
import { createBillingWorker } from '../src/workers/worker';
import { startBulkCounter } from '../src/workers/bulk-counter';
import {
  alertDeliveryWorkflowId,
  alertId,
  invoiceWorkflowId,
  recordUsageSignal,
  tenantWorkflowId,
  type AuthorizeResult,
  type ClosePeriodResult,
  type UsageView,
} from '../src/workflows/messages';
import { freePorts } from '../src/platform/free-port';

/** The retention run the story ends with. */
const RETENTION_WORKFLOW_ID = 'retention-story';

/** Where histories go unless --out says otherwise: where the replay test reads them. */
const DEFAULT_HISTORY_DIR = path.resolve(__dirname, '../test/histories');

/** One history written to disk, for the summary the script prints. */
interface RecordedFile {
  file: string;
  workflowId: string;
  runId: string;
  workflowType: string;
  status: string;
  events: number;
}

const NAMESPACE_SELF_CONTAINED = 'default';
const TASK_QUEUE_SELF_CONTAINED = 'billing';
const STORY_TENANT = 'replay-acme';
const STORY_SECOND_TENANT = 'replay-beta';
const STORY_PLAN = 'replay-tokens';
const STORY_PREPAID_TENANT = 'replay-prepaid';
const STORY_PREPAID_PLAN = 'replay-prepaid-minutes';
/** How long period 2's first close waits on the ledger lock before the second is sent, and the second before the lock is released. */
const ROLLOVER_HELD_MS = 500;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      out: { type: 'string' },
      'workflow-id': { type: 'string', multiple: true },
      'self-contained': { type: 'boolean', default: false },
      'include-running': { type: 'boolean', default: false },
      printed: { type: 'string' },
      name: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      'usage: tsx scripts/record-histories.ts [--out DIR] [--self-contained | --workflow-id ID ... [--include-running] | --printed FILE --name NAME]\n',
    );
    return;
  }
  const outDir = values.out ? path.resolve(values.out) : DEFAULT_HISTORY_DIR;
  const ids = values['workflow-id'] ?? [];
  if (values['self-contained'] && ids.length > 0) throw new Error('--self-contained records its own story: drop --workflow-id');
  if (values.printed !== undefined) {
    if (!values.name) throw new Error('--printed needs --name: the file name to write under --out (without .json)');
    const file = `${values.name}.json`;
    writePrintedHistory(values.printed, path.join(outDir, file));
    process.stdout.write(`wrote ${path.relative(process.cwd(), path.join(outDir, file))}\n`);
    return;
  }

  Runtime.install({ logger: new DefaultLogger('WARN') });
  const started = Date.now();
  const written =
    ids.length > 0 ? await recordFromRunningStack(outDir, ids, values['include-running']) : await recordSelfContained(outDir);

  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  process.stdout.write(`\nwrote ${written.length} histories to ${path.relative(process.cwd(), outDir) || '.'} in ${seconds}s:\n`);
  for (const w of written) {
    process.stdout.write(`  ${w.file}  ${w.workflowType} ${w.workflowId} run ${w.runId} (${w.status}, ${w.events} events)\n`);
  }
  if (written.length === 0) process.exitCode = 1;
}

// ---- (a) from a running stack ------------------------------------------------------------------

/** Records the runs of the given workflow ids (plus a tenant's invoice workflows when it can find them). */
async function recordFromRunningStack(outDir: string, ids: string[], includeRunning: boolean): Promise<RecordedFile[]> {
  const config = loadConfigOrExit();
  const address = config.TEMPORAL_ADDRESS ?? `127.0.0.1:${config.TEMPORAL_PORT}`;
  const temporal = await connectTemporal(temporalConnectionSettings(config, address), config.TEMPORAL_NAMESPACE);
  const db = config.DATABASE_URL ? createDb(config.DATABASE_URL, { max: 2 }) : undefined;
  try {
    const workflowIds = new Set(ids);
    for (const id of ids) {
      if (!id.startsWith('billing-')) continue;
      if (!db) {
        process.stdout.write(`DATABASE_URL is unset: not looking up the invoice workflows of ${id}\n`);
        continue;
      }
      const tenantId = id.slice('billing-'.length);
      const invoices = await db('invoices')
        .where({ tenant_id: tenantId })
        .orderBy([{ column: 'period_start' }, { column: 'version' }])
        .select<Array<{ period_start: Date; version: number }>>('period_start', 'version');
      for (const inv of invoices) workflowIds.add(invoiceWorkflowId(tenantId, new Date(inv.period_start).toISOString(), inv.version));
    }

    const written: RecordedFile[] = [];
    for (const workflowId of workflowIds) {
      const runs: Array<{ runId: string; status: string; startTime: Date }> = [];
      for await (const wf of temporal.client.workflow.list({ query: `WorkflowId = '${workflowId.replace(/'/g, "\\'")}'` })) {
        runs.push({ runId: wf.runId, status: wf.status.name, startTime: wf.startTime });
      }
      runs.sort((a, b) => a.startTime.getTime() - b.startTime.getTime());
      if (runs.length === 0) process.stdout.write(`no runs of ${workflowId} found (visibility can lag a few seconds)\n`);
      for (const run of runs) {
        if (run.status === 'RUNNING' && !includeRunning) {
          process.stdout.write(`skipping the running run ${run.runId} of ${workflowId} (--include-running records it)\n`);
          continue;
        }
        const file = `${workflowId.replace(/[^A-Za-z0-9_.-]/g, '_')}-${run.runId}.json`;
        written.push(await writeHistory(temporal.client, outDir, file, workflowId, run.runId));
      }
    }
    return written;
  } finally {
    await db?.destroy();
    await temporal.connection.close();
  }
}

// ---- (b) self-contained ------------------------------------------------------------------------

/** Starts a private stack, drives the story over the HTTP API and records what it produced. */
async function recordSelfContained(outDir: string): Promise<RecordedFile[]> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-histories-'));
  const stops: Array<() => Promise<unknown>> = [];
  const quiet = appLogger.child({ recorder: true });
  quiet.level = process.env.LOG_LEVEL ?? 'error';
  try {
    step('starting PostgreSQL and the Temporal dev server');
    const [pgPort, temporalPort, uiPort] = await freePorts(3);
    // Both at once (the dev server takes a few seconds); whichever started is stopped even if the other failed.
    const [database, server] = await Promise.allSettled([
      startEmbeddedPostgres({ dataDir, port: pgPort }),
      startTemporalDevServer({ dataDir, port: temporalPort, uiPort, namespace: NAMESPACE_SELF_CONTAINED }),
    ]);
    if (database.status === 'fulfilled') stops.push(database.value.stop);
    if (server.status === 'fulfilled') stops.push(server.value.stop);
    if (database.status === 'rejected') throw database.reason;
    if (server.status === 'rejected') throw server.reason;
    const db = createDb(database.value.url, { max: 5 });
    stops.push(() => db.destroy());
    await migrateLatest(db);

    const temporal = await connectTemporal({ address: server.value.address }, NAMESPACE_SELF_CONTAINED);
    stops.push(() => temporal.connection.close());
    const workerConnection = await NativeConnection.connect({ address: server.value.address });
    stops.push(() => workerConnection.close());
    step('bundling the workflows and starting the worker');
    const worker = await createBillingWorker({
      connection: workerConnection,
      namespace: NAMESPACE_SELF_CONTAINED,
      taskQueue: TASK_QUEUE_SELF_CONTAINED,
      db,
      logger: quiet,
      notifier: createRecordingNotifier(quiet),
      temporal: temporal.client,
    });
    const workerRun = worker.run();
    stops.push(async () => {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await workerRun;
    });
    // The worker's counter: it counts what decides nothing in bulk and rings the other tenants.
    stops.push(startBulkCounter({ db, temporal: temporal.client, taskQueue: TASK_QUEUE_SELF_CONTAINED, logger: quiet }));
    const adminKey = 'ak_replay_recorder_0123456789';
    const app = createApp({
      db,
      temporal: temporal.client,
      taskQueue: TASK_QUEUE_SELF_CONTAINED,
      namespace: NAMESPACE_SELF_CONTAINED,
      adminKey,
      logger: quiet,
    });
    const api = await listen(app, 0, '127.0.0.1');
    stops.push(() => api.close());

    const story = await driveStory(`http://127.0.0.1:${api.port}`, adminKey, temporal.client, db);
    const entitlementsRun = await driveEntitlementsStory(`http://127.0.0.1:${api.port}`, adminKey, temporal.client);
    // Last, since it deletes raw events: a retention pass with 0 days of retention and small
    // batches purges the invoiced periods of the story in several steps.
    step('running a retention pass');
    await temporal.client.workflow.execute('retention', {
      taskQueue: TASK_QUEUE_SELF_CONTAINED,
      workflowId: RETENTION_WORKFLOW_ID,
      args: [{ default_retention_days: 0, batch_size: 2 }],
    });

    step('writing histories');
    fs.mkdirSync(outDir, { recursive: true });
    const tenantWf = tenantWorkflowId(STORY_TENANT);
    return [
      await writeHistory(temporal.client, outDir, 'tenant-billing-period-1.json', tenantWf, story.tenantRuns[0]),
      await writeHistory(temporal.client, outDir, 'tenant-billing-period-2.json', tenantWf, story.tenantRuns[1]),
      await writeHistory(temporal.client, outDir, 'tenant-billing-cancelled.json', tenantWf, story.tenantRuns[2]),
      await writeHistory(temporal.client, outDir, 'tenant-billing-continued.json', tenantWorkflowId(STORY_SECOND_TENANT), story.continuedRun),
      await writeHistory(temporal.client, outDir, 'tenant-billing-continued-next.json', tenantWorkflowId(STORY_SECOND_TENANT), story.continuedNextRun),
      await writeHistory(temporal.client, outDir, 'tenant-billing-entitlements-1.json', tenantWorkflowId(STORY_PREPAID_TENANT), entitlementsRun),
      ...(await Promise.all(
        story.invoiceWorkflows.map((id, i) => writeHistory(temporal.client, outDir, `period-invoice-${i + 1}.json`, id)),
      )),
      ...(await Promise.all(
        story.rerunWorkflows.map((id, i) => writeHistory(temporal.client, outDir, `invoice-rerun-${i + 1}.json`, id)),
      )),
      ...(await Promise.all(
        story.alertDeliveries.map((id, i) => writeHistory(temporal.client, outDir, `alert-delivery-${i + 1}.json`, id)),
      )),
      await writeHistory(temporal.client, outDir, 'retention-1.json', RETENTION_WORKFLOW_ID),
    ];
  } finally {
    for (const stop of stops.reverse()) await stop().catch((err: unknown) => process.stderr.write(`stop failed: ${String(err)}\n`));
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

/** The story, over HTTP like a real client; returns the runs and invoice workflows it produced. */
async function driveStory(
  baseUrl: string,
  adminKey: string,
  client: Client,
  db: Db,
): Promise<{ tenantRuns: [string, string, string]; continuedRun: string; continuedNextRun: string; invoiceWorkflows: string[]; rerunWorkflows: string[]; alertDeliveries: string[] }> {
  const call = apiCaller(baseUrl);
  const workflowId = tenantWorkflowId(STORY_TENANT);

  step('plan and tenants');
  await call('POST', '/v1/plans', adminKey, {
    id: STORY_PLAN,
    name: 'Tokens with a hard API-call limit',
    currency: 'USD',
    interval: 'month',
    base_fee: '10.00',
    alert_thresholds: [80, 90, 100],
    grace_period_seconds: 3600,
    meters: [
      {
        metric: 'tokens',
        aggregation: 'sum',
        limit: 1000,
        pricing: { model: 'graduated', tiers: [{ up_to: 500, unit_price: '0.01' }, { up_to: null, unit_price: '0.005' }] },
      },
      { metric: 'api_calls', aggregation: 'sum', limit: 100, hard_limit: true, pricing: { model: 'per_unit', unit_price: '0.001' } },
    ],
  }, 201);
  const tenant = await call<{ api_key: string; current_period: { start: string } }>('POST', '/v1/tenants', adminKey, { id: STORY_TENANT, name: 'Acme (replay story)', plan_id: STORY_PLAN }, 201);
  const key: string = tenant.api_key;
  const used = (usage: UsageView, metric: string) => usage.metrics[metric]?.used;
  const settled = async (what: (usage: UsageView) => boolean) => {
    for (let i = 0; i < 100; i++) {
      const usage = await call<UsageView>('GET', `/v1/tenants/${STORY_TENANT}/usage?consistent=true`, key, undefined, 200);
      if (usage.pending_events === 0 && what(usage)) return usage;
      await sleep(100);
    }
    throw new Error('usage never settled');
  };

  step('period 1: usage, a resent event, read-your-writes usage, authorize allowed and refused, a rule');
  await call('POST', '/v1/events', key, { events: [
    { id: 'evt-1', metric: 'tokens', quantity: 850 },
    { id: 'evt-2', metric: 'api_calls', quantity: 20 },
  ] }, 202);
  await settled((u) => used(u, 'tokens') === 850); // 85%: the 80% alert fires
  await call('POST', '/v1/events', key, { events: [
    { id: 'evt-3', metric: 'tokens', quantity: 60 },
    { id: 'evt-1', metric: 'tokens', quantity: 850 }, // resent: stored once
  ] }, 202);
  await settled((u) => used(u, 'tokens') === 910); // 91%: the 90% alert fires
  const allowed = await call<AuthorizeResult>('POST', `/v1/tenants/${STORY_TENANT}/authorize`, key, { id: 'auth-1', metric: 'api_calls', quantity: 30 }, 200);
  const refused = await call<AuthorizeResult>('POST', `/v1/tenants/${STORY_TENANT}/authorize`, key, { id: 'auth-2', metric: 'api_calls', quantity: 80 }, 200);
  if (allowed.allowed !== true || refused.allowed !== false) throw new Error(`unexpected authorizations ${JSON.stringify([allowed, refused])}`);
  // A rule added mid-period: the running workflow reads it back (update alertRulesStored) and
  // judges it before the API answers (superseded here: the 80 and 90 % have fired).
  await call('POST', `/v1/tenants/${STORY_TENANT}/alert-rules`, key, { metric: 'tokens', threshold: 50, channel: { type: 'email', to: 'ops@example.com' } }, 201);
  await settled((u) => u.alerts.some((a) => a.threshold === 50));

  const run1 = (await client.workflow.getHandle(workflowId).describe()).runId;
  step('closing period 1 without finalize (its invoice waits out the hour of grace)');
  const close1 = await call<ClosePeriodResult>('POST', `/v1/tenants/${STORY_TENANT}/close-period`, adminKey, {}, 200);
  await waitClosed(client, workflowId, run1, 'CONTINUED_AS_NEW');
  const run2 = continuedAsNewRunId(await client.workflow.getHandle(workflowId, run1).fetchHistory());

  step('period 2: a late event crosses period 1\'s 100 %, usage, then closing it with finalize');
  const late = new Date(Date.parse(close1.closed_period.end) - 1).toISOString();
  await call('POST', '/v1/events', key, { events: [
    { id: 'evt-late', metric: 'tokens', quantity: 100, timestamp: late },
    { id: 'evt-4', metric: 'tokens', quantity: 10 },
  ] }, 202);
  await settled((u) => used(u, 'tokens') === 10);
  await waitForAlert(baseUrl, key, (a) => a.threshold === 100 && a.period_start === close1.closed_period.start);
  // Two closes with keys of their own, as two finance tools might send them: the run answers both
  // with one rollover, and each key is stored with it (patch close-keys-v1). The first keeps the
  // grace; the second asks to finalize, and the run ends invoice 2's grace for it (patch
  // finalize-joins-rollover-v1). The tenant's ledger lock, held here, keeps the first's rollover
  // under way until the second has reached the run.
  const closeWithKey = (idempotencyKey: string, finalize: boolean) =>
    call<ClosePeriodResult>('POST', `/v1/tenants/${STORY_TENANT}/close-period`, adminKey, { finalize }, 200, { 'idempotency-key': idempotencyKey });
  const ledgerLock = await db.transaction();
  await lockTenantLedger(ledgerLock, STORY_TENANT, 'exclusive');
  const firstClose = closeWithKey('story-close-2a', false);
  await sleep(ROLLOVER_HELD_MS);
  const secondClose = closeWithKey('story-close-2b', true);
  await sleep(ROLLOVER_HELD_MS);
  await ledgerLock.commit();
  const [close2, close2b] = await Promise.all([firstClose, secondClose]);
  if (close2b.closed_period.start !== close2.closed_period.start) throw new Error(`the two closes made two rollovers: ${JSON.stringify([close2, close2b])}`);
  await waitClosed(client, workflowId, run2, 'CONTINUED_AS_NEW');
  const run3 = continuedAsNewRunId(await client.workflow.getHandle(workflowId, run2).fetchHistory());
  await waitClosed(client, close2.invoice_workflow_id, undefined, 'COMPLETED');

  step('rerunning invoice 2 (version 2 replaces version 1)');
  const rerun = await call<{ workflow_id: string }>('POST', `/v1/invoices/${close2.invoice_id}/rerun`, adminKey, { reason: 'replay story' }, 202);
  await waitClosed(client, rerun.workflow_id, undefined, 'COMPLETED');

  step('cancelling the subscription (its run waits out the final period\'s grace)');
  await call('DELETE', `/v1/tenants/${STORY_TENANT}`, adminKey, undefined, 200);
  await waitForUpdateAnsweredAndIdle(client, workflowId, run3);

  step('a second tenant whose run continues as new within its period');
  const second = await call<{ api_key: string }>('POST', '/v1/tenants', adminKey, { id: STORY_SECOND_TENANT, name: 'Beta (replay story)', plan_id: STORY_PLAN }, 201);
  // Started again with a low signal bound: the new run also rebuilds its ledger from PostgreSQL.
  const bounded = await client.workflow.start('tenantBilling', {
    taskQueue: TASK_QUEUE_SELF_CONTAINED,
    workflowId: tenantWorkflowId(STORY_SECOND_TENANT),
    args: [{ tenant_id: STORY_SECOND_TENANT, limits: { maxSignalsPerRun: 2 } }],
    workflowIdConflictPolicy: WorkflowIdConflictPolicy.TERMINATE_EXISTING,
  });
  for (let i = 1; i <= 3; i++) {
    await call('POST', '/v1/events', second.api_key, { events: [{ id: `beta-${i}`, metric: 'tokens', quantity: 1 }] }, 202);
    // A ring each, as the worker's counter rings a tenant whose events it leaves to the workflow
    // (these it may count in bulk, so the story rings by hand).
    await client.workflow.getHandle(bounded.workflowId).signal(recordUsageSignal, { events: 1, highest_seq: null });
    await sleep(200);
  }
  await waitClosed(client, bounded.workflowId, bounded.firstExecutionRunId, 'CONTINUED_AS_NEW');
  const continuedNextRun = continuedAsNewRunId(await client.workflow.getHandle(bounded.workflowId, bounded.firstExecutionRunId).fetchHistory());
  // The next run claims what its predecessor left (a prefix of its history replays as well).
  await sleep(1_000);

  // The run delivers an alert inline first (patch inline-alert-delivery-v1); only an alert with an
  // email channel, or one that attempt could not deliver, gets a delivery workflow of its own.
  const deliveries: string[] = [];
  for await (const run of client.workflow.list({ query: `WorkflowType = 'alertDelivery'` })) deliveries.push(run.workflowId);
  deliveries.sort((a, b) => (a === alertDeliveryWorkflowId(alertId(STORY_TENANT, tenant.current_period.start, 'tokens', 80)) ? -1 : a.localeCompare(b)));
  for (const delivery of deliveries) await waitClosed(client, delivery, undefined, 'COMPLETED');
  return {
    tenantRuns: [run1, run2, run3],
    continuedRun: bounded.firstExecutionRunId,
    continuedNextRun,
    alertDeliveries: deliveries,
    invoiceWorkflows: [close1.invoice_workflow_id, close2.invoice_workflow_id],
    rerunWorkflows: [rerun.workflow_id],
  };
}

/**
 * Entitlements (patch `entitlements-v1`): a prepaid tenant gets a limit override (update
 * `entitlementsChanged`), a grant, an add-on pack, usage that draws from it and crosses its low balance, an
 * authorize refused for its balance and one refused at its hard limit, then a close with
 * finalize (credit applied). Answers the run that closed (it continued as new).
 */
async function driveEntitlementsStory(baseUrl: string, adminKey: string, client: Client): Promise<string> {
  const call = apiCaller(baseUrl);
  step('entitlements: a prepaid tenant, a limit override, a grant, balance alerts, authorize refusals, credit at finalization');
  await call('POST', '/v1/plans', adminKey, {
    id: STORY_PREPAID_PLAN,
    name: 'Prepaid minutes',
    currency: 'USD',
    interval: 'month',
    base_fee: '0.00',
    grace_period_seconds: 0,
    prepaid: true,
    low_balance_threshold: '5.00',
    meters: [{ metric: 'minutes', aggregation: 'sum', limit: 1000, hard_limit: true, pricing: { model: 'per_unit', unit_price: '0.10' } }],
  }, 201);
  const tenant = await call<{ api_key: string }>('POST', '/v1/tenants', adminKey, { id: STORY_PREPAID_TENANT, name: 'Prepaid (replay story)', plan_id: STORY_PREPAID_PLAN }, 201);
  const key = tenant.api_key;
  const base = `/v1/tenants/${STORY_PREPAID_TENANT}`;
  await call('PATCH', base, adminKey, { limits: { minutes: 200 } }, 200);
  await call('POST', `${base}/credits`, adminKey, { id: 'grant-1', amount: '12.00' }, 201);
  await call('POST', `${base}/packs`, adminKey, { id: 'pack-1', metric: 'minutes', units: 50, price: '2.00' }, 201);
  await call('POST', '/v1/events', key, { events: [{ id: 'm-1', metric: 'minutes', quantity: 230 }] }, 202);
  const refusedForBalance = await call<AuthorizeResult>('POST', `${base}/authorize`, key, { id: 'auth-1', metric: 'minutes', quantity: 1 }, 200);
  const refusedAtLimit = await call<AuthorizeResult>('POST', `${base}/authorize`, key, { id: 'auth-2', metric: 'minutes', quantity: 31 }, 200);
  if (refusedForBalance.reason !== 'insufficient_balance' || refusedAtLimit.reason !== 'hard_limit') {
    throw new Error(`unexpected authorizations ${JSON.stringify([refusedForBalance, refusedAtLimit])}`);
  }
  await call('POST', `${base}/credits`, adminKey, { id: 'grant-2', amount: '10.00' }, 201);
  const runId = (await client.workflow.getHandle(tenantWorkflowId(STORY_PREPAID_TENANT)).describe()).runId;
  await call('POST', `${base}/close-period`, adminKey, { finalize: true }, 200);
  await waitClosed(client, tenantWorkflowId(STORY_PREPAID_TENANT), runId, 'CONTINUED_AS_NEW');
  return runId;
}

/** Calls the story's API like a client: JSON in, JSON out, and the status it must answer. */
function apiCaller(baseUrl: string) {
  return async <T = unknown>(method: string, url: string, key: string, body: unknown, expected: number, headers: Record<string, string> = {}): Promise<T> => {
    const res = await fetch(`${baseUrl}${url}`, {
      method,
      headers: { 'x-api-key': key, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (res.status !== expected) throw new Error(`${method} ${url}: expected ${expected}, got ${res.status}: ${text}`);
    return (text ? JSON.parse(text) : undefined) as T;
  };
}

/** Polls the tenant's alerts (every period) until one matches. */
async function waitForAlert(baseUrl: string, key: string, match: (alert: { threshold: number; period_start: string }) => boolean): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const res = await fetch(`${baseUrl}/v1/tenants/${STORY_TENANT}/alerts?limit=100`, { headers: { 'x-api-key': key } });
    const page = (await res.json()) as { data: Array<{ threshold: number; period_start: string }> };
    if (page.data.some(match)) return;
    await sleep(100);
  }
  throw new Error('the alert never fired');
}

// ---- helpers -----------------------------------------------------------------------------------

/** Fetches one run's history and writes it as Temporal's JSON history format (indented, for review). */
async function writeHistory(client: Client, outDir: string, file: string, workflowId: string, runId?: string): Promise<RecordedFile> {
  const handle = client.workflow.getHandle(workflowId, runId);
  const [history, description] = await Promise.all([handle.fetchHistory(), handle.describe()]);
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, file), `${JSON.stringify(historyJson(history), null, 2)}\n`);
  return {
    file,
    workflowId,
    runId: description.runId,
    workflowType: description.type,
    status: description.status.name,
    events: history.events?.length ?? 0,
  };
}

/**
 * The history in Temporal's JSON history format (what `historyFromJSON` and the replayer load).
 * `historyToJSON` fails with "type must be a Type" when npm leaves @temporalio/common and
 * @temporalio/proto each their own copy of protobufjs (as in this lockfile): protojson's
 * `instanceof Type` then sees another copy's class. The fallback does the same conversion with
 * the protojson of @temporalio/proto's own copy.
 */
function historyJson(history: History): unknown {
  try {
    return JSON.parse(historyToJSON(history));
  } catch (err) {
    if (!(err instanceof TypeError && err.message.includes('must be a Type'))) throw err;
    const requireAsProto = createRequire(require.resolve('@temporalio/proto/package.json'));
    const protojson = requireAsProto('protobufjs/ext/protojson') as { toJson(type: unknown, message: unknown): unknown };
    const History = temporalProto.api.history.v1.History;
    return protojson.toJson(History, History.fromObject(history));
  }
}

/**
 * A history a test printed because it could not be replayed (`unreplayableRuns` in
 * test/support/periods-harness.ts: base64 of the gzipped protobuf), written in the JSON format of
 * the recorded ones. Whitespace and line breaks in the text are ignored.
 */
function writePrintedHistory(printedFile: string, outFile: string): void {
  const text = fs.readFileSync(printedFile, 'utf8').replace(/\s+/g, '');
  const history = temporalProto.api.history.v1.History.decode(gunzipSync(Buffer.from(text, 'base64')));
  fs.mkdirSync(path.dirname(outFile), { recursive: true });
  fs.writeFileSync(outFile, `${JSON.stringify(historyJson(history), null, 2)}\n`);
}

/** The run a continued-as-new history handed over to. */
function continuedAsNewRunId(history: History): string {
  const last = history.events?.[history.events.length - 1];
  const runId = last?.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId;
  if (!runId) throw new Error('the run did not continue as new');
  return runId;
}

/** Polls a run until it is no longer running, and checks how it ended. */
async function waitClosed(client: Client, workflowId: string, runId: string | undefined, expected: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = (await client.workflow.getHandle(workflowId, runId).describe()).status.name;
    if (status === expected) return;
    if (status !== 'RUNNING') throw new Error(`${workflowId} ended ${status}, expected ${expected}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${workflowId} to end ${expected}`);
    await sleep(100);
  }
}

/**
 * Polls a run until its last accepted update (the cancellation) is answered and the run waits:
 * its history stops growing. It waits out the earliest grace left, under a timer started then or
 * earlier (the first period's hour of grace was already running).
 */
async function waitForUpdateAnsweredAndIdle(client: Client, workflowId: string, runId: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lengthAnswered = -1;
  for (;;) {
    const events = (await client.workflow.getHandle(workflowId, runId).fetchHistory()).events ?? [];
    const updates = events.flatMap((e, i) => (e.workflowExecutionUpdateAcceptedEventAttributes != null ? [i] : []));
    const last = updates[updates.length - 1];
    const answered = last !== undefined && events.slice(last).some((e) => e.workflowExecutionUpdateCompletedEventAttributes != null);
    const waiting = events.at(-1)?.workflowTaskCompletedEventAttributes != null || events.at(-1)?.timerStartedEventAttributes != null || events.at(-1)?.workflowExecutionUpdateCompletedEventAttributes != null;
    if (answered && waiting && events.length === lengthAnswered) return;
    lengthAnswered = answered ? events.length : -1;
    if (Date.now() > deadline) throw new Error(`timed out waiting for the cancellation to be answered in ${workflowId}`);
    await sleep(500);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function step(text: string): void {
  process.stdout.write(`- ${text}\n`);
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
