import fs from 'node:fs';
import http from 'node:http';
import { join, resolve } from 'node:path';
import type { AddressInfo } from 'node:net';
import { startApiHarness, eventually, type ApiHarness } from '../support/api-harness';
import { unique } from '../support/stack';
import { startSmtpInbox, type SmtpInbox } from '../support/smtp-inbox';
import { verifyBillingSignature } from '../../src/notifications/verify-signature';
import { MAX_ALERT_RULES_PER_TENANT } from '../../src/db/alerts';
import type { BillingActivities } from '../../src/activities';

/**
 * Alert and invoice notifications through the real stack: signed webhooks to a local receiver
 * (retries, exactly one success per event id, a receiver that never recovers), email through a
 * local SMTP server, alert rules created mid-period, and `invoice.finalized` after a close.
 */

// ---- a local webhook receiver ---------------------------------------------------------------

interface Received {
  path: string;
  signature: string | undefined;
  raw: string;
  body: any;
  answered: number;
}

/** Answers by path: `/flaky-*` fails twice then succeeds, `/down-*` always fails, else 200. */
function startReceiver(): Promise<{ url: string; requests: Received[]; close(): Promise<void> }> {
  const requests: Received[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '/';
      const raw = Buffer.concat(chunks).toString('utf8');
      const earlier = requests.filter((r) => r.path === path).length;
      const answered = path.startsWith('/down-') ? 503 : path.startsWith('/flaky-') && earlier < 2 ? 500 : 200;
      let body: any;
      try {
        body = JSON.parse(raw);
      } catch {
        body = undefined;
      }
      requests.push({ path, signature: req.headers['x-billing-signature'] as string | undefined, raw, body, answered });
      res.writeHead(answered, { 'content-type': 'text/plain' }).end(answered === 200 ? 'ok' : 'nope');
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      resolve({
        url: `http://127.0.0.1:${port}`,
        requests,
        close: () => new Promise<void>((done) => server.close(() => done())),
      });
    });
  });
}

// ---- the stack ------------------------------------------------------------------------------

let api: ApiHarness;
let receiver: Awaited<ReturnType<typeof startReceiver>>;
let smtp: SmtpInbox;
let planId: string;

beforeAll(async () => {
  receiver = await startReceiver();
  smtp = await startSmtpInbox();
  // Four attempts (1 s, 2 s, 4 s apart under the workflow's retry policy) keep the give-up short.
  api = await startApiHarness({ notifier: { smtpUrl: `smtp://127.0.0.1:${smtp.port}`, maxAttempts: 4 }, wrapActivities: holdingFirstClaims });
  planId = unique('notify');
  const plan = await api.call('POST', '/v1/plans', {
    body: {
      id: planId,
      name: 'Tokens',
      currency: 'USD',
      interval: 'month',
      base_fee: '0.00',
      grace_period_seconds: 0,
      meters: [{ metric: 'tokens', aggregation: 'sum', limit: 1000, pricing: { model: 'per_unit', unit_price: '0.01' } }],
    },
  });
  expect(plan.status).toBe(201);
});

afterAll(async () => {
  await api?.stop();
  await receiver?.close();
  await smtp?.close();
});

async function createTenant(extra: Record<string, unknown> = {}, id = unique('nt')) {
  const res = await api.call('POST', '/v1/tenants', { body: { id, name: `Tenant ${id}`, plan_id: planId, ...extra } });
  expect(res.status).toBe(201);
  return { id, key: res.body.api_key as string, secret: res.body.webhook_secret as string | undefined, body: res.body };
}

let seq = 0;
async function use(tenant: { key: string }, quantity: number) {
  const res = await api.call('POST', '/v1/events', { key: tenant.key, body: { events: [{ id: `e${++seq}`, metric: 'tokens', quantity }] } });
  expect(res.status).toBe(202);
}

function requestsFor(path: string, eventId?: string): Received[] {
  return receiver.requests.filter((r) => r.path === path && (eventId === undefined || r.body?.id === eventId));
}

