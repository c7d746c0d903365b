import fs from 'node:fs';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { startApiHarness, type ApiHarness } from '../support/api-harness';
import { unique } from '../support/stack';

/** Debian's chromium (installed by .ci/run); CHROMIUM_PATH points elsewhere. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** `npm run test:browser -- --quick` (CI): the journeys at one width; the full run checks both. */
export const QUICK = process.env.TALLY_BROWSER_QUICK === '1';

/** The two widths the dashboard must work at. */
export const WIDTHS = { phone: 375, desktop: 1440 } as const;

/** The real system (API with the dashboard, worker, Temporal, PostgreSQL) and a headless Chromium. */
export interface DashboardStack {
  api: ApiHarness;
  browser: Browser;
  stop(): Promise<void>;
}

export async function startDashboardStack(): Promise<DashboardStack> {
  if (!fs.existsSync(CHROMIUM_PATH)) throw new Error(`no Chromium at ${CHROMIUM_PATH}: install Debian's chromium package (apt-get install chromium) or set CHROMIUM_PATH`);
  const api = await startApiHarness();
  const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: ['--no-sandbox'] });
  return {
    api,
    browser,
    async stop() {
      await browser.close();
      await api.stop();
    },
  };
}

/** A browser page at `width`, recording every CSP violation and script error it reports. */
export async function openPage(stack: DashboardStack, width: number): Promise<{ context: BrowserContext; page: Page; problems: string[] }> {
  const context = await stack.browser.newContext({ viewport: { width, height: 900 }, acceptDownloads: true, baseURL: stack.api.baseUrl });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error' && /Content Security Policy|Refused to/i.test(msg.text())) problems.push(`CSP: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`script error: ${err.message}`));
  page.on('response', (res) => {
    if (res.status() >= 500) problems.push(`HTTP ${res.status()} from ${res.request().method()} ${res.url()}`);
  });
  return { context, page, problems };
}

/** Signs in through the form, as a person would. */
export async function signIn(page: Page, key: string): Promise<void> {
  await page.goto('/dashboard');
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('button', { name: 'Sign out' }).waitFor();
}

/**
 * Opens an app route (`/tenants/<id>`) in the signed-in page, as its links do: by the URL's
 * fragment. (A `goto` that changes only the fragment can miss the same-document navigation and
 * wait for a load that never comes.)
 */
export async function showRoute(page: Page, route: string): Promise<void> {
  await page.evaluate((r) => {
    location.hash = r;
  }, route);
}

const AXE_SOURCE = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

/**
 * axe-core's serious and critical violations on the page as it is now. The script is evaluated
 * through the DevTools protocol, so the page's own CSP (which allows no inline script) stays on.
 */
export async function seriousA11yViolations(page: Page): Promise<Array<{ id: string; impact: string; help: string; targets: string[] }>> {
  await page.evaluate(AXE_SOURCE);
  const result = await page.evaluate(async () => {
    const axe = (globalThis as any).axe;
    const run = await axe.run(document, { resultTypes: ['violations'] });
    return run.violations.map((v: any) => ({ id: v.id, impact: v.impact, help: v.help, targets: v.nodes.map((n: any) => String(n.target)) }));
  });
  return (result as Array<{ id: string; impact: string; help: string; targets: string[] }>).filter((v) => v.impact === 'serious' || v.impact === 'critical');
}

/** The metered plan the journeys use: meters that land at 79 %, 80 % and 90 %, and one without a limit. */
export function journeyPlan(id: string) {
  return {
    id,
    name: 'Agent Pro',
    currency: 'USD',
    interval: 'month',
    base_fee: '49.00',
    grace_period_seconds: 0,
    meters: [
      { metric: 'llm_tokens', aggregation: 'sum', limit: 1000, pricing: { model: 'per_unit', unit_price: '0.00002' } },
      { metric: 'call_seconds', aggregation: 'sum', limit: 1000, pricing: { model: 'per_unit', unit_price: '0.01' } },
      { metric: 'storage_bytes', aggregation: 'max', limit: 1_000_000_000, pricing: { model: 'per_unit', unit_price: '0' } },
      { metric: 'api_requests', aggregation: 'count', pricing: { model: 'per_unit', unit_price: '0.001' } },
    ],
  };
}

