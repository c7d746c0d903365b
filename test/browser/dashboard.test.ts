import fs from 'node:fs';
import type { Locator, Page } from 'playwright-core';
import { pdfText } from '../support/pdf-text';
import { unique } from '../support/stack';
import {
  closeAndFinalize,
  createTenant,
  dayOf,
  journeyPlan,
  ingest,
  openPage,
  showRoute,
  QUICK,
  seedUsageTenant,
  seriousA11yViolations,
  signIn,
  startDashboardStack,
  WIDTHS,
  type DashboardStack,
  type SeedEvent,
} from './support';

/**
 * The dashboard's journeys in headless Chromium against the real system: a tenant reads its
 * usage, finance closes and reruns, a tenant session stays inside its tenant, and the session
 * cookie and CSRF guard hold. axe-core checks every page visited.
 */
let stack: DashboardStack;
const planId = unique('agent_pro');
let main: { id: string; key: string; events: SeedEvent[] };
let billed: { id: string; key: string; invoiceId: string };

beforeAll(async () => {
  stack = await startDashboardStack();
  main = await seedUsageTenant(stack.api, planId, 'Acme Agents');
  const other = await createTenant(stack.api, planId, 'Borealis Bots');
  await ingest(stack.api, other, [{ id: 'b1', metric: 'api_requests', timestamp: new Date(Date.now() - 60_000).toISOString() }]);
  billed = { ...other, invoiceId: await closeAndFinalize(stack.api, other.id) };
});

afterAll(async () => {
  await stack?.stop();
});

/** No CSP violation and no script error happened on the page. */
function expectClean(problems: string[]): void {
  expect(problems).toEqual([]);
}

async function expectAccessible(page: Page): Promise<void> {
  expect(await seriousA11yViolations(page)).toEqual([]);
}

const GREEN = 'rgb(21, 128, 61)';
const AMBER = 'rgb(217, 119, 6)';
const RED = 'rgb(220, 38, 38)';

async function barColour(page: Page, metric: string): Promise<string> {
  return page.locator(`.meter-card[data-metric="${metric}"] .bar-fill`).evaluate((el) => getComputedStyle(el).backgroundColor);
}

describe.each(QUICK ? [WIDTHS.desktop] : [WIDTHS.phone, WIDTHS.desktop])('a tenant at %i px', (width) => {
  test('signs in and sees its meters in the right colours at 79, 80 and 90 %, with the banners', async () => {
    const { context, page, problems } = await openPage(stack, width);
    await page.goto('/dashboard');
    await expectAccessible(page);
    await signIn(page, main.key);
    expect(page.url()).toContain(`#/tenants/${main.id}`);
    const card = (metric: string) => page.locator(`.meter-card[data-metric="${metric}"]`);
    await card('llm_tokens').waitFor();

    expect(await card('llm_tokens').locator('.badge').textContent()).toBe('79%');
    expect(await card('call_seconds').locator('.badge').textContent()).toBe('80%');
    expect(await card('storage_bytes').locator('.badge').textContent()).toBe('90%');
    expect(await barColour(page, 'llm_tokens')).toBe(GREEN);
    expect(await barColour(page, 'call_seconds')).toBe(AMBER);
    expect(await barColour(page, 'storage_bytes')).toBe(RED);
    expect(await page.locator('.meter-card[data-metric="storage_bytes"] .bar').evaluate((el) => getComputedStyle(el).height)).toBe('8px');
    expect(await card('llm_tokens').locator('.meter-figures').textContent()).toBe('790 tokens usedof 1,000 tokens');
    expect(await card('call_seconds').locator('.meter-figures').textContent()).toBe('13m 20s usedof 16m 40s');
    expect(await card('storage_bytes').locator('.meter-figures').textContent()).toBe('900 MB usedof 1 GB');
    expect(await card('api_requests').locator('.meter-figures').textContent()).toBe('44 usedof ∞');
    // The plan card: its name (read with the admin's plan access only, so the tenant sees the id), price and next reset.
    expect(await page.locator('.plan-price').textContent()).toBe('$49.00 per month');

    // The 80 % and 90 % banners; a dismissed one stays dismissed for the session.
    const banners = page.getByTestId('usage-banner');
    await countIs(banners, 2);
    await page.getByRole('button', { name: 'Dismiss the call_seconds 80 % banner' }).click();
    await countIs(banners, 1);
    await page.reload();
    await card('llm_tokens').waitFor();
    await countIs(banners, 1);
    expect(await banners.first().textContent()).toContain('storage_bytes');

    await expectAccessible(page);
    expectClean(problems);
    await context.close();
  });
});