/** Successful (2xx-answered) deliveries per event id at one receiver path. */
function successesByEvent(path: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const r of requestsFor(path)) if (r.answered >= 200 && r.answered < 300) counts.set(r.body.id, (counts.get(r.body.id) ?? 0) + 1);
  return counts;
}

const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Tenants whose run's first claim is held back before it counts, each with what to call as it begins. */
const heldFirstClaims = new Map<string, () => void>();
const HELD_CLAIM_MS = 1_500;

/** The worker's real activities, but a held tenant's first claim waits `HELD_CLAIM_MS` first. */
function holdingFirstClaims(activities: BillingActivities): BillingActivities {
  return {
    ...activities,
    async claimUsage(input) {
      const began = heldFirstClaims.get(input.tenant_id);
      if (began) {
        heldFirstClaims.delete(input.tenant_id);
        began();
        await settle(HELD_CLAIM_MS);
      }
      return activities.claimUsage(input);
    },
  };
}

// ---- tests ----------------------------------------------------------------------------------

test('a webhook that fails twice is delivered on the third attempt, signed, exactly once', async () => {
  const path = `/flaky-${unique('w')}`;
  const tenant = await createTenant({ webhook_url: `${receiver.url}${path}` });
  expect(tenant.secret).toMatch(/^whsec_[0-9a-f]{64}$/);
  // The secret is shown once: never in later reads.
  const read = await api.call('GET', `/v1/tenants/${tenant.id}`, { key: tenant.key });
  expect(read.body.webhook_secret).toBeUndefined();
  expect(JSON.stringify(read.body)).not.toContain(tenant.secret);

  await use(tenant, 850); // 85 %: the 80 % alert
  const delivered = await eventually(async () => requestsFor(path).find((r) => r.answered === 200), 30_000, 'the third attempt');
  expect(delivered.body).toMatchObject({
    type: 'alert.triggered',
    data: { tenant_id: tenant.id, metric: 'tokens', threshold: 80, level: 'warning', used: 850, limit: 1000 },
  });
  expect(Object.keys(delivered.body)).toEqual(['id', 'type', 'created_at', 'data']);
  const eventId = delivered.body.id as string;

  // Every attempt carried a valid signature over the exact raw body; the first two were refused.
  const attempts = requestsFor(path, eventId);
  expect(attempts.map((r) => r.answered)).toEqual([500, 500, 200]);
  for (const r of attempts) expect(verifyBillingSignature(r.raw, r.signature, tenant.secret!)).toEqual({ ok: true, timestamp: expect.any(Number) });

  // What a receiver must refuse: another secret, a changed body, a replay after the tolerance.
  const t = Number(/t=(\d+)/.exec(delivered.signature!)![1]);
  expect(verifyBillingSignature(delivered.raw, delivered.signature, 'whsec_other').ok).toBe(false);
  expect(verifyBillingSignature(delivered.raw.replace('850', '851'), delivered.signature, tenant.secret!)).toEqual({ ok: false, reason: 'signature_mismatch' });
  expect(verifyBillingSignature(delivered.raw, delivered.signature, tenant.secret!, { now: t + 301 })).toEqual({ ok: false, reason: 'timestamp_out_of_tolerance' });
  expect(verifyBillingSignature(delivered.raw, delivered.signature, tenant.secret!, { now: t + 299 }).ok).toBe(true);
  expect(verifyBillingSignature(delivered.raw, undefined, tenant.secret!)).toEqual({ ok: false, reason: 'malformed_header' });

  // More usage past the same threshold, and time for any stray retry: still one success per id.
  await use(tenant, 10);
  await settle(2_000);
  const successes = successesByEvent(path);
  expect(successes.get(eventId)).toBe(1);
  expect([...successes.values()].every((n) => n === 1)).toBe(true);

  const deliveries = await api.call('GET', `/v1/tenants/${tenant.id}/deliveries?event_id=${eventId}`, { key: tenant.key });
  expect(deliveries.status).toBe(200);
  expect(deliveries.body.data).toEqual([
    expect.objectContaining({ event_id: eventId, event_type: 'alert.triggered', channel: 'webhook', target: `${receiver.url}${path}`, status: 'delivered', attempts: 3, last_error: null }),
  ]);
  expect(deliveries.body.data[0].delivered_at).toEqual(expect.any(String));
});

