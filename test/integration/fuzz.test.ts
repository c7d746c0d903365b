import { isUtf8 } from 'node:buffer';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { Writable } from 'node:stream';
import zlib from 'node:zlib';
import fc from 'fast-check';
import pino from 'pino';
import { startApiHarness, eventually, type ApiHarness } from '../support/api-harness';
import { unique } from '../support/stack';
import { report } from '../support/report';
import { internalIpv4 } from '../support/internal-addresses';
import { createApp } from '../../src/api/app';
import { listen } from '../../src/api/server';
import { safeEqual } from '../../src/db/api-keys';
import { TenantDirectory } from '../../src/api/tenant-directory';
import { settledUsageUpdate, tenantWorkflowId, usageQuery } from '../../src/workflows/messages';
import { Dec, toDecimalString } from '../../src/domain/decimal';
import { ratePeriod } from '../../src/domain/rating';
import type { PlanVersion } from '../../src/domain/plan';

/**
 * Property-based fuzzing of every write route of API v1 through real HTTP (keep-alive agent,
 * bounded concurrency) against the harness app, its worker, Temporal and PostgreSQL.
 *
 * Four properties send batches of random and hostile requests: random JSON values, raw bodies
 * that are malformed or hostile at the byte level (deep nesting, lone surrogates, NaN, huge
 * strings, gzip bombs, wrong content types), valid bodies with one field replaced by a hostile
 * value (edge numbers, calendar-edge timestamps, prototype-pollution keys, NUL, SQL), and
 * hostile path ids. After every batch:
 *
 * - no answer is a 5xx, and every error is `application/problem+json` with a known `code`;
 * - nothing polluted `Object.prototype` (the app runs in this process);
 * - `/healthz` still answers;
 * - when every request of the batch was refused (>= 400), no table changed: row counts of
 *   every table, digests of the mutable columns (tenants, keys, rules, invoices, periods) and the
 *   known tenant's usage are identical before and after. Accepted requests whose effects land
 *   later (counting, alerts, invoice workflows) make the system "unsettled": the next refused
 *   batch then waits for quiet instead of being judged, and the one after it is judged again.
 *
 * At the end of each property every event the API acknowledged for the known tenant is stored
 * (counted or kept in `rejected_events`): no accepted request poisoned its workflow, which is
 * still running without a failed workflow task. Each property starts from fresh tenants, so any
 * one of them can run alone (`-t`). The last tests pin the security fixes this fuzzing led to.
 *
 * Every property draws from one fixed seed, so a run is repeatable; FUZZ_SEED=<integer> explores
 * others. A failure names its seed (and the path of the failing run) in its message.
 */

// ---- the stack and its fixtures -------------------------------------------------------------

const CONCURRENCY = 12;
/** Runs per property and requests per run (batch): together >= 10,000 requests. */
const RUNS = { randomJson: 80, rawBodies: 60, mutations: 40, paths: 50 } as const;
const BATCH = { randomJson: 50, rawBodies: 50, mutations: 50, paths: 25 } as const;
/**
 * The share of batches that must be refused whole, so that "refused changes nothing" was judged
 * often. Mutations start from valid bodies: most of their batches have an accepted request.
 */
const JUDGED = { randomJson: 0.7, rawBodies: 0.7, mutations: 0, paths: 0.7 } as const;

/** The seed of every property here: fixed, so a failure can be replayed; FUZZ_SEED overrides it. */
const FUZZ_SEED = ((raw = process.env.FUZZ_SEED) => {
  if (raw === undefined || raw === '') return 1_207_512;
  const seed = Number(raw);
  if (!Number.isInteger(seed) || seed < -(2 ** 31) || seed >= 2 ** 31) throw new Error(`FUZZ_SEED must be a 32-bit integer, got ${JSON.stringify(raw)}`);
  return seed;
})();

let api: ApiHarness;
let agent: http.Agent;
let port: number;
let planId: string;
/** A: the known tenant most requests aim at. B: another tenant (its key on A's resources). */
const A = { id: '', key: '' };
const B = { id: '', key: '' };
/** C has a finalized invoice (reruns); D takes close-period; E is the victim of delete and rotations. */
let C = { id: '', invoice: '' };
let D = { id: '' };
let E = { id: '' };
/** What the current test sent, and where its time went (ms): reset with the fixtures. */
let requestsSent = 0;
let startedAt = Date.now();
const newTiming = () => ({ sending: 0, snapshots: 0, settling: 0, settles: 0, batches: 0, checked: 0, accepted: {} as Record<string, number> });
let timing = newTiming();
/** The state after the last batch that changed nothing: the next batch starts from it. */
let lastQuiet: string | undefined;
/** Event ids the API acknowledged for tenant A (202, or an allowed authorize). */
const acceptedForA = new Set<string>();
const PROTOTYPE_NAMES = JSON.stringify([Object, Array, Function, String, Number].map((c) => Object.getOwnPropertyNames(c.prototype).sort()));

const PLAN = (id: string, extra: Record<string, unknown> = {}) => ({
  id,
  name: 'Fuzz',
  currency: 'USD',
  interval: 'month',
  base_fee: '1.00',
  cost_limit: '1000000.00',
  grace_period_seconds: 0, // closes finalize at once: nothing changes later on a timer
  meters: [
    { metric: 'calls', aggregation: 'sum', limit: 1e12, hard_limit: true, pricing: { model: 'per_unit', unit_price: '0.001' } },
    { metric: 'tokens', aggregation: 'count', limit: 1e9, pricing: { model: 'graduated', tiers: [{ up_to: 1000, unit_price: '0.01' }, { up_to: null, unit_price: '0.001' }] } },
    { metric: 'storage', aggregation: 'max', pricing: { model: 'package', package_size: 10, package_price: '1.00' } },
  ],
  ...extra,
});

async function createTenant(extra: Record<string, unknown> = {}): Promise<{ id: string; key: string; body: any }> {
  const id = unique('fz');
  const res = await api.call('POST', '/v1/tenants', { body: { id, name: `Fuzz ${id}`, plan_id: planId, ...extra } });
  expect(res.status).toBe(201);
  return { id, key: res.body.api_key, body: res.body };
}

beforeAll(async () => {
  api = await startApiHarness({ ownDatabase: true });
  port = Number(new URL(api.baseUrl).port);
  agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  planId = unique('fzplan');
  expect((await api.call('POST', '/v1/plans', { body: PLAN(planId) })).status).toBe(201);
});

afterAll(async () => {
  agent?.destroy();
  await api?.stop();
});

/**
 * New tenants A to E (C with a finalized invoice) and empty tallies: what a test sends and checks
 * depends on no other test, and the fuzz never aims at a tenant an earlier property changed.
 */
async function freshFixtures(): Promise<void> {
  requestsSent = 0;
  timing = newTiming();
  lastQuiet = undefined;
  acceptedForA.clear();
  unsettled.dirty = false;
  unsettled.invoices = [];
  Object.assign(A, await createTenant({ email: 'a@example.com' }));
  Object.assign(B, await createTenant());
  const c = await createTenant();
  const d = await createTenant();
  const e = await createTenant();
  D = { id: d.id };
  E = { id: e.id };
  expect((await api.call('POST', '/v1/events', { key: c.key, body: { events: [{ id: 'c1', metric: 'calls', quantity: 5 }] } })).status).toBe(202);
  await api.call('GET', `/v1/tenants/${c.id}/usage?consistent=true`, { key: c.key });
  const close = await api.call('POST', `/v1/tenants/${c.id}/close-period`, { body: { finalize: true } });
  expect(close.status).toBe(200);
  C = { id: c.id, invoice: close.body.invoice_id };
  await eventually(async () => ((await api.call('GET', `/v1/invoices/${C.invoice}`)).body?.status === 'finalized' ? true : undefined), 30_000, 'C invoice');
  expect((await api.call('POST', '/v1/events', { key: A.key, body: { events: [{ id: 'seed', metric: 'calls', quantity: 1 }] } })).status).toBe(202);
  acceptedForA.add('seed');
  await settle();
}

// ---- HTTP -------------------------------------------------------------------------------------

/** One request as sent on the wire. */
interface Wire {
  method: 'POST' | 'PATCH' | 'DELETE' | 'GET';
  path: string;
  headers: Record<string, string>;
  body?: Buffer;
}

interface Answer {
  status: number;
  contentType: string;
  text: string;
  json: any;
}

