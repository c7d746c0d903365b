import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { historyFromJSON, type History } from '@temporalio/common/lib/proto-utils';
import { temporal as temporalProto } from '@temporalio/proto';
import { DefaultLogger, Worker, bundleWorkflowCode, type WorkflowBundle, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { DeterminismViolationError } from '@temporalio/workflow';
import * as registeredWorkflows from '../../src/workflows';
import * as patchRegistries from '../../src/workflows/patches';
import { HANDED_OVER_PATCHES } from '../../src/workflows/run-patches';
import { installQuietRuntime, workflowBundle } from '../support/stack';

/**
 * Replay safety: every recorded history (`npm run histories:record`, see
 * scripts/record-histories.ts) must replay against the current workflow code. A change that would
 * break running workflows (a command added, removed or reordered without `patched()`) fails here.
 * No server is involved: the replayer feeds the history to the workflow code in-process.
 * Alone: `npx jest --selectProjects integration -- test/integration/replay.test.ts` (without the
 * `--`, jest takes the path for a second project name and runs every integration suite).
 */
const HISTORY_DIR = path.resolve(__dirname, '../histories');
const INCOMPATIBLE_WORKFLOWS = path.resolve(__dirname, '../fixtures/incompatible-workflows');

interface RecordedHistory {
  file: string;
  workflowType: string;
  history: History;
}

const histories: RecordedHistory[] = fs
  .readdirSync(HISTORY_DIR)
  .filter((f) => f.endsWith('.json'))
  .sort()
  .map((file) => {
    const json = JSON.parse(fs.readFileSync(path.join(HISTORY_DIR, file), 'utf8'));
    const workflowType: string | undefined = json.events?.[0]?.workflowExecutionStartedEventAttributes?.workflowType?.name;
    if (!workflowType) throw new Error(`${file} does not start with WorkflowExecutionStarted`);
    return { file, workflowType, history: loadHistory(json) };
  });

/**
 * `historyFromJSON`, or, when this install holds two copies of protobufjs (@temporalio/common's
 * and @temporalio/proto's are not deduplicated here, so protojson's `instanceof Type` check
 * throws "type must be a Type"), the same parse through @temporalio/proto's own copy.
 */
function loadHistory(json: unknown): History {
  try {
    return historyFromJSON(json);
  } catch (err) {
    if (!(err instanceof TypeError && err.message.includes('must be a Type'))) throw err;
    const requireAsProto = createRequire(require.resolve('@temporalio/proto/package.json'));
    const protojson = requireAsProto('protobufjs/ext/protojson') as {
      fromJson(type: unknown, json: unknown, options: { ignoreUnknownFields: boolean }): History | null;
    };
    const loaded = protojson.fromJson(temporalProto.api.history.v1.History, json, { ignoreUnknownFields: true });
    if (!loaded) throw new TypeError('invalid history');
    return loaded;
  }
}

/** Histories carry no workflow id; the file name stands in (no workflow here reads its own id). */
function replay(bundle: WorkflowBundle, recorded: RecordedHistory): Promise<void> {
  return Worker.runReplayHistory({ workflowBundle: bundle, replayName: `replay-${recorded.file}` }, recorded.history, recorded.file);
}

beforeAll(() => {
  installQuietRuntime();
});

test('there is a recorded history of every workflow type the worker registers', () => {
  const recordedTypes = new Set(histories.map((h) => h.workflowType));
  expect(recordedTypes).toContain('tenantBilling');
  expect(recordedTypes).toContain('periodInvoice');
  for (const type of Object.keys(registeredWorkflows)) expect(recordedTypes).toContain(type);
});

/** The patch ids a history's markers record. */
function patchIds(history: History): string[] {
  return (history.events ?? []).flatMap((e) => {
    const marker = e.markerRecordedEventAttributes;
    if (marker?.markerName !== 'core_patch') return [];
    return Object.values(marker.details ?? {}).flatMap((payloads) =>
      (payloads.payloads ?? []).map((p) => (JSON.parse(Buffer.from(p.data!).toString('utf8')) as { id: string }).id),
    );
  });
}

/** The patch ids a run was handed by the continue-as-new that started it (src/workflows/run-patches.ts). */
function handedOverIds(history: History): string[] {
  const payload = history.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0];
  if (!payload?.data) return [];
  const input = JSON.parse(Buffer.from(payload.data).toString('utf8')) as { patches_at_start?: string[] };
  return input.patches_at_start ?? [];
}

/** The patches a run took: those its markers record and those handed over at its start. */
function takenIds(history: History): string[] {
  return [...patchIds(history), ...handedOverIds(history)];
}

/** Each workflow type's patch registry (src/workflows/patches.ts). */
const PATCHES: Record<string, Record<string, string>> = { tenantBilling: patchRegistries.TENANT_BILLING_PATCHES };