test("a batch that reaches a threshold has the worker's counter ring its workflow at once: its alert waits for no counting tick", async () => {
  // A counter whose timer would not tick for a minute: only the ingest's notice can ring the workflow.
  const slow = await startApiHarness({ countingIntervalMs: 60_000 });
  try {
    const path = `/wake-${unique('w')}`;
    const id = unique('nt');
    const created = await slow.call('POST', '/v1/tenants', { body: { id, name: `Tenant ${id}`, plan_id: planId, webhook_url: `${receiver.url}${path}` } });
    expect(created.status).toBe(201);
    // The run's first claim publishes its decision points: from then on a batch can reach one.
    await eventually(async () => (await slow.db('tenant_event_totals').where({ tenant_id: id }).whereNotNull('decision_points').first()) ?? undefined, 10_000, 'decision points');
    const sent = Date.now();
    const res = await slow.call('POST', '/v1/events', { key: created.body.api_key, body: { events: [{ id: 'wake-1', metric: 'tokens', quantity: 850 }] } });
    expect(res.status).toBe(202);
    const delivered = await eventually(async () => requestsFor(path).find((r) => r.answered === 200), 20_000, 'the 80 % alert');
    expect(delivered.body.data).toMatchObject({ tenant_id: id, threshold: 80, used: 850 });
    expect(Date.now() - sent).toBeLessThan(20_000);
  } finally {
    await slow.stop();
  }
});

test('an alert email goes through SMTP and names metric, threshold, used and limit', async () => {
  const to = `${unique('ops')}@example.com`;
  const tenant = await createTenant({ email: to });
  expect(tenant.secret).toBeUndefined();
  await use(tenant, 950); // 0 % → 95 %: one email for 90 %, covering 80 %

  const mail = await eventually(async () => smtp.mails.find((m) => m.to.includes(to)), 30_000, 'the alert email');
  expect(mail.headers.to).toContain(to);
  expect(mail.headers.subject).toContain('tokens');
  expect(mail.headers.subject).toContain('90%');
  expect(mail.text).toContain('Metric: tokens');
  expect(mail.text).toContain('Threshold: 90% (critical)');
  expect(mail.text).toContain('Used: 950');
  expect(mail.text).toContain('Limit: 1000');
  expect(mail.text).toContain('Covers thresholds: 80%, 90%');

  const deliveries = await eventually(async () => {
    const res = await api.call('GET', `/v1/tenants/${tenant.id}/deliveries`, { key: tenant.key });
    return res.body.data.length === 1 && res.body.data[0].status === 'delivered' ? res.body : undefined;
  }, 10_000, 'the email delivery row');
  expect(deliveries.data[0]).toMatchObject({ channel: 'email', target: to, status: 'delivered', attempts: 1, event_type: 'alert.triggered' });
  await settle(1_000);
  expect(smtp.mails.filter((m) => m.to.includes(to))).toHaveLength(1);
});