/** A tenant on `planId`, anchored `daysAgo` days back (so its period holds events of several days). */
export async function createTenant(api: ApiHarness, planId: string, name: string, daysAgo = 10): Promise<{ id: string; key: string }> {
  const id = unique('dash');
  const anchor = new Date(Date.now() - daysAgo * 86_400_000);
  anchor.setUTCMilliseconds(0);
  const res = await api.call('POST', '/v1/tenants', { body: { id, name, plan_id: planId, billing_anchor: anchor.toISOString() } });
  if (res.status !== 201) throw new Error(`tenant: ${res.status} ${JSON.stringify(res.body)}`);
  return { id, key: res.body.api_key };
}

/** Ingests events with the tenant's key, then waits until every one is counted. */
export async function ingest(api: ApiHarness, tenant: { id: string; key: string }, events: unknown[]): Promise<void> {
  for (let i = 0; i < events.length; i += 500) {
    const res = await api.call('POST', '/v1/events', { key: tenant.key, body: { events: events.slice(i, i + 500) } });
    if (res.status !== 202) throw new Error(`ingest: ${res.status} ${JSON.stringify(res.body)}`);
  }
  const settled = await api.call('GET', `/v1/tenants/${tenant.id}/usage?consistent=true`, { key: tenant.key });
  if (settled.status !== 200) throw new Error(`settle: ${settled.status} ${JSON.stringify(settled.body)}`);
}

/** An ISO instant `days` days and `minutes` minutes before now. */
export function ago(days: number, minutes = 0): string {
  return new Date(Date.now() - days * 86_400_000 - minutes * 60_000).toISOString();
}

/** The UTC day (YYYY-MM-DD) of an instant. */
export function dayOf(iso: string): string {
  return iso.slice(0, 10);
}

/** One event of the seeded tenant, as sent. */
export interface SeedEvent {
  id: string;
  metric: string;
  quantity: number;
  timestamp: string;
  properties?: Record<string, string>;
}

/**
 * The usage of the journeys' main tenant: llm_tokens at 79 % (790 of 1,000), call_seconds at 80 %
 * (800 of 1,000), storage_bytes at 90 % (900 MB of 1 GB), and 44 api_requests without a limit;
 * 60 events over the last 8 days, with `model` and `channel` properties.
 */
export function seedEvents(): SeedEvent[] {
  const events: SeedEvent[] = [];
  for (let i = 0; i < 10; i += 1) {
    events.push({ id: `tok-${i}`, metric: 'llm_tokens', quantity: 79, timestamp: ago(i < 5 ? 7 : 1, i), properties: { model: i % 2 === 0 ? 'gpt-4o' : 'claude' } });
  }
  for (let i = 0; i < 4; i += 1) events.push({ id: `call-${i}`, metric: 'call_seconds', quantity: 200, timestamp: ago(i + 2, 5), properties: { channel: i < 2 ? 'sms' : 'web' } });
  events.push({ id: 'store-0', metric: 'storage_bytes', quantity: 500_000_000, timestamp: ago(6) });
  events.push({ id: 'store-1', metric: 'storage_bytes', quantity: 900_000_000, timestamp: ago(5) });
  for (let i = 0; i < 44; i += 1) events.push({ id: `req-${i}`, metric: 'api_requests', quantity: 1, timestamp: ago(i < 20 ? 8 : 0, i + 10), properties: { channel: 'web' } });
  return events;
}

/** Creates the plan (once per id) and a tenant with the seeded usage. */
export async function seedUsageTenant(api: ApiHarness, planId: string, name: string): Promise<{ id: string; key: string; events: SeedEvent[] }> {
  const plan = await api.call('GET', `/v1/plans/${planId}`);
  if (plan.status === 404) {
    const created = await api.call('POST', '/v1/plans', { body: journeyPlan(planId) });
    if (created.status !== 201) throw new Error(`plan: ${created.status} ${JSON.stringify(created.body)}`);
  }
  const tenant = await createTenant(api, planId, name);
  const events = seedEvents();
  await ingest(api, tenant, events);
  return { ...tenant, events };
}

/** Closes the tenant's period with `finalize` through the API and waits for the finalized invoice. */
export async function closeAndFinalize(api: ApiHarness, tenantId: string): Promise<string> {
  const closed = await api.call('POST', `/v1/tenants/${tenantId}/close-period`, { body: { finalize: true } });
  if (closed.status !== 200) throw new Error(`close: ${closed.status} ${JSON.stringify(closed.body)}`);
  const invoiceId: string = closed.body.invoice_id;
  const deadline = Date.now() + 30_000;
  for (;;) {
    const invoice = await api.call('GET', `/v1/invoices/${invoiceId}`);
    if (invoice.body?.status === 'finalized') return invoiceId;
    if (Date.now() > deadline) throw new Error(`invoice ${invoiceId} not finalized: ${JSON.stringify(invoice.body)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