function send(wire: Wire): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers = { ...wire.headers };
    if (wire.body) headers['content-length'] = String(wire.body.length);
    let answered = false;
    const req = http.request({ host: '127.0.0.1', port, method: wire.method, path: wire.path, headers, agent, timeout: 60_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        answered = true;
        const text = Buffer.concat(chunks).toString('utf8');
        let json: any;
        try {
          json = text ? JSON.parse(text) : undefined;
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), text, json });
      });
      res.on('error', (err) => (answered ? undefined : reject(err)));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer in 60 s: ${wire.method} ${wire.path}`)));
    // The server may answer (413) and close before it read the whole body: the answer counts.
    req.on('error', (err) => (answered ? undefined : setTimeout(() => (answered ? undefined : reject(err)), 50)));
    req.end(wire.body);
  });
}

/** Sends with at most CONCURRENCY requests in flight, answers in request order. */
async function sendAll(wires: Wire[]): Promise<Answer[]> {
  const answers: Answer[] = new Array(wires.length);
  let next = 0;
  const worker = async () => {
    while (next < wires.length) {
      const i = next++;
      answers[i] = await send(wires[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, wires.length) }, worker));
  requestsSent += wires.length;
  return answers;
}

// ---- what must hold after every batch --------------------------------------------------------

const CODES = new Set([
  'validation_failed',
  'not_found',
  'unauthorized',
  'forbidden',
  'late_event',
  'future_event',
  'unknown_metric',
  'subscription_cancelled',
  'conflict',
  'payload_too_large',
  'unsupported_media_type',
  'rate_limited',
  'unavailable',
]);

function describeWire(wire: Wire): string {
  const body = wire.body ? wire.body.subarray(0, 300).toString('utf8') + (wire.body.length > 300 ? `… (${wire.body.length} bytes)` : '') : '(none)';
  return `${wire.method} ${wire.path.slice(0, 200)} content-type=${wire.headers['content-type'] ?? '(none)'} encoding=${wire.headers['content-encoding'] ?? '-'} body=${JSON.stringify(body)}`;
}

/** The body parser's limit: a larger body is 413 whatever it holds. */
const BODY_LIMIT = 1024 * 1024;

/** True when a parsed JSON value holds a number JSON.parse could only read as ±Infinity (1e400). Iterative: bodies nest deep. */
function hasNonFinite(value: unknown): boolean {
  const stack = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === 'number' && !Number.isFinite(v)) return true;
    if (v !== null && typeof v === 'object') for (const child of Object.values(v)) stack.push(child);
  }
  return false;
}

/**
 * What the body alone decides, before any route, key or id matters: a non-empty body that is not
 * declared JSON, or JSON in another charset than UTF-8, is 415 `unsupported_media_type`; bytes
 * that are not UTF-8 are 400 (decoded, two ids would collapse into one); a number beyond the
 * double range (1e400, stored as null otherwise) is 422. Judged only for bodies sent as they are
 * (no content encoding) and within the size limit.
 */
function decidedByBody(wire: Wire): { status: number; code: string } | undefined {
  const { body } = wire;
  const encoding = wire.headers['content-encoding'];
  if (!body || body.length === 0 || body.length > BODY_LIMIT || (encoding !== undefined && encoding !== 'identity')) return undefined;
  const type = wire.headers['content-type'];
  const mediaType = type?.split(';')[0]!.trim().toLowerCase();
  if (mediaType === undefined || !(mediaType === 'application/json' || /^application\/[^/]+\+json$/.test(mediaType))) return { status: 415, code: 'unsupported_media_type' };
  const charset = /;\s*charset\s*=\s*"?([^";\s]*)/i.exec(type!)?.[1]?.toLowerCase();
  if (charset !== undefined && charset !== 'utf-8') return { status: 415, code: 'unsupported_media_type' };
  if (!isUtf8(body)) return { status: 400, code: 'validation_failed' };
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return undefined; // malformed, or nested deeper than JSON.parse goes: other checks judge it
  }
  return parsed !== null && typeof parsed === 'object' && hasNonFinite(parsed) ? { status: 422, code: 'validation_failed' } : undefined;
}

function checkAnswer(route: RouteName, wire: Wire, answer: Answer): void {
  const fail = (why: string) => {
    throw new Error(`${why}\n  request: ${describeWire(wire)}\n  answer: ${answer.status} ${answer.contentType} ${answer.text.slice(0, 500)}`);
  };
  const decided = decidedByBody(wire);
  if (decided && (answer.status !== decided.status || answer.json?.code !== decided.code)) fail(`the body alone decides this answer: ${decided.status} ${decided.code}`);
  if (answer.status === 415 && answer.json?.code !== 'unsupported_media_type') fail('a 415 without the code unsupported_media_type');
  if (answer.status >= 200 && answer.status < 300 && !(route === 'deleteRule' && answer.status === 204)) {
    // An accepted request answers its documented shape, not whatever an object happened to hold.
    const body = answer.json;
    if (body === null || typeof body !== 'object') fail('an accepted request without a JSON object answer');
    if (route === 'authorize' && typeof body.allowed !== 'boolean') fail('authorize answered without a boolean `allowed`');
    if (route === 'estimate' && (typeof body.amount !== 'string' || typeof body.currency !== 'string')) fail('estimate answered without amount and currency');
    if (route === 'events' && typeof body.received !== 'number') fail('ingest answered without `received`');
  }
  if (answer.status >= 500) fail('a 5xx answer');
  if (answer.status < 200) fail('no status');
  if (answer.status >= 400) {
    if (!/^application\/problem\+json/.test(answer.contentType)) fail('an error that is not application/problem+json');
    if (!answer.json || typeof answer.json.code !== 'string' || !CODES.has(answer.json.code)) fail('an error without a known code');
    if (answer.json.status !== answer.status) fail('problem status differs from the HTTP status');
  }
}

function checkPrototypes(): void {
  const probe = {} as Record<string, unknown>;
  for (const name of ['polluted', 'isAdmin', 'x']) {
    if (probe[name] !== undefined || ([] as any)[name] !== undefined) throw new Error(`Object.prototype was polluted with ${name}`);
  }
  const names = JSON.stringify([Object, Array, Function, String, Number].map((c) => Object.getOwnPropertyNames(c.prototype).sort()));
  if (names !== PROTOTYPE_NAMES) throw new Error('a built-in prototype gained or lost a property');
}

/** Row counts of every table, digests of mutable columns, and tenant A's usage. */
async function snapshot(): Promise<Record<string, unknown>> {
  const started = Date.now();
  try {
    return await takeSnapshot();
  } finally {
    timing.snapshots += Date.now() - started;
  }
}

async function takeSnapshot(): Promise<Record<string, unknown>> {
  const tables = ['plans', 'plan_versions', 'tenants', 'api_keys', 'periods', 'usage_events', 'rejected_events', 'invoices', 'invoice_lines', 'invoice_reruns', 'alert_rules', 'alerts', 'notification_deliveries'];
  const [counts, usage] = await Promise.all([
    api.db.raw(`SELECT ${tables.map((t) => `(SELECT count(*) FROM ${t}) AS ${t}`).join(', ')},
      (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY id), '')) FROM tenants t) AS tenants_digest,
      (SELECT md5(coalesce(string_agg(id || coalesce(revoked_at::text, '-'), '|' ORDER BY id), '')) FROM api_keys) AS keys_digest,
      (SELECT md5(coalesce(string_agg(id || coalesce(deleted_at::text, '-'), '|' ORDER BY id), '')) FROM alert_rules) AS rules_digest,
      (SELECT md5(coalesce(string_agg(id || status, '|' ORDER BY id), '')) FROM invoices) AS invoices_digest,
      (SELECT md5(coalesce(string_agg(tenant_id || start::text || "end"::text || status, '|' ORDER BY tenant_id, start), '')) FROM periods) AS periods_digest`),
    api.client.workflow.getHandle(tenantWorkflowId(A.id)).query(usageQuery),
  ]);
  return { ...counts.rows[0], usage: usage.metrics, pending: usage.pending_events, period: usage.period };
}

/**
 * Waits until every acknowledged event of A is counted, the invoices that accepted closes and
 * reruns announced are final, and then nothing changes for a moment (alert records, deliveries).
 */
async function settle(invoices: string[] = []): Promise<void> {
  const started = Date.now();
  timing.settles += 1;
  await api.client.workflow.getHandle(tenantWorkflowId(A.id)).executeUpdate(settledUsageUpdate);
  for (const id of invoices) {
    await eventually(async () => ((await api.db('invoices').where({ id }).first('status'))?.status === 'finalized' ? true : undefined), 20_000, `invoice ${id}`);
  }
  let previous = JSON.stringify(await snapshot());
  let quiet = 0;
  const deadline = Date.now() + 20_000;
  while (quiet < 2) {
    await new Promise((r) => setTimeout(r, 100));
    const now = JSON.stringify(await snapshot());
    quiet = now === previous ? quiet + 1 : 0;
    if (Date.now() > deadline) throw new Error('the system did not settle after accepted requests');
    previous = now;
  }
  lastQuiet = previous;
  timing.settling += Date.now() - started;
}

/**
 * Routes whose accepted requests change state after their answer: counting (and the alerts and
 * deliveries it may fire), rule judgement, invoice workflows. Other routes are done when they answer.
 */
const ASYNC_EFFECTS = new Set<RouteName>(['events', 'authorize', 'createRule', 'closePeriod', 'deleteTenant', 'rerun']);

/** Remembers the event ids tenant A was acknowledged for. */
function trackAccepted(route: RouteName, wire: Wire, answer: Answer, key: KeyKind): void {
  if (answer.status >= 400 || !wire.body) return;
  let body: any;
  try {
    body = JSON.parse(wire.body.toString('utf8'));
  } catch {
    return;
  }
  if (route === 'events' && Array.isArray(body?.events)) {
    for (const e of body.events) if ((e.tenant_id ?? (key === 'own' ? A.id : undefined)) === A.id) acceptedForA.add(String(e.id));
  }
  if (route === 'authorize' && wire.path.includes(`/${A.id}/`) && answer.json?.allowed === true) acceptedForA.add(String(body.id));
}

/** Accepted requests whose effects may still be landing, and the invoices they announced. */
const unsettled = { dirty: false, invoices: [] as string[] };

/**
 * Sends one batch and checks everything that must hold after it. A batch refused whole must leave
 * the state as it found it; one that starts while earlier accepted requests may still be changing
 * state (`unsettled`) cannot be judged, so it waits for quiet instead and the next batch is judged.
 */
async function runBatch(batch: Array<{ route: RouteName; key: KeyKind; wire: Wire }>): Promise<void> {
  const judged = !unsettled.dirty;
  const before = judged ? (lastQuiet ?? JSON.stringify(await snapshot())) : undefined;
  lastQuiet = undefined;
  const sendStarted = Date.now();
  const answers = await sendAll(batch.map((b) => b.wire));
  timing.sending += Date.now() - sendStarted;
  timing.batches += 1;
  let accepted = false;
  answers.forEach((answer, i) => {
    const { route, key, wire } = batch[i]!;
    checkAnswer(route, wire, answer);
    if (answer.status < 400) {
      accepted = true;
      timing.accepted[route] = (timing.accepted[route] ?? 0) + 1;
      // Routes without later effects are done when they answer: the next snapshot sees them.
      unsettled.dirty ||= ASYNC_EFFECTS.has(route);
      for (const id of [answer.json?.invoice_id, answer.json?.final_invoice_id]) if (typeof id === 'string') unsettled.invoices.push(id);
      trackAccepted(route, wire, answer, key);
    }
  });
  checkPrototypes();
  const health = await send({ method: 'GET', path: '/healthz', headers: {} });
  if (health.status !== 200) throw new Error(`/healthz answered ${health.status}`);
  if (accepted) return;
  if (!judged || unsettled.dirty) {
    await settle(unsettled.invoices);
    unsettled.dirty = false;
    unsettled.invoices = [];
    return;
  }
  const after = JSON.stringify(await snapshot());
  timing.checked += 1;
  if (after === before) lastQuiet = after;
  else {
    throw new Error(`a batch of refused requests changed state:\n  before ${before}\n  after  ${after}\n  requests:\n${batch.map((b, i) => `    ${answers[i]!.status} ${describeWire(b.wire)}`).join('\n')}`);
  }
}

// ---- routes, keys and targets ----------------------------------------------------------------

type KeyKind = 'admin' | 'own' | 'other' | 'none' | 'garbage' | 'bearer' | 'emptyBesideBearer';
type RouteName =
  | 'plans'
  | 'tenants'
  | 'patchTenant'
  | 'deleteTenant'
  | 'apiKeys'
  | 'webhookSecret'
  | 'events'
  | 'authorize'
  | 'estimate'
  | 'closePeriod'
  | 'createRule'
  | 'deleteRule'
  | 'acknowledgeAlert'
  | 'credits'
  | 'packs'
  | 'rerun';

/** Every write route of API v1 (the last test checks this against the route declarations). */
const WRITE_ROUTES: Record<RouteName, { method: Wire['method']; pattern: string }> = {
  plans: { method: 'POST', pattern: '/v1/plans' },
  tenants: { method: 'POST', pattern: '/v1/tenants' },
  patchTenant: { method: 'PATCH', pattern: '/v1/tenants/{}' },
  deleteTenant: { method: 'DELETE', pattern: '/v1/tenants/{}' },
  apiKeys: { method: 'POST', pattern: '/v1/tenants/{}/api-keys' },
  webhookSecret: { method: 'POST', pattern: '/v1/tenants/{}/webhook-secret' },
  events: { method: 'POST', pattern: '/v1/events' },
  authorize: { method: 'POST', pattern: '/v1/tenants/{}/authorize' },
  estimate: { method: 'POST', pattern: '/v1/tenants/{}/estimate' },
  closePeriod: { method: 'POST', pattern: '/v1/tenants/{}/close-period' },
  createRule: { method: 'POST', pattern: '/v1/tenants/{}/alert-rules' },
  deleteRule: { method: 'DELETE', pattern: '/v1/tenants/{}/alert-rules/{}' },
  acknowledgeAlert: { method: 'POST', pattern: '/v1/tenants/{}/alerts/{}/acknowledge' },
  credits: { method: 'POST', pattern: '/v1/tenants/{}/credits' },
  packs: { method: 'POST', pattern: '/v1/tenants/{}/packs' },
  rerun: { method: 'POST', pattern: '/v1/invoices/{}/rerun' },
};
const ROUTE_NAMES = Object.keys(WRITE_ROUTES) as RouteName[];

function keyHeaders(key: KeyKind): Record<string, string> {
  switch (key) {
    case 'admin':
      return { 'x-api-key': api.adminKey };
    case 'own':
      return { 'x-api-key': A.key };
    case 'other':
      return { 'x-api-key': B.key };
    case 'garbage':
      return { 'x-api-key': `tk_${'Zz9'.repeat(11)}` };
    case 'bearer':
      return { authorization: `Bearer ${api.adminKey}` };
    case 'emptyBesideBearer':
      // An empty X-API-Key counts as absent: the bearer token beside it is the key.
      return { 'x-api-key': '', authorization: `Bearer ${api.adminKey}` };
    case 'none':
      return {};
  }
}

const keyArb: fc.Arbitrary<KeyKind> = fc.oneof(
  { arbitrary: fc.constant<KeyKind>('admin'), weight: 8 },
  { arbitrary: fc.constant<KeyKind>('own'), weight: 8 },
  { arbitrary: fc.constant<KeyKind>('other'), weight: 2 },
  { arbitrary: fc.constant<KeyKind>('bearer'), weight: 1 },
  { arbitrary: fc.constant<KeyKind>('emptyBesideBearer'), weight: 1 },
  { arbitrary: fc.constant<KeyKind>('garbage'), weight: 1 },
  { arbitrary: fc.constant<KeyKind>('none'), weight: 1 },
);

/** Path ids that are not plain ids: percent-encoded random bytes (NUL, lone surrogates, bad UTF-8) and classics. */
const HOSTILE_IDS = [
  '%00',
  'a%00b',
  '%ED%A0%80',
  '%ED%BF%BF',
  '%C0%AF',
  '%FF%FE',
  '%E0%A4%A',
  '%',
  '%2e%2e',
  '..%2F..%2Fetc%2Fpasswd',
  '%2F',
  '__proto__',
  'constructor',
  'prototype',
  "'%20OR%201%3D1--",
  '%27%3B%20DROP%20TABLE%20tenants%3B--',
  'x'.repeat(65),
  'x'.repeat(3000),
  '%F0%9F%98%80',
  '%E2%80%AE',
  '%0d%0aX-Injected:%201',
  '%7B%22%24ne%22%3Anull%7D',
  '-',
  '.',
  '_',
];
const pathIdArb: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(...HOSTILE_IDS),
  fc.uint8Array({ minLength: 1, maxLength: 40 }).map((bytes) => [...bytes].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('')),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 20 }).map((s) => encodeURIComponent(s)),
);

const ghostTenant = () => unique('ghost');
const nowIso = () => new Date().toISOString();
let counter = 0;
const next = (prefix: string) => `${prefix}-${++counter}`;

/**
 * The tenant (or invoice, rule) a route's path names. `live` aims at fixtures where any body is
 * accepted (E's rotations and deletion, D's close, C's invoice); otherwise those routes aim at
 * ghosts, so random bodies there are validated and then refused, and batches rarely change state.
 */
function pathFor(route: RouteName, live: boolean, hostile?: string): string {
  const t = (id: string) => hostile ?? id;
  const ghost = ghostTenant();
  switch (route) {
    case 'plans':
      return '/v1/plans';
    case 'tenants':
      return '/v1/tenants';
    case 'events':
      return '/v1/events';
    case 'patchTenant':
    case 'authorize':
    case 'estimate':
    case 'createRule':
      return WRITE_ROUTES[route].pattern.replace('{}', t(A.id));
    case 'deleteTenant':
    case 'apiKeys':
    case 'webhookSecret':
      // Never A with the admin key or its own (safeKey): the fuzz keeps using A and its key.
      return WRITE_ROUTES[route].pattern.replace('{}', t(live && counter % 2 === 0 ? E.id : counter % 3 === 0 ? A.id : ghost));
    case 'closePeriod':
      return WRITE_ROUTES[route].pattern.replace('{}', t(live && counter % 2 === 0 ? D.id : ghost));
    case 'deleteRule':
      return `/v1/tenants/${hostile ? hostile : A.id}/alert-rules/${hostile ? 'ar_x' : `ar_${unique('ghost')}`}`;
    case 'acknowledgeAlert':
      // A ghost alert: acknowledging one of A's would be a change no snapshot expects.
      return `/v1/tenants/${hostile ? hostile : A.id}/alerts/${hostile ? 'al_x' : `al_${unique('ghost')}`}/acknowledge`;
    case 'credits':
    case 'packs':
      // A ghost tenant: a grant or pack for A would be a change no snapshot expects.
      return WRITE_ROUTES[route].pattern.replace('{}', t(ghost));
    case 'rerun':
      return `/v1/invoices/${t(live && counter % 2 === 0 ? C.invoice : `in_${ghost}_20260101T000000Z_v1`)}/rerun`;
  }
}

/** A's tenant key must stay valid: the admin key never rotates it, never deletes A. */
function safeKey(route: RouteName, key: KeyKind, path: string): KeyKind {
  const onA = path.includes(`/${A.id}`) && !path.includes('/alert-rules') && !path.includes('/authorize') && !path.includes('/estimate');
  if ((route === 'apiKeys' || route === 'deleteTenant' || route === 'webhookSecret') && onA && (key === 'admin' || key === 'bearer' || key === 'emptyBesideBearer' || key === 'own')) return 'other';
  return key;
}

/** A valid body per route (fresh ids), the starting point of mutations. */
function baseBody(route: RouteName, key: KeyKind): Record<string, unknown> {
  switch (route) {
    case 'plans':
      return PLAN(`fz_p_${++counter}`);
    case 'tenants':
      return { id: `fz_t_${++counter}`, name: 'Fuzzed', plan_id: planId, email: 'ops@example.com', webhook_url: 'http://127.0.0.1:9/hook', timezone: 'Europe/Paris', billing_anchor: '2026-01-31T09:30:00+01:00' };
    case 'patchTenant':
      return { name: 'Known tenant', email: 'a@example.com' };
    case 'events':
      return { events: [{ id: next('fz-e'), ...(key === 'own' ? {} : { tenant_id: A.id }), metric: 'calls', quantity: 1.5, timestamp: nowIso(), properties: { region: 'eu' } }] };
    case 'authorize':
      return { id: next('fz-a'), metric: 'calls', quantity: 1 };
    case 'estimate':
      return { metric: 'tokens', quantity: 10 };
    case 'closePeriod':
      return { finalize: 'yes' };
    case 'createRule':
      return { metric: 'calls', threshold: 95, channel: { type: 'email', to: 'rules@example.com' } };
    case 'credits':
      return { id: next('fz-g'), amount: '10.00', description: 'fuzz', expires_at: '2099-01-01T00:00:00Z' };
    case 'packs':
      return { id: next('fz-k'), metric: 'calls', units: 100, price: '5.00' };
    case 'rerun':
      return { reason: 'fuzz' };
    default:
      return {};
  }
}

/** Where a mutation may put its hostile value, per route (dotted paths; `+` adds a key). */
const MUTABLE: Record<RouteName, string[]> = {
  plans: ['', 'id', 'name', 'currency', 'interval', 'base_fee', 'alert_thresholds', 'alert_thresholds.0', 'cost_limit', 'grace_period_seconds', 'meters', 'meters.0', 'meters.0.metric', 'meters.0.aggregation', 'meters.0.limit', 'meters.0.hard_limit', 'meters.0.pricing', 'meters.0.pricing.model', 'meters.0.pricing.unit_price', 'meters.1.pricing.tiers', 'meters.1.pricing.tiers.0.up_to', 'meters.1.pricing.tiers.0.flat_fee', 'meters.2.pricing.package_size', '+__proto__', '+constructor'],
  tenants: ['', 'id', 'name', 'plan_id', 'email', 'webhook_url', 'timezone', 'billing_anchor', 'billing_anchor', 'billing_anchor', '+__proto__', '+extra'],
  patchTenant: ['', 'name', 'email', 'webhook_url', 'plan_id', '+__proto__', '+constructor', '+status', '+webhook_secret', '+id'],
  deleteTenant: [''],
  apiKeys: [''],
  webhookSecret: [''],
  events: ['', 'events', 'events.0', 'events.0.id', 'events.0.tenant_id', 'events.0.metric', 'events.0.quantity', 'events.0.quantity', 'events.0.timestamp', 'events.0.timestamp', 'events.0.properties', 'events.0.properties.region', 'events.0.properties.+__proto__', 'events.0.properties.+constructor', '+__proto__'],
  authorize: ['', 'id', 'metric', 'quantity', 'quantity', '+__proto__'],
  estimate: ['', 'metric', 'quantity', 'quantity', '+__proto__'],
  closePeriod: ['', 'finalize', '+__proto__'],
  createRule: ['', 'metric', 'cost', 'threshold', 'threshold', 'channel', 'channel.type', 'channel.to', 'channel.url', '+__proto__'],
  deleteRule: [''],
  acknowledgeAlert: ['', '+__proto__', '+note'],
  credits: ['', 'id', 'amount', 'amount', 'description', 'expires_at', '+currency', '+__proto__'],
  packs: ['', 'id', 'metric', 'units', 'units', 'price', 'purchased_at', 'expires_at', '+__proto__'],
  rerun: ['', 'reason', 'reason', '+plan_id', '+plan_id', '+__proto__'],
};

const PLACEHOLDER = '__FUZZ_HOSTILE_VALUE__';

/** The base body as JSON text with `raw` (any JSON text, valid or not) at `where`. */
function mutate(base: Record<string, unknown>, where: string, raw: string): string {
  if (where === '') return raw;
  const parts = where.split('.');
  const last = parts.pop()!;
  const copy = JSON.parse(JSON.stringify(base));
  let node: any = copy;
  for (const p of parts) {
    if (node === null || typeof node !== 'object') break;
    node[p] ??= {};
    node = node[p];
  }
  if (node !== null && typeof node === 'object') {
    const key = last.startsWith('+') ? last.slice(1) : last;
    // defineProperty: a `__proto__` key becomes an own key, exactly as JSON.parse would make it.
    Object.defineProperty(node, key, { value: PLACEHOLDER, enumerable: true, writable: true, configurable: true });
  }
  return JSON.stringify(copy).replace(`"${PLACEHOLDER}"`, () => raw);
}

// ---- hostile values (as JSON text) ----------------------------------------------------------

const deep = (depth: number, shape: 'array' | 'object', leaf = '1') =>
  shape === 'array' ? '['.repeat(depth) + leaf + ']'.repeat(depth) : '{"a":'.repeat(depth) + leaf + '}'.repeat(depth);

const EDGE_NUMBERS = [Number.MAX_VALUE, -Number.MAX_VALUE, Number.MIN_VALUE, -Number.MIN_VALUE, -0, 0, 1e308, -1e308, 1e15, 1e15 + 2, 1e-6, 1e-7, 0.1 + 0.2, 2 ** 53 - 1, 2 ** 53, 2 ** 31, -(2 ** 31), -1, 1.0000001, 123456.123456, 1000, 1000.0001, 5e-324];
/** Numbers that JSON.stringify cannot write: raw text, some not JSON at all. */
const RAW_NUMBERS = ['9007199254740993', '-9007199254740993', '1e309', '-1e309', '1e-400', 'NaN', '-NaN', 'Infinity', '-Infinity', '0x10', '1_000', '01', '-0', '-0.0', '.5', '5.', '+1', '1E+2', '123456789012345678901234567890', '0.1e-999999', '1e1000000000', '1e400', '-1e400'];

function edgeTimestamps(): string[] {
  const now = Date.now();
  return [
    '0000-01-01T00:00:00Z',
    '0000-01-01T00:00:00.000+00:00',
    '0001-01-01T00:00:00Z',
    '1969-12-31T23:59:59.999Z',
    '1970-01-01T00:00:00Z',
    '9999-12-31T23:59:59.999Z',
    '9999-12-31T23:59:59.999-23:59',
    '+275760-09-13T00:00:00Z',
    '+275760-09-13T00:00:00.001Z',
    '-271821-04-20T00:00:00Z',
    '-000001-01-01T00:00:00Z',
    '2016-12-31T23:59:60Z',
    '2026-06-30T23:59:60+00:00',
    '2026-01-01T24:00:00Z',
    '2026-02-29T00:00:00Z',
    '2024-02-29T00:00:00Z',
    '2026-02-30T00:00:00Z',
    '2026-13-01T00:00:00Z',
    '2026-01-01T00:00:00+14:00',
    '2026-01-01T00:00:00-12:00',
    '2026-01-01T00:00:00+23:59',
    '2026-01-01T00:00:00+24:00',
    '2026-01-01T00:00:00+99:99',
    '2026-01-01T00:00:00+0530',
    '2026-01-01T00:00:00',
    '2026-01-01',
    '2026-01-01T00:00:00.123456789Z',
    '2026-01-01T00:00:00,5Z',
    '2026-01-01t00:00:00z',
    '２０２６-01-01T00:00:00Z',
    ' 2026-01-01T00:00:00Z',
    '2026-01-01T00:00:00Z\u0000',
    new Date(now).toISOString(),
    new Date(now + 4 * 60_000).toISOString(),
    new Date(now + 6 * 60_000).toISOString(),
    new Date(now - 86_400_000).toISOString(),
    new Date(now - 40 * 86_400_000).toISOString(),
    new Date(now).toISOString().replace('Z', '+00:00'),
    new Date(now + 3_600_000).toISOString().replace('Z', '+01:00'),
    'T',
    '',
  ];
}

const HOSTILE_STRINGS = [
  '',
  ' ',
  '\u0000',
  'a\u0000b',
  '\ud800',
  '\udfff',
  'x\ud83d',
  '\ude00x',
  '\ud83d\ude00',
  "' OR 1=1 --",
  "'; DROP TABLE tenants; --",
  '$1',
  '?',
  '??',
  ':name',
  '%00',
  '../../etc/passwd',
  '__proto__',
  'constructor',
  'prototype',
  'toString',
  'hasOwnProperty',
  '\r\n{"level":60,"msg":"forged"}',
  '<script>alert(1)</script>',
  '{"$ne":null}',
  'x'.repeat(65),
  'x'.repeat(129),
  'x'.repeat(20_000),
  '\u202e\u0007\u001b[31m',
  '\ufeff',
  'Ω≈ç√∫',
  '😀'.repeat(200),
  'null',
  'true',
  '0',
  'USD',
  'month',
  'per_unit',
  'calls',
  'http://127.0.0.1:9/x',
  'file:///etc/passwd',
  'gopher://127.0.0.1:6379/_FLUSHALL',
  'javascript:alert(1)',
  'http://user:pass@169.254.169.254/latest/meta-data/',
  'a@b.c',
  'Europe/Paris',
  'Etc/GMT+14',
  'America/Argentina/ComodRivadavia',
  // The six characters \u0000 (a backslash, then u0000): text like any other, stored as sent.
  '\\u0000',
  'bs2\\u0000x',
  '\\\\u0000',
  // Money at and beyond the largest the API admits (18 integer digits, 10 decimals).
  '999999999999999999.9999999999',
  '1000000000000000000',
  '0.00000000001',
];

const PROTO_OBJECTS = [
  '{"__proto__":{"polluted":"yes","isAdmin":true}}',
  '{"constructor":{"prototype":{"polluted":"yes"}}}',
  '{"__proto__":null}',
  '{"__proto__":[]}',
  '{"prototype":{"x":1}}',
  '{"hasOwnProperty":1,"toString":2,"valueOf":3,"toJSON":4}',
  '{"a":{"__proto__":{"polluted":"yes"}},"b":[{"__proto__":{"polluted":"yes"}}]}',
  '[{"__proto__":{"polluted":"yes"}}]',
];

const loneSurrogates = fc.string({ unit: fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)), minLength: 1, maxLength: 4 });

/** Any hostile value, as JSON text (mostly valid JSON; some raw numbers are not). */
function hostileValueArb(): fc.Arbitrary<string> {
  return fc.oneof(
    { arbitrary: fc.constantFrom(...EDGE_NUMBERS).map((n) => (Object.is(n, -0) ? '-0' : JSON.stringify(n))), weight: 4 },
    { arbitrary: fc.constantFrom(...RAW_NUMBERS), weight: 3 },
    { arbitrary: fc.constantFrom(...edgeTimestamps()).map((s) => JSON.stringify(s)), weight: 5 },
    { arbitrary: fc.constantFrom(...HOSTILE_STRINGS).map((s) => JSON.stringify(s)), weight: 5 },
    { arbitrary: fc.string({ unit: 'binary', maxLength: 40 }).map((s) => JSON.stringify(s)), weight: 3 },
    { arbitrary: loneSurrogates.map((s) => JSON.stringify(`id${s}`)), weight: 2 },
    { arbitrary: fc.constantFrom(...PROTO_OBJECTS), weight: 3 },
    { arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)), weight: 4 },
    { arbitrary: fc.double().map((n) => (Number.isFinite(n) ? JSON.stringify(n) : String(n))), weight: 2 },
    { arbitrary: fc.date({ noInvalidDate: true }).map((d) => JSON.stringify(d.toISOString())), weight: 2 },
    { arbitrary: fc.tuple(fc.integer({ min: 30, max: 60_000 }), fc.constantFrom<'array' | 'object'>('array', 'object')).map(([d, s]) => deep(d, s)), weight: 2 },
    { arbitrary: fc.constantFrom('null', 'true', 'false', '[]', '{}', '""', '[null]', '[[]]'), weight: 2 },
    { arbitrary: fc.constantFrom(1_040_000, 1_050_000).map((n) => JSON.stringify('y'.repeat(n))), weight: 1 },
  );
}

// ---- raw hostile bodies ---------------------------------------------------------------------

const utf8 = (s: string) => Buffer.from(s, 'utf8');

/**
 * Bodies hostile at the byte level; each a factory so huge ones are built only when drawn.
 * `light` ones are small; `heavy` ones are deep or near 1 MiB and drawn less often.
 */
function rawBodies(): { light: Array<() => Buffer>; heavy: Array<() => Buffer> } {
  const event = (extra: string) => utf8(`{"events":[{"id":"raw-${++counter}","metric":"calls"${extra}}]}`);
  const light = [
    ...['{', '}', '{"a":}', '{"a":1,}', "{'a':1}", '[1,2', 'undefined', '', ' ', '\u0000', 'nul', 'tru', '{"a":1}{"b":2}', '{"a" 1}', '/* c */{}', '{"a":"\\x41"}', '{"a":"\\u12"}', '{"a":"open}', '"string"', '123', 'null', 'true', '[]', '{}', '[{}]', '{"events":[]}', '{"events":null}', '{"events":{}}'].map((s) => () => utf8(s)),
    () => utf8('\ufeff{"events":[]}'),
    ...['NaN', 'Infinity', '-Infinity', '1e309', '9007199254740993', '-0', '1e-400', '0.0000001'].map((n) => () => event(`,"quantity":${n}`)),
    ...['NaN', 'Infinity', '9007199254740993', '1e308', '5e-324'].map((n) => () => utf8(`{"metric":"calls","threshold":${n},"quantity":${n},"channel":{"type":"email","to":"a@b.c"}}`)),
    ...PROTO_OBJECTS.map((o) => () => utf8(o)),
    () => event(',"properties":{"__proto__":{"polluted":"yes"}}'),
    () => event(',"properties":{"constructor":{"prototype":{"polluted":"yes"}}}'),
    () => utf8('{"__proto__":{"polluted":"yes"},"events":[{"id":"p","metric":"calls","__proto__":{"quantity":5}}]}'),
    () => utf8('{"id":"x","name":"n","plan_id":"p","__proto__":{"polluted":"yes"}}'),
    // Lone surrogates: as JSON escapes, and as raw (invalid) UTF-8 bytes.
    () => event(',"properties":{"k":"\\ud800"}').subarray(0),
    () => utf8('{"events":[{"id":"\\udc00","metric":"calls"}]}'),
    () => utf8('{"name":"\\ud800\\ud800","reason":"\\udfff"}'),
    () => Buffer.concat([utf8('{"events":[{"id":"'), Buffer.from([0xed, 0xa0, 0x80]), utf8('","metric":"calls"}]}')]),
    () => Buffer.concat([utf8('{"reason":"'), Buffer.from([0xc0, 0xaf, 0xff, 0xfe]), utf8('"}')]),
    () => Buffer.from([0xff, 0xfe, 0x7b, 0x00, 0x7d, 0x00]),
    () => Buffer.from('{"events":[]}', 'utf16le'),
    // Bytes that are not UTF-8 in ids: each would decode to U+FFFD, so two ids would become one.
    ...[[0xff], [0xfe], [0xc0, 0xaf], [0xe2, 0x82], [0xf8, 0x88, 0x80, 0x80, 0x80]].map(
      (bytes) => () => Buffer.concat([utf8(`{"events":[{"id":"inv-${++counter}`), Buffer.from(bytes), utf8('","metric":"calls"}]}')]),
    ),
    () => Buffer.concat([utf8('{"id":"x","name":"'), Buffer.from([0xff]), utf8('","plan_id":"p"}')]),
    // Numbers beyond the double range, which a parser reads as infinity and writes as null.
    () => event(',"properties":{"big":1e400,"small":-1e400}'),
    // The six characters \u0000 (an escaped backslash, then u0000), in an id and a property.
    () => utf8(`{"events":[{"id":"bs-${++counter}\\\\u0000","metric":"calls","properties":{"note":"\\\\u0000"}}]}`),
    // One full batch of the largest quantities: 10^18 units, which storage must be able to invoice.
    () => {
      const batch = ++counter;
      return utf8(JSON.stringify({ events: Array.from({ length: 1_000 }, (_, i) => ({ id: `max-${batch}-${i}`, metric: 'calls', quantity: 1e15 })) }));
    },
    () => event(',"properties":{"nul":"\\u0000"}'),
    () => event(',"properties":{"\\u0000":"key"}'),
    () => utf8('{"events":[{"id":"a\\u0000b","metric":"calls"}]}'),
    ...[40, 3_000].map((d) => () => event(`,"properties":${deep(d, 'object')}`)),
    () => utf8(deep(1_000, 'array')),
  ];
  const heavy = [
    // Deep nesting, from thousands of levels to as deep as 1 MiB allows.
    ...[5_000, 50_000, 400_000].map((d) => () => utf8(deep(d, 'array'))),
    ...[1_000, 20_000, 100_000].map((d) => () => utf8(deep(d, 'object'))),
    () => event(`,"properties":${deep(100_000, 'object')}`),
    ...[2_000, 100_000].map((d) => () => utf8(`{"reason":"deep","plan_id":${deep(d, 'array', '"x"')}}`)),
    // Huge: strings near and over the 1 MiB limit, many keys, long arrays, too many events.
    () => utf8(`{"reason":"${'x'.repeat(1_048_576 - 20)}"}`),
    () => utf8(`{"reason":"${'x'.repeat(1_048_576)}"}`),
    () => utf8(`{"name":"${'😀'.repeat(262_000)}"}`),
    () => event(`,"properties":{"pad":"${'x'.repeat(1_000_000)}"}`),
    () => utf8(`{${Array.from({ length: 60_000 }, (_, i) => `"k${i}":${i}`).join(',')}}`),
    () => utf8(`[${'1,'.repeat(500_000)}1]`),
    () => utf8(JSON.stringify({ events: Array.from({ length: 1_001 }, (_, i) => ({ id: `too-many-${i}`, metric: 'calls' })) })),
  ];
  return { light, heavy };
}