test('an alert rule created mid-period fires once, through its own channel', async () => {
  const tenant = await createTenant(); // no email, no webhook: the plan's alerts are only recorded
  const other = await createTenant();
  await use(tenant, 500); // 50 %

  const path = `/ok-${unique('rule')}`;
  const create = await api.call('POST', `/v1/tenants/${tenant.id}/alert-rules`, {
    key: tenant.key,
    body: { metric: 'tokens', threshold: 60, channel: { type: 'webhook', url: `${receiver.url}${path}` } },
  });
  expect(create.status).toBe(201);
  expect(create.body).toMatchObject({ metric: 'tokens', threshold: 60, channel: { type: 'webhook', url: `${receiver.url}${path}` } });
  expect(create.body.id).toMatch(/^ar_/);
  expect(create.body.created_at).toEqual(expect.any(String));
  const secret = create.body.webhook_secret as string; // the tenant had none: issued with its first webhook
  expect(secret).toMatch(/^whsec_/);
  const ruleId = create.body.id as string;

  // Validation, and isolation between tenants.
  expect((await api.call('POST', `/v1/tenants/${tenant.id}/alert-rules`, { key: tenant.key, body: { metric: 'nope', threshold: 50, channel: { type: 'email', to: 'a@b.c' } } })).status).toBe(422);
  expect((await api.call('POST', `/v1/tenants/${tenant.id}/alert-rules`, { key: tenant.key, body: { metric: 'tokens', cost: true, threshold: 50, channel: { type: 'email', to: 'a@b.c' } } })).status).toBe(422);
  expect((await api.call('POST', `/v1/tenants/${tenant.id}/alert-rules`, { key: tenant.key, body: { cost: true, threshold: 50, channel: { type: 'email', to: 'a@b.c' } } })).status).toBe(422); // no cost_limit
  expect((await api.call('GET', `/v1/tenants/${tenant.id}/alert-rules/${ruleId}`, { key: other.key })).status).toBe(404);
  expect((await api.call('GET', `/v1/tenants/${tenant.id}/alert-rules`, { key: other.key })).status).toBe(404);
  expect((await api.call('DELETE', `/v1/tenants/${tenant.id}/alert-rules/${ruleId}`, { key: other.key })).status).toBe(404);
  expect((await api.call('GET', `/v1/tenants/${other.id}/alert-rules/${ruleId}`, { key: other.key })).status).toBe(404);
  expect((await api.call('GET', `/v1/tenants/${tenant.id}/alert-rules/${ruleId}`)).body).toMatchObject({ id: ruleId, threshold: 60 });

  await use(tenant, 150); // 65 %: crosses the rule's 60 %
  const fired = await eventually(async () => requestsFor(path).find((r) => r.answered === 200), 20_000, 'the rule alert');
  expect(fired.body).toMatchObject({ type: 'alert.triggered', data: { metric: 'tokens', threshold: 60, used: 650, rule_ids: [ruleId] } });
  expect(verifyBillingSignature(fired.raw, fired.signature, secret).ok).toBe(true);

  // A rule created above its threshold's usage applies at once, without new usage.
  const second = await api.call('POST', `/v1/tenants/${tenant.id}/alert-rules`, {
    key: tenant.key,
    body: { metric: 'tokens', threshold: 62.5, channel: { type: 'webhook', url: `${receiver.url}${path}` } },
  });
  expect(second.status).toBe(201);
  expect(second.body.webhook_secret).toBeUndefined(); // shown once only
  // The run judged the rule before the API answered: its alert is stored already.
  expect((await api.db('alerts').where({ tenant_id: tenant.id, threshold: 62.5 })).map((r: any) => r.status)).toEqual(['notified']);
  await eventually(async () => requestsFor(path).find((r) => r.body?.data?.threshold === 62.5), 20_000, 'the immediate rule alert');

  await use(tenant, 50); // 70 %: nothing new
  await settle(2_000);
  const alerts = requestsFor(path).map((r) => r.body.data.threshold);
  expect(alerts.sort()).toEqual([60, 62.5]);
  // The plan's 80 % is untouched; the rules' alerts are stored once each.
  const rows = await api.db('alerts').where({ tenant_id: tenant.id }).orderBy('threshold');
  expect(rows.map((r: any) => [Number(r.threshold), r.status, r.rule_id])).toEqual([
    [60, 'notified', ruleId],
    [62.5, 'notified', second.body.id],
  ]);

  const list = await api.call('GET', `/v1/tenants/${tenant.id}/alert-rules`, { key: tenant.key });
  expect(list.body).toMatchObject({ total_count: 2, has_more: false });
  expect(list.body.data.map((r: any) => r.id)).toEqual([second.body.id, ruleId]); // newest first
  expect((await api.call('DELETE', `/v1/tenants/${tenant.id}/alert-rules/${ruleId}`, { key: tenant.key })).status).toBe(204);
  expect((await api.call('GET', `/v1/tenants/${tenant.id}/alert-rules/${ruleId}`, { key: tenant.key })).status).toBe(404);
  expect((await api.call('GET', `/v1/tenants/${tenant.id}/alert-rules`, { key: tenant.key })).body.total_count).toBe(1);
});

