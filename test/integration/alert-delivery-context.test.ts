import { findAlertToDeliver, insertAlertRuleWithinCap, insertAlerts, type AlertRuleRow } from '../../src/db/alerts';
import { COST_SUBJECT } from '../../src/contracts/ids';
import { storeWebhookSecretIfMissing } from '../../src/db/tenants';
import type { AlertRecord } from '../../src/contracts/ledger';
import { testDbForFile, unique } from '../support/stack';
import { createTenantFixture } from '../support/tenant-fixture';

/**
 * What an alert's delivery reads in one statement (`findAlertToDeliver`, src/db/alerts.ts): the
 * alert, its tenant's contact and webhook secret, its period's plan version, and exactly the rules it goes to.
 */
const db = testDbForFile();

const PERIOD = '2026-11-01T00:00:00.000Z';
const FIRED = '2026-11-20T10:00:00.000Z';

async function tenant(): Promise<string> {
  const tenantId = unique('deliver');
  await createTenantFixture(db, {
    tenantId,
    anchor: PERIOD,
    plan: {
      id: unique('plan'),
      name: 'Deliver',
      currency: 'USD',
      interval: 'month',
      base_fee: '0',
      cost_limit: '100',
      alert_thresholds: [80, 90, 100],
      grace_period_seconds: 0,
      meters: [{ metric: 'minutes', aggregation: 'sum', limit: 100, pricing: { model: 'per_unit', unit_price: '1' } }],
    },
  });
  return tenantId;
}

async function rule(tenantId: string, id: string, metric: string | null, threshold: string, deletedAt: string | null = null): Promise<void> {
  const row: AlertRuleRow = { id, tenant_id: tenantId, metric, threshold, channel: { type: 'webhook', url: `https://example.com/${id}` }, created_at: new Date('2026-11-02T00:00:00Z'), deleted_at: deletedAt ? new Date(deletedAt) : null };
  expect(await insertAlertRuleWithinCap(db, row)).toBe(true);
}

function alert(id: string, subject: string, threshold: number, covers: number[]): AlertRecord {
  return { id, subject, threshold, level: 'warning', status: 'notified', used: '91.5', limit: '100', covers, fired_at: FIRED };
}

test('a metric alert covering two thresholds goes to the rules on its metric at either, in force when it fired', async () => {
  const tenantId = await tenant();
  const other = await tenant();
  await rule(tenantId, `${tenantId}-r80`, 'minutes', '80');
  await rule(tenantId, `${tenantId}-r90`, 'minutes', '90');
  await rule(tenantId, `${tenantId}-r100`, 'minutes', '100'); // not covered
  await rule(tenantId, `${tenantId}-cost90`, null, '90'); // the cost, not the metric
  await rule(tenantId, `${tenantId}-gone`, 'minutes', '90', '2026-11-10T00:00:00Z'); // deleted before it fired
  await rule(tenantId, `${tenantId}-later`, 'minutes', '90', '2026-11-25T00:00:00Z'); // deleted after: still gets it
  await rule(other, `${other}-r90`, 'minutes', '90'); // another tenant's
  const id = `${tenantId}-a90`;
  await insertAlerts(db, tenantId, PERIOD, [alert(id, 'minutes', 90, [80, 90])]);

  const found = await findAlertToDeliver(db, id);
  expect(found).toMatchObject({
    alert: { id, tenant_id: tenantId, subject: 'minutes', status: 'notified' },
    tenant: { id: tenantId, name: tenantId, email: null, webhook_url: null, webhook_secret: null },
    covers: [80, 90],
  });
  expect(found!.alert.fired_at.toISOString()).toBe(FIRED);
  expect(found!.alert.period_start.toISOString()).toBe(PERIOD);
  expect(found!.plan).toMatchObject({ version: 1 });
  expect(found!.rules.map((r) => r.id).sort()).toEqual([`${tenantId}-later`, `${tenantId}-r80`, `${tenantId}-r90`].sort());
  expect(found!.rules.find((r) => r.id === `${tenantId}-r90`)!.channel).toEqual({ type: 'webhook', url: `https://example.com/${tenantId}-r90` });
});

test('a cost alert with no stored covers goes to the cost rules at its own threshold', async () => {
  const tenantId = await tenant();
  await rule(tenantId, `${tenantId}-cost100`, null, '100');
  await rule(tenantId, `${tenantId}-cost90`, null, '90');
  await rule(tenantId, `${tenantId}-m100`, 'minutes', '100');
  const id = `${tenantId}-c100`;
  await insertAlerts(db, tenantId, PERIOD, [alert(id, COST_SUBJECT, 100, [])]);

  const found = await findAlertToDeliver(db, id);
  expect(found!.covers).toEqual([100]);
  expect(found!.rules.map((r) => r.id)).toEqual([`${tenantId}-cost100`]);
});

test("the tenant's webhook secret comes with the alert, so a delivery signs without reading it again", async () => {
  const tenantId = await tenant();
  await storeWebhookSecretIfMissing(db, tenantId, `whsec_${tenantId}`);
  const id = `${tenantId}-a80`;
  await insertAlerts(db, tenantId, PERIOD, [alert(id, 'minutes', 80, [80])]);
  expect((await findAlertToDeliver(db, id))!.tenant.webhook_secret).toBe(`whsec_${tenantId}`);
});

test('no such alert: undefined', async () => {
  expect(await findAlertToDeliver(db, unique('nothing'))).toBeUndefined();
});