/** Content types (and encodings) a client might send instead of plain JSON. */
const CONTENT_TYPES: Array<{ type?: string; encoding?: string; gzip?: boolean }> = [
  { type: 'application/json' },
  { type: 'application/json' },
  { type: 'application/json' },
  { type: 'application/json; charset=utf-8' },
  { type: 'Application/JSON' },
  { type: 'application/merge-patch+json' },
  { type: 'application/json; charset=utf-16' },
  { type: 'application/json; charset=iso-8859-1' },
  { type: 'application/json; charset="bogus"' },
  { type: 'text/plain' },
  { type: 'application/x-www-form-urlencoded' },
  { type: 'multipart/form-data; boundary=x' },
  { type: 'application/xml' },
  { type: 'application/octet-stream' },
  { type: ';;;' },
  {},
  { type: 'application/json', encoding: 'gzip' },
  { type: 'application/json', encoding: 'gzip', gzip: true },
  { type: 'application/json', encoding: 'deflate' },
  { type: 'application/json', encoding: 'br' },
  { type: 'application/json', encoding: 'compress' },
  { type: 'application/json', encoding: 'identity' },
];

/** A gzip bomb: 64 MiB of spaces inflate far past the 1 MiB limit. */
let bomb: Buffer | undefined;
const gzipBomb = () => (bomb ??= zlib.gzipSync(Buffer.alloc(64 * 1024 * 1024, 0x20), { level: 9 }));