test("a rule created while a claim is under way decides every event sent after its 201, which that claim may count", async () => {
  const id = unique('nt');
  const claimBegan = new Promise<void>((resolve) => heldFirstClaims.set(id, resolve));
  const tenant = await createTenant({}, id);
  await claimBegan; // the new run's first claim, held back: it will read what is stored 1.5 s from now

  const path = `/ok-${unique('race')}`;
  const rule = await api.call('POST', `/v1/tenants/${tenant.id}/alert-rules`, { key: tenant.key, body: { metric: 'tokens', threshold: 50, channel: { type: 'webhook', url: `${receiver.url}${path}` } } });
  expect(rule.status).toBe(201);
  await use(tenant, 1000); // 100 %: the rule's 50 % with the plan's 80, 90 and 100 %

  // One decision covers all four, with the rule among them: its channel gets the 100 % alert.
  const fired = await eventually(async () => requestsFor(path).find((r) => r.answered === 200), 20_000, "the rule's webhook");
  expect(fired.body).toMatchObject({ type: 'alert.triggered', data: { threshold: 100, covers: [50, 80, 90, 100], rule_ids: [rule.body.id] } });
  const rows = await api.db('alerts').where({ tenant_id: tenant.id }).orderBy('threshold');
  expect(rows.map((r: any) => [Number(r.threshold), r.status])).toEqual([
    [50, 'superseded'],
    [80, 'superseded'],
    [90, 'superseded'],
    [100, 'notified'],
  ]);
});

test('a tenant holds at most MAX_ALERT_RULES_PER_TENANT alert rules: one more answers 409 and stores nothing; deleting one makes room', async () => {
  const tenant = await createTenant();
  // All but one stored directly (each through the API would ring the workflow a hundred times).
  await api.db('alert_rules').insert(
    Array.from({ length: MAX_ALERT_RULES_PER_TENANT - 1 }, (_, i) => ({
      id: `ar_cap_${tenant.id}_${i}`,
      tenant_id: tenant.id,
      metric: 'tokens',
      threshold: String(10 + i * 0.5),
      channel: JSON.stringify({ type: 'email', to: 'cap@example.com' }),
      created_at: new Date(),
    })),
  );
  const rule = (threshold: number) => api.call('POST', `/v1/tenants/${tenant.id}/alert-rules`, { key: tenant.key, body: { metric: 'tokens', threshold, channel: { type: 'email', to: 'cap@example.com' } } });
  const last = await rule(99);
  expect(last.status).toBe(201);
  const over = await rule(99.5);
  expect({ status: over.status, code: over.body.code }).toEqual({ status: 409, code: 'conflict' });
  expect(Number((await api.db('alert_rules').where({ tenant_id: tenant.id }).whereNull('deleted_at').count({ n: '*' }))[0]!.n)).toBe(MAX_ALERT_RULES_PER_TENANT);
  expect((await api.call('DELETE', `/v1/tenants/${tenant.id}/alert-rules/${last.body.id}`, { key: tenant.key })).status).toBe(204);
  expect((await rule(99.5)).status).toBe(201);
});

