import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { startApiHarness, eventually, type ApiHarness } from '../support/api-harness';
import { unique } from '../support/stack';
import { pdfText } from '../support/pdf-text';
import { invoiceEventId } from '../../src/notifications/invoices';

/**
 * Invoice reruns, numbers and PDFs through the real API (worker, Temporal dev server,
 * PostgreSQL): a rerun with another plan voids version 1 and finalizes version 2 with the next
 * number, idempotently; numbers stay gapless per tenant; PDFs carry the same figures.
 */
let api: ApiHarness;
/** The tenant's webhook receiver: every event body it got, answered 200. */
const hooks: any[] = [];
let receiver: http.Server;
let hookUrl: string;
beforeAll(async () => {
  receiver = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      hooks.push(JSON.parse(body));
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`;
  api = await startApiHarness();
});
afterAll(async () => {
  await api?.stop();
  await new Promise((resolve) => receiver?.close(resolve));
});

/** Calls the API with extra headers (the harness's `call` has none); JSON or bytes back. */
async function request(method: string, path: string, options: { key?: string; body?: unknown; headers?: Record<string, string> } = {}) {
  const headers: Record<string, string> = { 'x-api-key': options.key ?? api.adminKey, ...options.headers };
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${api.baseUrl}${path}`, { method, headers, body: options.body === undefined ? undefined : JSON.stringify(options.body) });
  const bytes = Buffer.from(await res.arrayBuffer());
  const type = res.headers.get('content-type') ?? '';
  const body: any = type.includes('json') ? JSON.parse(bytes.toString('utf8')) : undefined;
  return { status: res.status, headers: res.headers, body, bytes };
}

function planBody(id: string, botPrice: string, grace = 0) {
  return {
    id,
    name: 'Bots',
    currency: 'USD',
    interval: 'month',
    base_fee: '5.00',
    grace_period_seconds: grace,
    meters: [
      { metric: 'bot_seconds', aggregation: 'sum', pricing: { model: 'per_unit', unit_price: botPrice } },
      {
        metric: 'minutes',
        aggregation: 'sum',
        pricing: { model: 'graduated', tiers: [{ up_to: 1000, unit_price: '0.10' }, { up_to: null, unit_price: '0.08', flat_fee: '2.00' }] },
      },
    ],
  };
}

async function createTenant(planId: string, extra: { webhook_url?: string } = {}) {
  const id = unique('inv');
  const res = await api.call('POST', '/v1/tenants', { body: { id, name: `Acme ${id}`, plan_id: planId, ...extra } });
  expect(res.status).toBe(201);
  return { id, name: `Acme ${id}`, key: res.body.api_key as string };
}

async function send(tenant: { id: string; key: string }, events: Array<{ id: string; metric: string; quantity: number }>) {
  expect((await api.call('POST', '/v1/events', { key: tenant.key, body: { events } })).status).toBe(202);
  expect((await api.call('GET', `/v1/tenants/${tenant.id}/usage?consistent=true`, { key: tenant.key })).status).toBe(200);
}

async function invoiceWhen(id: string, status: string) {
  return eventually(async () => {
    const res = await api.call('GET', `/v1/invoices/${id}`);
    return res.body?.status === status ? res.body : undefined;
  }, 30_000, `invoice ${id} ${status}`);
}

async function closeAndFinalize(tenantId: string) {
  const close = await api.call('POST', `/v1/tenants/${tenantId}/close-period`, { body: { finalize: true } });
  expect(close.status).toBe(200);
  return invoiceWhen(close.body.invoice_id, 'finalized');
}