// ---- the properties -------------------------------------------------------------------------

interface Planned {
  route: RouteName;
  key: KeyKind;
  wire: Wire;
}

/** How one request is sent: `contentType` undefined sends `application/json`, null sends none. */
interface WireOptions {
  contentType?: string | null;
  headers?: Record<string, string>;
  hostileId?: string;
  live?: boolean;
}

function wireFor(route: RouteName, key: KeyKind, body: Buffer | undefined, options: WireOptions = {}): Planned {
  const path = pathFor(route, options.live === true, options.hostileId);
  const used = safeKey(route, key, path);
  const headers: Record<string, string> = { ...keyHeaders(used), ...options.headers };
  if (body !== undefined && options.contentType !== null) headers['content-type'] = options.contentType ?? 'application/json';
  return { route, key: used, wire: { method: WRITE_ROUTES[route].method, path, headers, body } };
}

const routeArb = fc.constantFrom(...ROUTE_NAMES);

/** Random JSON of any shape, including objects with prototype-pollution keys, to every write route. */
const randomJsonRequest = fc
  .tuple(
    routeArb,
    keyArb,
    fc.oneof(
      fc.jsonValue(),
      fc.object({ maxDepth: 3, key: fc.oneof(fc.string(), fc.constantFrom('__proto__', 'constructor', 'prototype', 'events', 'id', 'metric', 'quantity', 'reason', 'finalize')), values: [fc.jsonValue({ maxDepth: 2 })] }),
      fc.record({ events: fc.array(fc.object({ maxDepth: 2, values: [fc.jsonValue({ maxDepth: 2 })] }), { maxLength: 5 }) }),
    ),
  )
  .map(([route, key, value]) => wireFor(route, key, utf8(JSON.stringify(value) ?? 'null')));