test('a receiver that keeps failing ends as failed, visible through the API', async () => {
  const path = `/down-${unique('w')}`;
  const tenant = await createTenant({ webhook_url: `${receiver.url}${path}` });
  await use(tenant, 1000); // 100 %

  const failed = await eventually(async () => {
    const res = await api.call('GET', `/v1/tenants/${tenant.id}/deliveries?status=failed`, { key: tenant.key });
    return res.body.data.length > 0 ? res.body.data[0] : undefined;
  }, 40_000, 'the failed delivery');
  expect(failed).toMatchObject({ event_type: 'alert.triggered', channel: 'webhook', status: 'failed', attempts: 4, last_error: 'receiver answered HTTP 503', delivered_at: null });
  expect(requestsFor(path, failed.event_id).map((r) => r.answered)).toEqual([503, 503, 503, 503]);

  const alert = await api.db('alerts').where({ id: failed.event_id }).first();
  expect(alert.status).toBe('failed');
  expect(alert.channels).toEqual(['webhook']);
  const listed = await api.call('GET', `/v1/tenants/${tenant.id}/alerts`, { key: tenant.key });
  expect(listed.status).toBe(200);
  expect(listed.body.data.find((a: any) => a.id === failed.event_id)).toMatchObject({ status: 'failed', threshold: 100, channels: ['webhook'] });
});

test('invoice.finalized arrives after close-period with finalize, signed with the rotated secret', async () => {
  const path = `/ok-${unique('inv')}`;
  const tenant = await createTenant();
  // Setting a webhook later issues the secret in the PATCH response; a second PATCH does not.
  const patched = await api.call('PATCH', `/v1/tenants/${tenant.id}`, { key: tenant.key, body: { webhook_url: `${receiver.url}${path}` } });
  expect(patched.status).toBe(200);
  const first = patched.body.webhook_secret as string;
  expect(first).toMatch(/^whsec_/);
  const again = await api.call('PATCH', `/v1/tenants/${tenant.id}`, { key: tenant.key, body: { webhook_url: `${receiver.url}${path}` } });
  expect(again.body.webhook_secret).toBeUndefined();
  const rotated = await api.call('POST', `/v1/tenants/${tenant.id}/webhook-secret`, { key: tenant.key });
  expect(rotated.status).toBe(200);
  const secret = rotated.body.webhook_secret as string;
  expect(secret).toMatch(/^whsec_/);
  expect(secret).not.toBe(first);
  const other = await createTenant();
  expect((await api.call('POST', `/v1/tenants/${tenant.id}/webhook-secret`, { key: other.key })).status).toBe(404);

  await use(tenant, 10);
  await api.call('GET', `/v1/tenants/${tenant.id}/usage?consistent=true`, { key: tenant.key });
  const close = await api.call('POST', `/v1/tenants/${tenant.id}/close-period`, { body: { finalize: true } });
  expect(close.status).toBe(200);

  const event = await eventually(async () => requestsFor(path).find((r) => r.body?.type === 'invoice.finalized'), 30_000, 'invoice.finalized');
  expect(event.body).toMatchObject({
    id: `ev_${close.body.invoice_id}_finalized`,
    data: { id: close.body.invoice_id, tenant_id: tenant.id, status: 'finalized', number: 1, total: '0.10', currency: 'USD' },
  });
  expect(verifyBillingSignature(event.raw, event.signature, secret).ok).toBe(true);
  expect(verifyBillingSignature(event.raw, event.signature, first).ok).toBe(false);
  const invoice = await api.call('GET', `/v1/invoices/${close.body.invoice_id}`, { key: tenant.key });
  expect(invoice.body.status).toBe('finalized');
  await settle(1_000);
  expect(successesByEvent(path).get(event.body.id)).toBe(1);
});

test('docs/webhooks.md shows the tested verification code verbatim', () => {
  const root = resolve(__dirname, '../..');
  const code = fs.readFileSync(join(root, 'src/notifications/verify-signature.ts'), 'utf8');
  const doc = fs.readFileSync(join(root, 'docs/webhooks.md'), 'utf8');
  expect(doc).toContain("```ts\n" + code + "```");
});