/** Waits until the locator matches exactly `count` elements. */
async function countIs(locator: { count(): Promise<number> }, count: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  let seen = await locator.count();
  while (seen !== count && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    seen = await locator.count();
  }
  expect(seen).toBe(count);
}

/**
 * Waits for `done` (visible, and `also()` true), failing at once with the app's own message when
 * it shows an error instead, so a refused request reads as what the API said, not as a timeout.
 */
async function succeeds(page: Page, done: Locator, also: () => Promise<boolean> = async () => true): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if ((await done.isVisible()) && (await also())) return;
    const errors = await page.getByRole('alert').allTextContents();
    if (errors.some((e) => e.trim() !== '')) throw new Error(`the dashboard showed an error: ${errors.join(' | ')}`);
    if (Date.now() > deadline) {
      const shown = (await page.locator('main').innerText().catch(() => '')).slice(0, 800);
      throw new Error(`timed out waiting for the action to succeed; the page shows:\n${shown}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function showing(page: Page, text: string): Promise<void> {
  await page.locator('.events .showing', { hasText: new RegExp(`^${text}$`) }).waitFor({ timeout: 15_000 });
  await page.locator('.events table[aria-busy="false"]').waitFor();
}

test('a tenant filters the events table and pages through it', async () => {
  const { context, page, problems } = await openPage(stack, WIDTHS.desktop);
  await signIn(page, main.key);
  const rows = page.locator('.events tbody tr[data-event-id]');

  await showing(page, 'Showing 1–25 of 60');
  expect(await rows.count()).toBe(25);
  await page.getByRole('button', { name: 'Page 3' }).click();
  await showing(page, 'Showing 51–60 of 60');
  expect(await rows.count()).toBe(10);
  expect(await page.getByRole('button', { name: 'Next page' }).isDisabled()).toBe(true);
  await page.getByRole('button', { name: 'Page 2' }).click();
  await showing(page, 'Showing 26–50 of 60');
  // Newest first, and the pages do not overlap.
  const second = await rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-event-id')));
  expect(new Set(second).size).toBe(25);

  // Metric filter, then its chip removes it.
  await page.getByLabel('Metric', { exact: true }).selectOption('call_seconds');
  await page.getByRole('button', { name: 'Apply filters' }).click();
  await showing(page, 'Showing 1–4 of 4');
  expect(await rows.first().locator('td').nth(2).textContent()).toBe('3m 20s');
  // The cost column, where the API estimates each event's cost: 200 s × 0.01 = 2.00.
  const withCost = await stack.api.call('GET', `/v1/tenants/${main.id}/events?metric=llm_tokens&limit=1`, { key: main.key });
  if (withCost.body.data[0].cost !== undefined) {
    expect(await rows.first().locator('td').nth(4).textContent()).toBe('2.00');
    await page.getByLabel('Metric', { exact: true }).selectOption('llm_tokens');
    await page.getByRole('button', { name: 'Apply filters' }).click();
    await showing(page, 'Showing 1–10 of 10');
    // 79 tokens × 0.00002 = 0.00158: below 0.01, significant digits instead of "0.00".
    expect(await rows.first().locator('td').nth(4).textContent()).toBe('0.00158');
    expect(await rows.first().locator('td').nth(2).textContent()).toBe('79 tokens');
  }
  await page.getByRole('button', { name: /^Remove filter Metric: / }).click();
  await showing(page, 'Showing 1–25 of 60');

  // A date range: from that day on, today included.
  const from = dayOf(new Date(Date.now() - 3 * 86_400_000).toISOString());
  const expected = main.events.filter((e) => e.timestamp >= `${from}T00:00:00`).length;
  await page.getByLabel('From').fill(from);
  await page.getByRole('button', { name: 'Apply filters' }).click();
  await showing(page, `Showing 1–${Math.min(25, expected)} of ${expected}`);
  await page.getByRole('button', { name: 'Clear all' }).click();
  await showing(page, 'Showing 1–25 of 60');

  // A property filter, where the API has one (GET …/events?property.<key>=).
  const byProperty = await stack.api.call('GET', `/v1/tenants/${main.id}/events?property.model=gpt-4o`, { key: main.key });
  await page.getByLabel('Property').fill('model');
  await page.getByLabel('Value').fill('gpt-4o');
  await page.getByRole('button', { name: 'Apply filters' }).click();
  if (byProperty.status === 200) {
    await showing(page, 'Showing 1–5 of 5');
    expect(await rows.evaluateAll((trs) => trs.every((tr) => tr.textContent!.includes('model: gpt-4o')))).toBe(true);
  } else {
    expect(byProperty.status).toBe(422);
    await page.getByText('This API does not filter events by property yet.').waitFor();
  }
  await page.getByRole('button', { name: 'Clear all' }).click();
  await showing(page, 'Showing 1–25 of 60');

  // Nothing matches: the empty state.
  const tomorrow = dayOf(new Date(Date.now() + 86_400_000).toISOString());
  await page.getByLabel('From').fill(tomorrow);
  await page.getByRole('button', { name: 'Apply filters' }).click();
  await showing(page, 'Showing 0 of 0');
  await page.getByText('No usage events found').waitFor();

  await expectAccessible(page);
  expectClean(problems);
  await context.close();
});

test('the usage cards refresh while the page is open, without a reload', async () => {
  const tenant = await createTenant(stack.api, planId, 'Dynamo Desk');
  const { context, page, problems } = await openPage(stack, WIDTHS.desktop);
  await signIn(page, tenant.key);
  const badge = page.locator('.meter-card[data-metric="llm_tokens"] .badge');
  await badge.waitFor();
  expect(await badge.textContent()).toBe('0%');
  let navigations = 0;
  page.on('framenavigated', () => (navigations += 1));
  await ingest(stack.api, tenant, [{ id: 'live-1', metric: 'llm_tokens', quantity: 850, timestamp: new Date(Date.now() - 1000).toISOString() }]);
  await page.locator('.meter-card[data-metric="llm_tokens"] .badge', { hasText: '85%' }).waitFor({ timeout: 15_000 });
  expect(await barColour(page, 'llm_tokens')).toBe(AMBER);
  await page.getByTestId('usage-banner').waitFor();
  expect(navigations).toBe(0);
  expectClean(problems);
  await context.close();
});

test('a tenant gets through sign-in, the skip link, a banner and the pager with the keyboard alone', async () => {
  const { context, page, problems } = await openPage(stack, WIDTHS.phone);
  await page.goto('/dashboard');
  await page.getByLabel('API key').waitFor();
  const focused = () => page.evaluate(() => {
    const el = document.activeElement;
    return el?.getAttribute('aria-label') ?? el?.getAttribute('name') ?? el?.textContent ?? '';
  });
  await page.keyboard.press('Tab');
  expect(await focused()).toBe('api_key');
  await page.keyboard.type(main.key);
  await page.keyboard.press('Enter');
  await page.getByRole('button', { name: 'Sign out' }).waitFor();
  await showing(page, 'Showing 1–25 of 60');
  await page.keyboard.press('Tab');
  expect(await focused()).toBe('Skip to content');
  /** Tabs forward until `name` has focus (at most 60 stops), so every stop on the way is reachable. */
  const tabTo = async (name: string) => {
    for (let i = 0; i < 60 && (await focused()) !== name; i += 1) await page.keyboard.press('Tab');
    expect(await focused()).toBe(name);
  };
  await tabTo('Dismiss the storage_bytes 90 % banner');
  await page.keyboard.press('Space');
  await countIs(page.getByTestId('usage-banner'), 1);
  await tabTo('Page 2');
  await page.keyboard.press('Enter');
  await showing(page, 'Showing 26–50 of 60');
  expectClean(problems);
  await context.close();
});

test('a tenant downloads an invoice PDF that parses', async () => {
  const { context, page, problems } = await openPage(stack, WIDTHS.desktop);
  await signIn(page, billed.key);
  const link = page.locator(`tr[data-invoice-id="${billed.invoiceId}"] a`, { hasText: 'Download PDF' });
  await link.waitFor();
  const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
  const file = await download.path();
  const bytes = fs.readFileSync(file);
  expect(bytes.subarray(0, 5).toString('latin1')).toBe('%PDF-');
  const text = await pdfText(bytes);
  expect(text).toContain('Borealis Bots');
  expect(text).toMatch(/api_requests/);
  expectClean(problems);
  await context.close();
});

test('a tenant session cannot open another tenant, nor admin pages', async () => {
  const { context, page, problems } = await openPage(stack, WIDTHS.desktop);
  await signIn(page, main.key);
  await showRoute(page, `/tenants/${billed.id}`);
  await page.getByRole('heading', { name: 'Tenant not found' }).waitFor();
  expect(await page.locator('.meter-card').count()).toBe(0);
  const status = (path: string) => page.evaluate(async (p) => (await fetch(p)).status, path);
  expect(await status(`/v1/tenants/${billed.id}/usage`)).toBe(404);
  expect(await status(`/v1/tenants/${billed.id}/invoices`)).toBe(404);
  expect(await status(`/v1/invoices/${billed.invoiceId}/pdf`)).toBe(404);
  expect(await status('/v1/tenants')).toBe(403);
  expect(await status(`/v1/tenants/${main.id}/usage`)).toBe(200);
  await showRoute(page, '/tenants');
  await page.getByRole('heading', { name: 'Page not found' }).waitFor();
  expectClean(problems);
  await context.close();
});

test('the session cookie is httpOnly, SameSite=Strict and signed; writes need the CSRF token; sign-out ends it', async () => {
  const { context, page, problems } = await openPage(stack, WIDTHS.desktop);
  const served = await page.goto('/dashboard');
  const csp = served!.headers()['content-security-policy']!;
  expect(csp).toContain("script-src 'self'");
  expect(csp).toContain("style-src 'self'");
  expect(csp).toContain("default-src 'none'");
  expect(csp).not.toContain('unsafe-inline');
  await signIn(page, main.key);

  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === 'tally_session')!;
  expect(session).toMatchObject({ httpOnly: true, sameSite: 'Strict', path: '/' });
  expect(session.value).not.toContain(main.key);
  expect(Buffer.from(session.value.split('.')[0]!, 'base64url').toString()).not.toContain(main.key.slice(3));
  expect(await page.evaluate(() => document.cookie)).not.toContain('tally_session');
  const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + location.href);
  expect(stored).not.toContain(main.key);

  // A write on the session without the token, or with a wrong one, is refused; with it, it passes.
  const rule = { metric: 'llm_tokens', threshold: 50, channel: { type: 'email', to: 'ops@example.com' } };
  const post = (token: string | null) =>
    page.evaluate(
      async ({ path, body, token }) => {
        const headers: Record<string, string> = { 'Content-Type': 'application/json' };
        if (token !== null) headers['X-CSRF-Token'] = token;
        const res = await fetch(path, { method: 'POST', headers, body: JSON.stringify(body) });
        return { status: res.status, code: res.status >= 400 ? (await res.json()).code : undefined };
      },
      { path: `/v1/tenants/${main.id}/alert-rules`, body: rule, token },
    );
  expect(await post(null)).toEqual({ status: 403, code: 'forbidden' });
  expect(await post('not-the-token')).toEqual({ status: 403, code: 'forbidden' });
  const token = await page.evaluate(async () => (await (await fetch('/dashboard/session')).json()).csrf_token as string);
  expect((await post(token)).status).toBe(201);

  // A forged cookie (the payload changed to another tenant) is refused.
  const [payload, signature] = session.value.split('.');
  const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString()) as Record<string, unknown>;
  const forged = `${Buffer.from(JSON.stringify({ ...claims, tid: billed.id })).toString('base64url')}.${signature}`;
  const forgedRes = await fetch(`${stack.api.baseUrl}/v1/tenants/${billed.id}/usage`, { headers: { cookie: `tally_session=${forged}` } });
  expect(forgedRes.status).toBe(401);

  // Signing in from another site is refused (login CSRF).
  const crossSite = await fetch(`${stack.api.baseUrl}/dashboard/session`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', origin: 'https://evil.example' },
    body: JSON.stringify({ api_key: main.key }),
  });
  expect(crossSite.status).toBe(403);

  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByLabel('API key').waitFor();
  expect((await context.cookies()).find((c) => c.name === 'tally_session')).toBeUndefined();
  expect(await page.evaluate(async () => (await fetch('/dashboard/session')).status)).toBe(401);
  expectClean(problems);
  await context.close();
});

describe('finance and ops', () => {
  test('the tenants list sorts by usage, cost and alert level, and searches', async () => {
    const { context, page, problems } = await openPage(stack, WIDTHS.desktop);
    await signIn(page, stack.api.adminKey);
    await page.getByRole('heading', { name: 'Tenants' }).waitFor();
    const row = (id: string) => page.locator(`tr[data-tenant-id="${id}"]`);
    await row(main.id).waitFor();
    expect(await row(main.id).locator('.badge').textContent()).toBe('90%');
    await page.getByLabel('Search tenants').fill('Acme');
    await page.locator(`tr[data-tenant-id="${billed.id}"]`).waitFor({ state: 'detached' });
    expect(await row(main.id).isVisible()).toBe(true);
    await page.getByLabel('Search tenants').fill('');
    // Usage descending is the default: Acme (90 %) above Borealis (no usage in its new period).
    const order = () => page.locator('tr[data-tenant-id]').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-tenant-id')));
    const ids = await order();
    expect(ids.indexOf(main.id)).toBeLessThan(ids.indexOf(billed.id));
    await page.getByRole('button', { name: /^Cost/ }).click();
    expect(await page.locator('th[aria-sort="descending"]').textContent()).toContain('Cost');
    await page.getByRole('button', { name: /^Alert level/ }).click();
    const byAlert = await order();
    expect(byAlert.indexOf(main.id)).toBeLessThan(byAlert.indexOf(billed.id));
    await page.getByRole('button', { name: /^Alert level/ }).click();
    expect(await page.locator('th[aria-sort="ascending"]').textContent()).toContain('Alert level');
    await expectAccessible(page);
    expectClean(problems);
    await context.close();
  });

  test('finance closes a period (the confirmation names it), previews a rerun and confirms it', async () => {
    const tenant = await createTenant(stack.api, planId, 'Cobalt Calls');
    await ingest(stack.api, tenant, [{ id: 'c1', metric: 'call_seconds', quantity: 120, timestamp: new Date(Date.now() - 3_600_000).toISOString() }]);
    const period = (await stack.api.call('GET', `/v1/tenants/${tenant.id}`)).body.current_period;
    const { context, page, problems } = await openPage(stack, WIDTHS.desktop);
    await signIn(page, stack.api.adminKey);
    await showRoute(page, `/tenants/${tenant.id}`);
    await page.getByRole('heading', { name: 'Finance and operations' }).waitFor();
    expect(await page.locator('.plan-name').textContent()).toBe('Agent Pro');

    await page.getByRole('button', { name: 'Close period…' }).click();
    const dialog = page.getByRole('dialog');
    const name = await dialog.getByTestId('close-period-name').textContent();
    const fmt = (iso: string) => new Date(iso).toLocaleDateString('en-US', { month: 'short', day: 'numeric', year: 'numeric', timeZone: 'UTC' });
    expect(name).toBe(`${fmt(period.start)} – ${fmt(period.end)}`);
    await expectAccessible(page);
    await dialog.getByRole('button', { name: `Close period ${name}` }).click();
    await succeeds(page, page.getByText(/^Closed\. Invoice in_/));
    const periods = await stack.api.call('GET', `/v1/tenants/${tenant.id}/periods`);
    const closed = periods.body.data.find((p: any) => p.start === period.start);
    expect(closed.status).not.toBe('open');
    const invoiceId: string = closed.invoice_ids[0];

    // The invoice is finalized within moments (finalize: true); reload until it shows.
    const invoiceRow = page.locator(`tr[data-invoice-id="${invoiceId}"]`);
    for (let i = 0; i < 50; i += 1) {
      await page.reload();
      await page.getByRole('heading', { name: 'Invoices' }).waitFor();
      await page.locator('#invoices-heading ~ *').first().waitFor();
      if ((await invoiceRow.count()) > 0 && (await invoiceRow.locator('.status').textContent()) === 'finalized') break;
      await new Promise((r) => setTimeout(r, 300));
    }
    expect(await invoiceRow.locator('.status').textContent()).toBe('finalized');

    // Re-rated with a plan whose call_seconds cost 0.02 instead of 0.01: 120 s go from 1.20 to 2.40.
    const repriced = journeyPlan(unique('agent_repriced'));
    repriced.meters[1]!.pricing = { model: 'per_unit', unit_price: '0.02' };
    expect((await stack.api.call('POST', '/v1/plans', { body: repriced })).status).toBe(201);
    await invoiceRow.getByRole('button', { name: /^Rerun invoice/ }).click();
    await dialog.getByLabel('Reason').fill('repriced call minutes');
    await dialog.getByLabel('Re-rate with plan (optional)').fill(repriced.id);
    await dialog.getByRole('button', { name: 'Preview rerun' }).click();
    const dryRun = await stack.api.call('POST', `/v1/invoices/${invoiceId}/rerun`, { body: { reason: 'probe', plan_id: repriced.id, dry_run: true } });
    if (dryRun.status === 200) {
      const diff = dialog.getByTestId('rerun-diff');
      await diff.waitFor();
      const changed = diff.locator('tbody tr', { hasText: '$2.40' });
      expect(await changed.locator('td').evaluateAll((tds) => tds.slice(1).map((td) => td.textContent))).toEqual(['$1.20', '$2.40', '+$1.20']);
      await dialog.getByText('New total:').waitFor();
    } else {
      expect(dryRun.status).toBe(422);
      await dialog.getByText('This API cannot preview a rerun.').waitFor();
    }
    await expectAccessible(page);
    await dialog.getByRole('button', { name: 'Confirm rerun' }).click();
    await succeeds(page, page.getByRole('heading', { name: 'Invoices' }), async () => !(await dialog.isVisible()));
    const deadline = Date.now() + 20_000;
    let replaced: any;
    do {
      replaced = (await stack.api.call('GET', `/v1/invoices/${invoiceId}`)).body;
      if (replaced.status === 'void') break;
      await new Promise((r) => setTimeout(r, 200));
    } while (Date.now() < deadline);
    expect(replaced.status).toBe('void');
    expect(replaced.replaced_by).toBeTruthy();
    const next = await stack.api.call('GET', `/v1/invoices/${replaced.replaced_by}`);
    expect(next.body.lines.find((l: any) => l.metric === 'call_seconds').amount).toBe('2.40');
    expectClean(problems);
    await context.close();
  });

  test('a close whose answer was lost, confirmed again, answers the close already made: one period closes', async () => {
    const tenant = await createTenant(stack.api, planId, 'Delta Dialers');
    const { context, page, problems } = await openPage(stack, WIDTHS.desktop);
    await signIn(page, stack.api.adminKey);
    await showRoute(page, `/tenants/${tenant.id}`);
    await page.getByRole('heading', { name: 'Finance and operations' }).waitFor();
    // The first close reaches the API and is made, but its answer never reaches the page.
    const keys: string[] = [];
    await page.route('**/close-period', async (route) => {
      keys.push(route.request().headers()['idempotency-key'] ?? '');
      if (keys.length > 1) return route.continue();
      await route.fetch();
      await route.abort('connectionreset');
    });
    const dialog = page.getByRole('dialog');
    await page.getByRole('button', { name: 'Close period…' }).click();
    await dialog.getByRole('button', { name: /^Close period / }).click();
    await page.getByRole('alert').filter({ hasText: /\S/ }).waitFor();
    await page.getByRole('button', { name: 'Close period…' }).click();
    await dialog.getByRole('button', { name: /^Close period / }).click();
    await page.getByText(/^Closed\. Invoice in_/).waitFor();

    expect(keys).toHaveLength(2);
    expect(keys[0]).toMatch(/^dashboard-[0-9a-f]{32}$/);
    expect(keys[1]).toBe(keys[0]);
    const periods = (await stack.api.call('GET', `/v1/tenants/${tenant.id}/periods`)).body.data;
    // The first period, closed once, and the one its close opened: a second close would have closed that too.
    expect(periods.map((p: { status: string }) => p.status)).toEqual(['open', expect.stringMatching(/^(closed|invoiced)$/)]);
    expectClean(problems);
    await context.close();
  });

  test('open alerts across tenants, with acknowledge', async () => {
    const { context, page, problems } = await openPage(stack, WIDTHS.desktop);
    await signIn(page, stack.api.adminKey);
    await showRoute(page, '/alerts');
    await page.getByRole('heading', { name: 'Open alerts' }).waitFor();
    const triage = await stack.api.call('GET', '/v1/alerts?acknowledged=false&limit=100');
    if (triage.status === 404) {
      await page.getByText('This API has no alert triage yet').waitFor();
    } else {
      expect(triage.status).toBe(200);
      const alert = triage.body.data.find((a: any) => a.tenant_id === main.id);
      expect(alert).toBeDefined();
      const row = page.locator(`tr[data-alert-id="${alert.id}"]`);
      await succeeds(page, row);
      await expectAccessible(page);
      await row.getByRole('button', { name: /^Acknowledge/ }).click();
      await succeeds(page, page.getByRole('heading', { name: 'Open alerts' }), async () => (await row.count()) === 0);
      const after = await stack.api.call('GET', '/v1/alerts?acknowledged=false&limit=100');
      expect(after.body.data.some((a: any) => a.id === alert.id)).toBe(false);
    }
    // Monthly summaries of the month the main tenant's period started in, and their CSV.
    const month = (await stack.api.call('GET', `/v1/tenants/${main.id}`)).body.current_period.start.slice(0, 7);
    const summaries = await stack.api.call('GET', `/v1/summaries?month=${month}`);
    await showRoute(page, '/summaries');
    await page.getByRole('heading', { name: 'Monthly summaries' }).waitFor();
    if (summaries.status === 404) {
      await page.getByText('This API has no monthly summaries yet.').waitFor();
    } else {
      expect(summaries.status).toBe(200);
      await page.getByLabel('Month', { exact: true }).fill(month);
      const row = page.locator(`tr[data-summary-id^="${main.id}/"]`);
      await row.waitFor();
      expect(await row.textContent()).toContain('790 tokens');
      await expectAccessible(page);
      const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download CSV' }).click()]);
      const csv = fs.readFileSync(await download.path(), 'utf8');
      expect(csv.split(/\r?\n/)[0]).toMatch(/^tenant_id,month,currency,total,/);
      expect(csv).toContain(main.id);
    }
    expectClean(problems);
    await context.close();
  });
});