const rawBodyRequest = fc.tuple(routeArb, keyArb, fc.nat(), fc.constantFrom(...CONTENT_TYPES)).map(([route, key, pick, ct]) => {
  const { light, heavy } = rawBodies();
  // About one request in sixteen is heavy (near 1 MiB, or nested hundreds of thousands deep).
  const bodies = pick % 16 === 0 ? heavy : light;
  let body = ct.gzip ? gzipBomb() : bodies[Math.floor(pick / 16) % bodies.length]!();
  if (ct.encoding === 'gzip' && !ct.gzip && pick % 2 === 0) body = zlib.gzipSync(body);
  return wireFor(route, key, body, { contentType: ct.type ?? null, headers: ct.encoding ? { 'content-encoding': ct.encoding } : {} });
});

/** A valid body with one field (or the whole body) replaced by a hostile value. */
const mutationRequest = fc
  .tuple(routeArb.filter((r) => MUTABLE[r].length > 1), keyArb, fc.nat(), hostileValueArb(), fc.option(fc.constantFrom(' ', '\u0007', 'x'.repeat(300), 'key-1', 'ok'), { nil: undefined }))
  .map(([route, key, pick, raw, idem]) => {
    const spots = MUTABLE[route];
    const where = spots[pick % spots.length]!;
    const body = mutate(baseBody(route, key), where, raw);
    // The rerun honours Idempotency-Key: printable ASCII only; header values a client can send.
    const extra: Record<string, string> = route === 'rerun' && idem !== undefined && /^[\x20-\x7e]*$/.test(idem) && idem.trim() !== '' ? { 'idempotency-key': idem } : {};
    return wireFor(route, key, utf8(body), { headers: extra, live: true });
  });