/** Every `patched(...)` and `deprecatePatch(...)` call in the workflow code, with the id it names (undefined when not from a registry). */
function patchCalls(): Array<{ call: string; retires: boolean; id: string | undefined }> {
  const workflowDir = path.resolve(__dirname, '../../src/workflows');
  return fs
    .readdirSync(workflowDir)
    // run-patches.ts makes the calls for the others, with the id they pass it.
    .filter((f) => f.endsWith('.ts') && f !== 'run-patches.ts')
    .flatMap((f) =>
      [...fs.readFileSync(path.join(workflowDir, f), 'utf8').matchAll(/\b(patched|patchedWhereReached|deprecatePatch)\(([^)]*)\)/g)].map((m) => {
        const [, registry, key] = /^(\w+)\.(\w+)$/.exec(m[2]!) ?? [];
        const id = registry && key ? (patchRegistries as Record<string, Record<string, string>>)[registry]?.[key] : undefined;
        return { call: `${f}: ${m[0]}`, retires: m[1] === 'deprecatePatch', id };
      }),
    );
}

test('workflow code asks only for registered patches', () => {
  expect(Object.values(PATCHES)).toEqual(Object.values(patchRegistries));
  const calls = patchCalls();
  expect(calls.length).toBeGreaterThan(0);
  expect(calls.filter((c) => c.id === undefined).map((c) => c.call)).toEqual([]);
});

test('every live patch is replayed on both of its paths, every retired one on its new path', () => {
  // A retired patch (`deprecatePatch`) has lost its old path: only its new one is replayed.
  const retired = new Set(patchCalls().filter((c) => c.retires).map((c) => c.id));
  expect(retired.size).toBeGreaterThan(0);
  for (const [type, patches] of Object.entries(PATCHES)) {
    const ofType = histories.filter((h) => h.workflowType === type);
    for (const id of Object.values(patches)) {
      // A history with the marker replays the new path; one of the same type that did not take it, the old.
      expect({ id, withMarker: ofType.some((h) => patchIds(h.history).includes(id)) }).toEqual({ id, withMarker: true });
      if (retired.has(id)) continue;
      expect({ id, notTaken: ofType.some((h) => !takenIds(h.history).includes(id)) }).toEqual({ id, notTaken: true });
    }
  }
});

test('a run handed the patches at its start is replayed, without a patch marker of its own', () => {
  const handed = histories.filter((h) => h.workflowType === 'tenantBilling' && HANDED_OVER_PATCHES.every((id) => handedOverIds(h.history).includes(id)));
  expect(handed.length).toBeGreaterThan(0);
  for (const h of handed) expect({ file: h.file, markers: patchIds(h.history) }).toEqual({ file: h.file, markers: [] });
});

test('a handed run that an older worker ran, recording markers for the patches it has, replays', async () => {
  // The older worker reads no `patches_at_start`: its history holds the markers of a run started
  // without one. The same history with the field in its input is what such a worker leaves of a
  // run this code started during a rolling deploy.
  const recorded = histories.find((h) => h.file === 'tenant-billing-finalize-joins-period-2.json')!;
  expect(patchIds(recorded.history).length).toBeGreaterThan(0);
  const history = temporalProto.api.history.v1.History.decode(temporalProto.api.history.v1.History.encode(recorded.history).finish());
  const payload = history.events![0]!.workflowExecutionStartedEventAttributes!.input!.payloads![0]!;
  const input = JSON.parse(Buffer.from(payload.data!).toString('utf8')) as Record<string, unknown>;
  payload.data = Buffer.from(JSON.stringify({ ...input, patches_at_start: [...HANDED_OVER_PATCHES] }));
  expect(handedOverIds(history)).toEqual([...HANDED_OVER_PATCHES]);
  await expect(replay(await workflowBundle(), { ...recorded, file: `handed-${recorded.file}`, history })).resolves.toBeUndefined();
});

describe('recorded histories replay against the current workflow code', () => {
  test.each(histories.map((h) => [h.file, h] as const))('%s', async (_file, recorded) => {
    await expect(replay(await workflowBundle(), recorded)).resolves.toBeUndefined();
  });
});

describe('the check catches an incompatible change', () => {
  let incompatible: WorkflowBundleWithSourceMap;
  beforeAll(async () => {
    incompatible = await bundleWorkflowCode({ workflowsPath: INCOMPATIBLE_WORKFLOWS, logger: new DefaultLogger('WARN') });
  });

  test('a tenant history replayed against tenantBilling with an extra first activity is a nondeterminism error', async () => {
    const tenantHistories = histories.filter((h) => h.workflowType === 'tenantBilling');
    expect(tenantHistories.length).toBeGreaterThan(0);
    for (const recorded of tenantHistories) {
      const error = await replay(incompatible, recorded).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(error).toBeInstanceOf(DeterminismViolationError);
      expect((error as Error).name).toBe('DeterminismViolationError');
      expect((error as Error).message).toMatch(/nondeterminism/i);
    }
  });

  test('the unchanged periodInvoice in the same bundle still replays (the failure is the edit, not the bundle)', async () => {
    const invoice = histories.find((h) => h.workflowType === 'periodInvoice')!;
    await expect(replay(incompatible, invoice)).resolves.toBeUndefined();
  });
});