describe('invoice reruns', () => {
  const planA = unique('bots_a');
  const planB = unique('bots_b');
  let tenant: { id: string; name: string; key: string };
  let first: any; // period 1, version 1
  let second: any; // period 2
  let rerun: { invoice_id: string; workflow_id: string };
  const key = unique('idem');
  const reason = 'bot_seconds was priced at the old rate';

  beforeAll(async () => {
    expect((await api.call('POST', '/v1/plans', { body: planBody(planA, '0.01') })).status).toBe(201);
    expect((await api.call('POST', '/v1/plans', { body: planBody(planB, '0.02') })).status).toBe(201);
    tenant = await createTenant(planA, { webhook_url: hookUrl });
    await send(tenant, [
      { id: 'b1', metric: 'bot_seconds', quantity: 100 },
      { id: 'm1', metric: 'minutes', quantity: 1000.25 },
      { id: 'm2', metric: 'minutes', quantity: 310.25 },
    ]);
    first = await closeAndFinalize(tenant.id);
    await send(tenant, [{ id: 'b2', metric: 'bot_seconds', quantity: 50 }]);
    second = await closeAndFinalize(tenant.id);
  });

  test('a close finalizes version 1 with number 1; the next period gets number 2', () => {
    expect(first).toMatchObject({ version: 1, number: 1, status: 'finalized', plan_id: planA, total: '132.84' });
    expect(first.lines.map((l: any) => [l.metric, l.quantity, l.amount])).toEqual([
      ['base_fee', 1, '5.00'],
      ['bot_seconds', 100, '1.00'],
      ['minutes', 1310.5, '126.84'],
    ]);
    expect(second).toMatchObject({ version: 1, number: 2, total: '5.50' });
  });

  test('a rerun with another plan: 202, version 2 finalized with number 3, version 1 void', async () => {
    const res = await request('POST', `/v1/invoices/${first.id}/rerun`, { body: { reason, plan_id: planB }, headers: { 'Idempotency-Key': key } });
    expect(res.status).toBe(202);
    rerun = res.body;
    expect(rerun.invoice_id).toBe(first.id.replace(/_v1$/, '_v2'));
    expect(rerun.workflow_id).toMatch(new RegExp(`^invoice-${tenant.id}-\\d{8}T\\d{6}Z-v2$`));

    const replacement = await invoiceWhen(rerun.invoice_id, 'finalized');
    expect(replacement).toMatchObject({
      version: 2,
      number: 3,
      plan_id: planB,
      plan_version: 1,
      period_start: first.period_start,
      period_end: first.period_end,
      total: '133.84',
      replaces: first.id,
      reason,
      requested_by: 'admin',
    });
    // Same stored events, so the same quantities; only the repriced line changed.
    expect(replacement.lines.map((l: any) => [l.metric, l.quantity, l.amount])).toEqual([
      ['base_fee', 1, '5.00'],
      ['bot_seconds', 100, '2.00'],
      ['minutes', 1310.5, '126.84'],
    ]);
    expect(replacement.changes).toEqual([
      { metric: 'bot_seconds', description: expect.any(String), quantity_before: 100, quantity_after: 100, amount_before: '1.00', amount_after: '2.00', delta: '1.00' },
    ]);

    const voided = (await api.call('GET', `/v1/invoices/${first.id}`)).body;
    expect(voided).toMatchObject({ status: 'void', number: 1, replaced_by: rerun.invoice_id, total: '132.84' });
    expect(Date.parse(voided.voided_at)).toBeGreaterThan(0);

    // The workflow: visible with who asked and why, and its result lists the changes.
    const handle = api.client.workflow.getHandle(rerun.workflow_id);
    const result = await handle.result();
    expect(result).toMatchObject({ invoice_id: rerun.invoice_id, number: 3, total: '133.84', total_delta: '1.00', replaced: { invoice_id: first.id, number: 1, total: '132.84' } });
    expect(result.changes).toEqual(replacement.changes);
    const description = await handle.describe();
    expect(description.type).toBe('invoiceRerun');
    expect(await description.staticSummary()).toContain(reason);
    expect(await description.staticSummary()).toContain('admin');

    // Both versions were announced to the tenant's webhook.
    const voidedEvent = hooks.find((h) => h.id === invoiceEventId(first.id, 'invoice.voided'));
    expect(voidedEvent).toMatchObject({ type: 'invoice.voided', data: { id: first.id, status: 'void', replaced_by: rerun.invoice_id } });
    const finalizedEvent = hooks.find((h) => h.id === invoiceEventId(rerun.invoice_id, 'invoice.finalized'));
    expect(finalizedEvent).toMatchObject({ type: 'invoice.finalized', data: { id: rerun.invoice_id, number: 3, replaces: first.id, total: '133.84' } });

    // Exactly one finalized invoice for the period, always.
    const finalized = await api.db('invoices').where({ tenant_id: tenant.id, period_start: first.period_start, status: 'finalized' });
    expect(finalized.map((r: any) => r.id)).toEqual([rerun.invoice_id]);
  });

  test('the same Idempotency-Key gets the same answer; another request with it is refused', async () => {
    const again = await request('POST', `/v1/invoices/${first.id}/rerun`, { body: { reason, plan_id: planB }, headers: { 'Idempotency-Key': key } });
    expect(again.status).toBe(202);
    expect(again.body).toEqual(rerun);
    const misuse = await request('POST', `/v1/invoices/${second.id}/rerun`, { body: { reason }, headers: { 'Idempotency-Key': key } });
    expect(misuse.status).toBe(409);
    expect(misuse.body.code).toBe('conflict');
    // Nothing ran twice: still three invoices, one rerun.
    expect((await api.db('invoices').where({ tenant_id: tenant.id })).length).toBe(3);
  });

  test('a rerun of the void version is a 409 that names its replacement', async () => {
    const res = await request('POST', `/v1/invoices/${first.id}/rerun`, { body: { reason: 'again' }, headers: { 'Idempotency-Key': unique('idem') } });
    expect(res.status).toBe(409);
    expect(res.headers.get('content-type')).toContain('application/problem+json');
    expect(res.body.code).toBe('conflict');
    expect(res.body.detail).toContain('void');
    expect(res.body.detail).toContain(rerun.invoice_id);
    expect((await request('POST', `/v1/invoices/${first.id}/rerun`, { body: { reason: 'again' } })).status).toBe(409);
  });

  test('invoice numbers are 1, 2, 3 without gaps across two periods and a rerun; the list shows both versions', async () => {
    const list = await api.call('GET', `/v1/tenants/${tenant.id}/invoices`, { key: tenant.key });
    expect(list.status).toBe(200);
    const rows = list.body.data as any[];
    expect(rows.map((r) => [r.id, r.version, r.status, r.number])).toEqual(
      expect.arrayContaining([
        [first.id, 1, 'void', 1],
        [second.id, 1, 'finalized', 2],
        [rerun.invoice_id, 2, 'finalized', 3],
      ]),
    );
    expect(rows).toHaveLength(3);
    expect(rows.map((r) => r.number).sort()).toEqual([1, 2, 3]);
    const stored = await api.db('tenants').where({ id: tenant.id }).first();
    expect(stored.last_invoice_number).toBe(3);
  });

  test('the PDF of the finalized version carries its number, lines, tiers and total', async () => {
    const res = await request('GET', `/v1/invoices/${rerun.invoice_id}/pdf`, { key: tenant.key });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('application/pdf');
    expect(res.bytes.subarray(0, 5).toString()).toBe('%PDF-');
    const text = await pdfText(res.bytes);
    expect(text).toContain('tally');
    expect(text).toContain(tenant.name);
    expect(text).toContain(tenant.id);
    expect(text).toMatch(/Invoice number:\s*3/);
    expect(text).toMatch(/Status:\s*FINALIZED/);
    expect(text).toContain(first.period_start.slice(0, 10));
    expect(text).toMatch(/Total \(USD\)\s+133\.84 USD/);
    expect(text).toMatch(/Subtotal\s+133\.84/);
    expect(text).toMatch(/bot_seconds at 0\.02 per unit\s+100\s+2\.00/);
    expect(text).toMatch(/Bots base fee\s+1\s+5\.00/);
    expect(text).toMatch(/minutes, graduated tiers\s+1310\.5\s+126\.84/);
    expect(text).toContain('Tier 1: 1000 × 0.10 = 100.00');
    expect(text).toContain('Tier 2: 310.5 × 0.08 + 2.00 flat fee = 26.84');
    expect(text).toContain(`Replaces: ${first.id}`);
    expect(text).not.toContain('VOID');
  });

  test('the PDF of the void version has the VOID watermark and its own figures', async () => {
    const res = await request('GET', `/v1/invoices/${first.id}/pdf`);
    expect(res.status).toBe(200);
    const text = await pdfText(res.bytes);
    expect(text).toContain('VOID');
    expect(text).toMatch(/Invoice number:\s*1/);
    expect(text).toMatch(/Total \(USD\)\s+132\.84 USD/);
    expect(text).toMatch(/bot_seconds at 0\.01 per unit\s+100\s+1\.00/);
    expect(text).toContain(`Replaced by: ${rerun.invoice_id}`);
  });

  test("another tenant's key gets a problem+json 404 for the PDF", async () => {
    const other = await createTenant(planA);
    const res = await request('GET', `/v1/invoices/${first.id}/pdf`, { key: other.key });
    expect(res.status).toBe(404);
    expect(res.headers.get('content-type')).toContain('application/problem+json');
    expect(res.body.code).toBe('not_found');
    expect((await request('GET', '/v1/invoices/in_nope_v1/pdf')).status).toBe(404);
  });

  test('reruns are admin only and validated', async () => {
    expect((await request('POST', `/v1/invoices/${second.id}/rerun`, { key: tenant.key, body: { reason: 'x' } })).status).toBe(403);
    const noReason = await request('POST', `/v1/invoices/${second.id}/rerun`, { body: {} });
    expect(noReason.status).toBe(422);
    expect(noReason.body.errors[0].path).toBe('reason');
    const badPlan = await request('POST', `/v1/invoices/${second.id}/rerun`, { body: { reason: 'x', plan_id: 'no_such_plan' } });
    expect(badPlan.status).toBe(422);
    expect(badPlan.body.errors[0].path).toBe('plan_id');
    expect((await request('POST', '/v1/invoices/in_nope_v1/rerun', { body: { reason: 'x' } })).status).toBe(404);
  });

  test('two concurrent reruns of one version: one runs, the other is a 409; without plan_id the period keeps its plan', async () => {
    const attempts = await Promise.all(
      ['first', 'second'].map((n) => request('POST', `/v1/invoices/${second.id}/rerun`, { body: { reason: `race ${n}` }, headers: { 'Idempotency-Key': unique(n) } })),
    );
    expect(attempts.map((a) => a.status).sort()).toEqual([202, 409]);
    const winner = attempts.find((a) => a.status === 202)!;
    const loser = attempts.find((a) => a.status === 409)!;
    expect(loser.body.code).toBe('conflict');
    const replacement = await invoiceWhen(winner.body.invoice_id, 'finalized');
    // Same events, same plan: same figures, nothing changed; the next number is 4.
    expect(replacement).toMatchObject({ version: 2, number: 4, plan_id: planA, total: second.total, replaces: second.id, changes: [] });
    const result = await api.client.workflow.getHandle(winner.body.workflow_id).result();
    expect(result).toMatchObject({ total_delta: '0.00', changes: [] });
    // Only the winner's key is bound to the rerun.
    expect(await api.db('invoice_reruns').where({ invoice_id: second.id }).count({ n: '*' })).toEqual([{ n: '1' }]);
    const numbers = (await api.db('invoices').where({ tenant_id: tenant.id }).orderBy('number')).map((r: any) => r.number);
    expect(numbers).toEqual([1, 2, 3, 4]);
  });
});

