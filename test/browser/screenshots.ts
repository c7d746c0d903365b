import fs from 'node:fs';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { closeAndFinalize, createTenant, ingest, openPage, showRoute, seedEvents, seedUsageTenant, signIn, startDashboardStack, WIDTHS, type DashboardStack } from './support';
import { unique } from '../support/stack';

/**
 * `npm run screenshots`: every page of the dashboard at 375 px and 1440 px, written to
 * docs/screenshots/ (TALLY_SCREENSHOTS_DIR) for the README. Not a test of behaviour: the
 * journeys in dashboard.test.ts are; this only renders the same seeded system.
 */
const OUT = process.env.TALLY_SCREENSHOTS_DIR!;
let stack: DashboardStack;
let tenant: { id: string; key: string };

beforeAll(async () => {
  fs.mkdirSync(OUT, { recursive: true });
  stack = await startDashboardStack();
  const planId = unique('agent_pro');
  for (const name of ['Borealis Bots', 'Cobalt Calls']) await seedUsageTenant(stack.api, planId, name);
  // The tenant shown: two invoiced periods before the current one, for the history and invoices.
  tenant = await createTenant(stack.api, planId, 'Acme Agents');
  for (const [i, tokens, seconds] of [[1, 310, 400], [2, 540, 650]] as const) {
    await ingest(stack.api, tenant, [
      { id: `hist-tok-${i}`, metric: 'llm_tokens', quantity: tokens },
      { id: `hist-call-${i}`, metric: 'call_seconds', quantity: seconds },
    ]);
    await closeAndFinalize(stack.api, tenant.id);
  }
  // The seeded usage, stamped now (the period began at the last close).
  await ingest(stack.api, tenant, seedEvents().map(({ timestamp: _stamped, ...event }) => event));
});

afterAll(async () => {
  await stack?.stop();
});

async function shoot(page: Page, name: string, width: number): Promise<void> {
  await page.waitForLoadState('networkidle');
  await page.locator('[aria-busy="true"]').first().waitFor({ state: 'detached', timeout: 10_000 }).catch(() => undefined);
  await page.screenshot({ path: path.join(OUT, `${name}-${width}.png`), fullPage: true });
}

test.each([WIDTHS.phone, WIDTHS.desktop])('every page at %i px', async (width) => {
  const asTenant = await openPage(stack, width);
  await asTenant.page.goto('/dashboard');
  await asTenant.page.getByLabel('API key').waitFor();
  await shoot(asTenant.page, 'sign-in', width);
  await signIn(asTenant.page, tenant.key);
  await asTenant.page.locator('.meter-card').first().waitFor();
  await asTenant.page.locator('.events tbody tr[data-event-id]').first().waitFor();
  await shoot(asTenant.page, 'tenant-usage', width);
  await asTenant.context.close();

  const asAdmin = await openPage(stack, width);
  await signIn(asAdmin.page, stack.api.adminKey);
  await asAdmin.page.locator('tr[data-tenant-id]').first().waitFor();
  await shoot(asAdmin.page, 'finance-tenants', width);
  await showRoute(asAdmin.page, `/tenants/${tenant.id}`);
  await asAdmin.page.getByRole('heading', { name: 'Finance and operations' }).waitFor();
  await asAdmin.page.locator('.events tbody tr[data-event-id]').first().waitFor();
  await shoot(asAdmin.page, 'finance-tenant', width);
  await showRoute(asAdmin.page, '/alerts');
  await asAdmin.page.getByRole('heading', { name: 'Open alerts' }).waitFor();
  await shoot(asAdmin.page, 'finance-alerts', width);
  await showRoute(asAdmin.page, '/summaries');
  await asAdmin.page.getByRole('heading', { name: 'Monthly summaries' }).waitFor();
  await shoot(asAdmin.page, 'finance-summaries', width);
  await asAdmin.context.close();
});