/** Hostile ids in the path of every route that takes one. */
const pathRequest = fc
  .tuple(routeArb.filter((r) => WRITE_ROUTES[r].pattern.includes('{}')), keyArb, pathIdArb)
  .map(([route, key, id]) => wireFor(route, key, utf8(JSON.stringify(baseBody(route, key))), { hostileId: id }));

const batchOf = (arb: fc.Arbitrary<Planned>, size: number) => fc.array(arb, { minLength: size, maxLength: size });

/**
 * Runs one property from fresh fixtures, then checks what must hold once it is done: every batch
 * was sent, enough were refused whole (JUDGED), every event acknowledged for A is stored, and A's
 * workflow runs without a failed workflow task. Any failure names the seed that replays it.
 */
async function fuzz(name: keyof typeof RUNS, arb: fc.Arbitrary<Planned>): Promise<void> {
  const setUpAt = Date.now();
  await freshFixtures();
  const setUpMs = Date.now() - setUpAt;
  startedAt = Date.now();
  try {
    await fc.assert(fc.asyncProperty(batchOf(arb, BATCH[name]), runBatch), { numRuns: RUNS[name], endOnFailure: true, seed: FUZZ_SEED });
    await checkAfterFuzzing(name);
  } catch (err) {
    if (err instanceof Error) err.message = `FUZZ_SEED=${FUZZ_SEED} replays this run: ${err.message}`;
    throw err;
  }
  report(
    `fuzz ${name} (seed ${FUZZ_SEED}): fixtures ${setUpMs} ms, then ${requestsSent} requests in ${((Date.now() - startedAt) / 1000).toFixed(1)} s (${timing.batches} batches, ${timing.checked} all refused and checked unchanged: ` +
      `sending ${timing.sending} ms, snapshots ${timing.snapshots} ms, ${timing.settles} settles ${timing.settling} ms); accepted ${JSON.stringify(timing.accepted)}; ${acceptedForA.size} events acknowledged for A`,
  );
}

async function checkAfterFuzzing(name: keyof typeof RUNS): Promise<void> {
  expect(requestsSent).toBe(RUNS[name] * BATCH[name]);
  expect(timing.checked).toBeGreaterThanOrEqual(timing.batches * JUDGED[name]);
  await settle(unsettled.invoices);
  const stored = new Set<string>([
    ...(await api.db('usage_events').where({ tenant_id: A.id }).pluck('event_id')),
    ...(await api.db('rejected_events').where({ tenant_id: A.id }).pluck('event_id')),
  ]);
  const missing = [...acceptedForA].filter((id) => !stored.has(id));
  expect(missing).toEqual([]);
  const handle = api.client.workflow.getHandle(tenantWorkflowId(A.id));
  expect((await handle.describe()).status.name).toBe('RUNNING');
  const history = await handle.fetchHistory();
  const failedTasks = (history.events ?? []).filter((e) => e.workflowTaskFailedEventAttributes);
  expect(failedTasks).toHaveLength(0);
}

describe('fuzzing every write route through HTTP', () => {
  test('the properties send over 10,000 requests in all', () => {
    const total = (Object.keys(RUNS) as Array<keyof typeof RUNS>).reduce((n, k) => n + RUNS[k] * BATCH[k], 0);
    expect(total).toBeGreaterThanOrEqual(10_000);
  });

  test('random JSON values and objects: never a 5xx, always problem+json, refused requests change nothing', async () => {
    await fuzz('randomJson', randomJsonRequest);
  }, 300_000);

  test('hostile raw bodies (malformed, deep, huge, lone surrogates, NaN, gzip bombs, wrong content types)', async () => {
    await fuzz('rawBodies', rawBodyRequest);
  }, 300_000);

  test('valid bodies with one hostile field (edge numbers and timestamps, proto keys, NUL, SQL, deep, huge)', async () => {
    await fuzz('mutations', mutationRequest);
  }, 300_000);

  test('hostile path ids (NUL, bad UTF-8, lone surrogates, traversal, SQL) on every route that takes one', async () => {
    await fuzz('paths', pathRequest);
  }, 300_000);
});

// ---- the security fixes the fuzzing led to, pinned --------------------------------------------