test('a PDF prints non-Latin tenant and plan names as text, survives CJK, and is the same bytes twice', async () => {
  // Greek, Cyrillic, Hebrew, Latin with diacritics (and the Dutch letter Ĳ), an arrow: none of it
  // is in Helvetica's WinAnsi. pdf-parse gives the name back exactly, the Hebrew word included, in
  // reading order and in its place (no reordering to check word by word).
  const name = 'Ωμέγα Ржавчина שלום Ĳssel Żółć →';
  const plan = unique('bots_intl');
  // Armenian and Georgian in the plan name, whose base-fee line reads "<plan name> base fee".
  // DejaVu has no CJK glyphs: 東京 prints as missing-glyph boxes and must not fail the render.
  expect((await api.call('POST', '/v1/plans', { body: { ...planBody(plan, '0.01'), name: 'Սակագին ტარიფი 東京' } })).status).toBe(201);
  const id = unique('inv');
  expect((await api.call('POST', '/v1/tenants', { body: { id, name, plan_id: plan } })).status).toBe(201);
  const invoice = await closeAndFinalize(id);

  const res = await request('GET', `/v1/invoices/${invoice.id}/pdf`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toContain('application/pdf');
  const text = await pdfText(res.bytes);
  expect(text).toContain(`Bill to\n${name}\n`);
  expect(text).toContain('Սակագին ტარიფი');
  expect(text).toMatch(/base fee\s+1\s+5\.00/);
  expect(text).toMatch(/Total \(USD\)\s+5\.00 USD/);
  // A finalized invoice renders deterministically: the second download is the first, byte for byte.
  expect((await request('GET', `/v1/invoices/${invoice.id}/pdf`)).bytes.equals(res.bytes)).toBe(true);
});

test('a draft invoice (period still in grace) cannot be rerun', async () => {
  const plan = unique('bots_grace');
  expect((await api.call('POST', '/v1/plans', { body: planBody(plan, '0.01', 3600) })).status).toBe(201);
  const tenant = await createTenant(plan);
  const close = await api.call('POST', `/v1/tenants/${tenant.id}/close-period`, { body: {} });
  expect(close.status).toBe(200);
  await invoiceWhen(close.body.invoice_id, 'draft');
  const res = await request('POST', `/v1/invoices/${close.body.invoice_id}/rerun`, { body: { reason: 'too early' } });
  expect(res.status).toBe(409);
  expect(res.body.code).toBe('conflict');
  expect(res.body.detail).toContain('draft');
  await api.client.workflow.getHandle(close.body.invoice_workflow_id).terminate('test done');
});