describe('security regressions', () => {
  beforeAll(freshFixtures);

  test('every write route of the API is fuzzed', () => {
    const root = path.resolve(__dirname, '../../src/api');
    const app = fs.readFileSync(path.join(root, 'app.ts'), 'utf8');
    const mounts = new Map<string, string>();
    for (const m of app.matchAll(/import\s*\{([^}]+)\}\s*from\s*'\.\/routes\/([\w.-]+)'/g)) for (const name of m[1]!.split(',')) mounts.set(name.trim(), m[2]!);
    const declared: string[] = [];
    for (const m of app.matchAll(/\bv1\.use\(\s*(?:'([^']*)'\s*,\s*)?(\w+)\(/g)) {
      const file = mounts.get(m[2]!);
      if (!file) continue;
      const source = fs.readFileSync(path.join(root, 'routes', `${file}.ts`), 'utf8');
      for (const r of source.matchAll(/\.(post|put|patch|delete)\(\s*(['"`])(\/[^'"`]*)\2/g)) {
        declared.push(`${r[1]!.toUpperCase()} /v1${m[1] ?? ''}${r[3] === '/' ? '' : r[3]}`.replace(/:\w+/g, '{}'));
      }
    }
    const fuzzed = Object.values(WRITE_ROUTES).map((r) => `${r.method} ${r.pattern}`);
    expect([...new Set(fuzzed)].sort()).toEqual([...new Set(declared)].sort());
  });

  test('text PostgreSQL cannot store (NUL, lone surrogates) and deep nesting are refused at the door with 422', async () => {
    const cases: Array<{ method: string; path: string; key?: string; raw: string; at: string }> = [
      { method: 'POST', path: '/v1/events', key: A.key, raw: '{"events":[{"id":"nul\\u0000id","metric":"calls"}]}', at: 'events.0.id' },
      { method: 'POST', path: '/v1/events', key: A.key, raw: '{"events":[{"id":"sur\\ud800","metric":"calls"}]}', at: 'events.0.id' },
      { method: 'POST', path: '/v1/events', key: A.key, raw: '{"events":[{"id":"p1","metric":"calls","properties":{"k":"\\u0000"}}]}', at: 'events.0.properties.k' },
      { method: 'POST', path: '/v1/events', key: A.key, raw: '{"events":[{"id":"p2","metric":"calls","properties":{"a\\u0000":1}}]}', at: 'events.0.properties' },
      { method: 'POST', path: '/v1/events', key: A.key, raw: `{"events":[{"id":"p3","metric":"calls","properties":${deep(40, 'object')}}]}`, at: 'events.0.properties' },
      { method: 'POST', path: '/v1/events', key: A.key, raw: `{"events":[{"id":"p4","metric":"calls","properties":${deep(10_000, 'array')}}]}`, at: 'events.0.properties' },
      { method: 'POST', path: '/v1/plans', raw: JSON.stringify(PLAN(unique('nul'), { name: 'bad\u0000name' })), at: 'name' },
      { method: 'POST', path: '/v1/tenants', raw: JSON.stringify({ id: unique('sur'), name: 'x\ud800', plan_id: planId }), at: 'name' },
      { method: 'PATCH', path: `/v1/tenants/${A.id}`, key: A.key, raw: '{"name":"a\\u0000"}', at: 'name' },
    ];
    for (const c of cases) {
      const res = await api.call(c.method, c.path, { key: c.key ?? api.adminKey, raw: c.raw });
      expect({ case: c.raw.slice(0, 80), status: res.status, code: res.body?.code }).toEqual({ case: c.raw.slice(0, 80), status: 422, code: 'validation_failed' });
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      expect(res.body.errors[0].path.startsWith(c.at)).toBe(true);
    }
    // Nothing of it reached the workflow: A still settles and counts a good event.
    const id = next('after-nul');
    const ok = await api.call('POST', '/v1/events', { key: A.key, raw: `{"events":[{"id":"${id}","metric":"calls","properties":${deep(5, 'object')}}]}` });
    expect(ok.status).toBe(202);
    const usage = await api.call('GET', `/v1/tenants/${A.id}/usage?consistent=true`, { key: A.key });
    expect(usage.status).toBe(200);
    expect(usage.body.pending_events).toBe(0);
  });

  test('names every JavaScript object has (constructor, __proto__, toString) are refused as meter names and authorize ids', async () => {
    for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf']) {
      const authorize = await api.call('POST', `/v1/tenants/${A.id}/authorize`, { key: A.key, body: { id: name, metric: 'calls', quantity: 1 } });
      expect({ name, status: authorize.status, code: authorize.body?.code }).toEqual({ name, status: 422, code: 'validation_failed' });
    }
    const plan = await api.call('POST', '/v1/plans', { body: PLAN(unique('ctor'), { meters: [{ metric: 'constructor', aggregation: 'sum', limit: 100, pricing: { model: 'per_unit', unit_price: '1' } }] }) });
    expect(plan.status).toBe(422);
    expect(plan.body.errors).toEqual([{ path: 'meters.0.metric', message: expect.stringContaining('reserved') }]);
    // The same ids in ingest are fine: events are deduplicated in a Set and in PostgreSQL.
    const ingest = await api.call('POST', '/v1/events', { key: A.key, body: { events: [{ id: 'constructor', metric: 'calls' }, { id: 'toString', metric: 'calls' }] } });
    expect(ingest.status).toBe(202);
    const usage = await api.call('GET', `/v1/tenants/${A.id}/usage?consistent=true`, { key: A.key });
    expect(usage.status).toBe(200);
    expect(usage.body.pending_events).toBe(0);
  });

  test('API keys and Authorization headers never reach the logs; each log line stays one JSON object', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
        done();
      },
    });
    const logger = pino({ level: 'trace' }, sink);
    const app = createApp({ db: api.db, temporal: api.client, taskQueue: api.taskQueue, namespace: 'default', adminKey: api.adminKey, logger });
    const server = await listen(app, 0, '127.0.0.1');
    try {
      const base = `http://127.0.0.1:${server.port}`;
      await fetch(`${base}/v1/tenants/${A.id}`, { headers: { 'x-api-key': A.key } });
      await fetch(`${base}/v1/tenants/${A.id}`, { headers: { authorization: `Bearer ${api.adminKey}` } });
      await fetch(`${base}/v1/plans`, { headers: { 'x-api-key': 'tk_wrong_key_for_the_logs', cookie: 'session=secret-cookie' } });
      await fetch(`${base}/v1/tenants/a%0Ab%0D%0A%7B%22level%22%3A60%7D`, { headers: { 'x-api-key': api.adminKey, 'user-agent': 'evil\t{"level":60}' } });
      const rotated = await fetch(`${base}/v1/tenants/${E.id}/webhook-secret`, { method: 'POST', headers: { 'x-api-key': api.adminKey } });
      const secret = ((await rotated.json()) as { webhook_secret: string }).webhook_secret;
      await new Promise((r) => setTimeout(r, 100));
      const all = lines.join('\n');
      expect(lines.length).toBeGreaterThanOrEqual(5);
      for (const secretValue of [A.key, api.adminKey, 'tk_wrong_key_for_the_logs', 'secret-cookie', secret]) expect(all).not.toContain(secretValue);
      for (const line of lines) expect(() => JSON.parse(line)).not.toThrow();
      expect(lines.some((l) => JSON.parse(l).req?.headers?.['x-api-key'] === '[redacted]')).toBe(true);
    } finally {
      await server.close();
    }
  });

  test('webhook URLs must be http(s) without credentials: other schemes and user:password@ are refused on every route that takes one', async () => {
    const refused = [
      'file:///etc/passwd',
      'gopher://127.0.0.1:6379/_FLUSHALL',
      'javascript:alert(1)',
      'ftp://127.0.0.1/x',
      'data:text/plain,hi',
      'ws://127.0.0.1/x',
      // Credentials in the URL: every failed attempt would copy the password into last_error and the logs.
      'http://user:s3cret@127.0.0.1:9/hook',
      'https://:s3cret@example.com/hook',
      'https://user@example.com/hook',
    ];
    for (const url of refused) {
      const created = await api.call('POST', '/v1/tenants', { body: { id: unique('ssrf'), name: 'x', plan_id: planId, webhook_url: url } });
      const patched = await api.call('PATCH', `/v1/tenants/${A.id}`, { key: A.key, body: { webhook_url: url } });
      const rule = await api.call('POST', `/v1/tenants/${A.id}/alert-rules`, { key: A.key, body: { metric: 'calls', threshold: 50, channel: { type: 'webhook', url } } });
      expect({ url, statuses: [created.status, patched.status, rule.status] }).toEqual({ url, statuses: [422, 422, 422] });
    }
  });

  test('webhook URLs reaching internal addresses (disguised IPv4, IPv6 forms, names resolving to loopback, metadata) are refused on every route by the default policy', async () => {
    // The harness API opts in to local receivers; this one has the production default.
    const app = createApp({ db: api.db, temporal: api.client, taskQueue: api.taskQueue, namespace: 'default', adminKey: api.adminKey, logger: pino({ level: 'silent' }) });
    const server = await listen(app, 0, '127.0.0.1');
    const base = `http://127.0.0.1:${server.port}`;
    const T = await createTenant();
    const internal = fc.oneof(internalIpv4(), fc.constant([0, 0, 0, 0]));
    const hex = (n: number) => n.toString(16);
    const disguised = internal.chain((p) => {
      const n = ((p[0]! * 256 + p[1]!) * 256 + p[2]!) * 256 + p[3]!;
      return fc.constantFrom(
        p.join('.'),
        String(n), // decimal
        `0x${hex(n)}`, // one hex number
        p.map((o) => `0${o.toString(8)}`).join('.'), // octal octets
        `${p[0]}.${p[1]! * 65536 + p[2]! * 256 + p[3]!}`, // a.bcd
        `[::ffff:${p.join('.')}]`, // IPv4-mapped
        `[::ffff:${hex(p[0]! * 256 + p[1]!)}:${hex(p[2]! * 256 + p[3]!)}]`,
        `[2002:${hex(p[0]! * 256 + p[1]!)}:${hex(p[2]! * 256 + p[3]!)}::1]`, // 6to4
        `[64:ff9b::${p.join('.')}]`, // NAT64
      );
    });
    const ipv6 = fc.constantFrom('[::1]', '[0:0:0:0:0:0:0:1]', '[::]', '[fd00:ec2::254]', '[FD00:EC2::254]', '[fc00::1]', '[fdff:ffff::1]', '[fe80::1]', '[febf::1]', '[ff02::1]');
    const names = fc.constantFrom('localhost', 'LOCALHOST', 'LocalHost');
    const host = fc.oneof(disguised, ipv6, names);
    const url = fc
      .record({ scheme: fc.constantFrom('https', 'http'), host, port: fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }), path: fc.constantFrom('/', '/hooks', '/latest/meta-data/', '/a?b=c#d') })
      .map(({ scheme, host, port, path }) => `${scheme}://${host}${port ? `:${port}` : ''}${path}`);
    const call = async (method: string, path: string, key: string, body: unknown) => {
      const res = await fetch(`${base}${path}`, { method, headers: { 'x-api-key': key, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      return { status: res.status, body: (await res.json()) as { code?: string; errors?: Array<{ path: string }> } };
    };
    let sent = 0;
    try {
      await fc.assert(
        fc.asyncProperty(url, async (target) => {
          const id = unique('ssrf');
          const answers = [
            [await call('POST', '/v1/tenants', api.adminKey, { id, name: 'x', plan_id: planId, webhook_url: target }), 'webhook_url'],
            [await call('PATCH', `/v1/tenants/${T.id}`, T.key, { webhook_url: target }), 'webhook_url'],
            [await call('POST', `/v1/tenants/${T.id}/alert-rules`, T.key, { metric: 'calls', threshold: 50, channel: { type: 'webhook', url: target } }), 'channel.url'],
          ] as const;
          sent += answers.length;
          for (const [answer, field] of answers) {
            expect({ target, status: answer.status, code: answer.body.code, field: answer.body.errors?.[0]?.path }).toEqual({ target, status: 422, code: 'webhook_target_refused', field });
          }
        }),
        { numRuns: 60, seed: FUZZ_SEED, endOnFailure: true },
      );
      const tenant = await api.db('tenants').where({ id: T.id }).first();
      expect([tenant.webhook_url, tenant.webhook_secret]).toEqual([null, null]);
      expect(await api.db('alert_rules').where({ tenant_id: T.id })).toEqual([]);
      report(`webhook targets: ${sent} requests refused`);
    } finally {
      await server.close();
    }
  });

  test('no answer ever carries a stored secret: key hashes, webhook secrets, other keys', async () => {
    const t = await createTenant({ webhook_url: 'http://127.0.0.1:9/hook' });
    const secret = t.body.webhook_secret as string;
    expect(secret).toMatch(/^whsec_/);
    const hashes: string[] = await api.db('api_keys').where({ tenant_id: t.id }).pluck('key_hash');
    const reads = [`/v1/tenants/${t.id}`, '/v1/tenants?limit=100', `/v1/tenants/${t.id}/alert-rules`, `/v1/tenants/${t.id}/deliveries`, `/v1/tenants/${t.id}/periods`, `/v1/tenants/${t.id}/usage`];
    for (const p of reads) {
      for (const key of [t.key, api.adminKey]) {
        const res = await api.call('GET', p, { key });
        if (key === t.key && p.startsWith('/v1/tenants?')) continue; // admin only
        expect({ p, status: res.status }).toEqual({ p, status: 200 });
        const text = JSON.stringify(res.body);
        for (const s of [secret, t.key, A.key, ...hashes]) expect(text).not.toContain(s);
      }
    }
  });

  test('per-process caches stay bounded however many tenants are named: 50,000 tenant contexts', async () => {
    // Every lookup, even of an unknown tenant, is cached for a moment; the cache must not grow with them.
    const noTenants = (() => ({ where: () => ({ first: async () => undefined }) })) as unknown as ConstructorParameters<typeof TenantDirectory>[0];
    const directory = new TenantDirectory(noTenants);
    for (let i = 0; i < 50_100; i++) expect(await directory.get(`t${i}`)).toBeUndefined();
    expect((directory as unknown as { cache: Map<string, unknown> }).cache.size).toBeLessThanOrEqual(50_000);
  });

  test('the amounts the API admits are invoiced: fixed-seed batches of the largest quantities at the largest prices', async () => {
    // 18 integer digits and 10 decimals: the largest price, fee and cost limit a plan may have.
    const MAX_PRICE = '999999999999999999.9999999999';
    const planAnswer = await api.call('POST', '/v1/plans', {
      body: PLAN(unique('fzmax'), {
        base_fee: MAX_PRICE,
        cost_limit: MAX_PRICE,
        meters: [
          { metric: 'calls', aggregation: 'sum', limit: Number.MAX_VALUE, pricing: { model: 'per_unit', unit_price: MAX_PRICE } },
          { metric: 'tokens', aggregation: 'count', pricing: { model: 'graduated', tiers: [{ up_to: 1000, unit_price: MAX_PRICE, flat_fee: MAX_PRICE }, { up_to: null, unit_price: MAX_PRICE }] } },
          { metric: 'storage', aggregation: 'max', pricing: { model: 'package', package_size: 0.000001, package_price: MAX_PRICE } },
        ],
      }),
    });
    expect(planAnswer.status).toBe(201);
    const plan = planAnswer.body as PlanVersion;
    const tenantId = unique('fzmax');
    const created = await api.call('POST', '/v1/tenants', { body: { id: tenantId, name: 'Largest', plan_id: plan.id } });
    expect(created.status).toBe(201);
    const key = created.body.api_key as string;
    // One batch of 10^15 each, then two drawn from the seed: the largest, whole and fractional quantities.
    const quantity = fc.oneof(fc.constant(1e15), fc.integer({ min: 0, max: 1e15 }), fc.integer({ min: 0, max: 1e12 }).map((n) => n / 1e6));
    const drawn = fc.sample(fc.array(fc.record({ metric: fc.constantFrom('calls', 'tokens', 'storage'), quantity }), { minLength: 2_000, maxLength: 2_000 }), { numRuns: 1, seed: FUZZ_SEED })[0]!;
    const events = [...Array.from({ length: 1_000 }, () => ({ metric: 'calls', quantity: 1e15 })), ...drawn].map((e, i) => ({ id: `max-${i}`, ...e }));
    for (let i = 0; i < events.length; i += 1_000) {
      expect((await api.call('POST', '/v1/events', { key, body: { events: events.slice(i, i + 1_000) } })).status).toBe(202);
    }
    const usage = await api.call('GET', `/v1/tenants/${tenantId}/usage?consistent=true`, { key });
    expect(usage.body.pending_events).toBe(0);
    const close = await api.call('POST', `/v1/tenants/${tenantId}/close-period`, { body: { finalize: true } });
    expect(close.status).toBe(200);
    const invoice = await eventually(async () => {
      const res = await api.call('GET', `/v1/invoices/${close.body.invoice_id}`, { key });
      return res.body?.status === 'finalized' ? res.body : undefined;
    }, 30_000, 'the invoice of the largest amounts');
    // The counters, recomputed here from what was sent, rated as the domain rates them.
    const of = (metric: string) => events.filter((e) => e.metric === metric).map((e) => e.quantity);
    const counters = {
      calls: toDecimalString(of('calls').reduce((sum, q) => sum.plus(q), new Dec(0))),
      tokens: String(of('tokens').length),
      storage: toDecimalString(Dec.max(0, ...of('storage'))),
    };
    const rated = ratePeriod(plan, counters);
    expect(invoice.total).toBe(rated.total);
    expect(invoice.lines.map((l: { metric: string; amount: string }) => [l.metric, l.amount])).toEqual(rated.lines.map((l) => [l.metric, l.amount]));
  });

  test('the largest requests the API accepts, sent at once: every event is stored and counted, and the tenant keeps working (issue 17, item 2)', async () => {
    const planAnswer = await api.call('POST', '/v1/plans', { body: PLAN(unique('fzbig')) });
    expect(planAnswer.status).toBe(201);
    const tenantId = unique('fzbig');
    const created = await api.call('POST', '/v1/tenants', { body: { id: tenantId, name: 'Largest requests', plan_id: (planAnswer.body as PlanVersion).id } });
    const key = created.body.api_key as string;
    const metric = (planAnswer.body as PlanVersion).meters[0]!.metric;
    // Each request: 1,000 events whose properties fill it to just under 1 MiB, sized by the seed.
    const fills = fc.sample(fc.integer({ min: 600, max: 950 }), { numRuns: 4, seed: FUZZ_SEED });
    const bodies = fills.map((fill, r) => ({
      events: Array.from({ length: 1_000 }, (_, i) => ({ id: `big-${r}-${i}`, metric, quantity: 1, properties: { note: 'x'.repeat(fill), n: i } })),
    }));
    for (const body of bodies) expect(Buffer.byteLength(JSON.stringify(body))).toBeLessThan(1024 * 1024);
    const answers = await Promise.all(bodies.map((body) => api.call('POST', '/v1/events', { key, body })));
    expect(answers.map((a) => a.status)).toEqual(bodies.map(() => 202));
    const usage = await api.call('GET', `/v1/tenants/${tenantId}/usage?consistent=true`, { key });
    expect(usage.status).toBe(200);
    expect(usage.body.pending_events).toBe(0);
    expect(usage.body.metrics[metric].used).toBe(bodies.length * 1_000);
    expect((await api.call('POST', `/v1/tenants/${tenantId}/close-period`, { body: { finalize: true } })).status).toBe(200);
  });

  test('the admin key comparison is exact for keys of any length (SHA-256 digests compared with timingSafeEqual)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), fc.string({ unit: 'binary', maxLength: 200 }), (a, b) => {
        expect(safeEqual(a, b)).toBe(a === b);
        expect(safeEqual(a, a)).toBe(true);
      }),
      { numRuns: 500, seed: FUZZ_SEED },
    );
    expect(safeEqual(api.adminKey, `${api.adminKey}x`)).toBe(false);
    expect(safeEqual(api.adminKey, api.adminKey.slice(0, -1))).toBe(false);
    expect(safeEqual('', api.adminKey)).toBe(false);
  });
});
