import { writePeriodInvoice } from '../../src/db/invoices';
import { createPlanBody, usageEvent } from '../../src/api/schemas';
import { Dec, toDecimalString } from '../../src/domain/decimal';
import { ratePeriod } from '../../src/domain/rating';
import type { PlanVersion } from '../../src/domain/plan';
import { testDbForFile, unique } from '../support/stack';
import { createTenantFixture, type TenantFixture } from '../support/tenant-fixture';

/**
 * Validation and storage agree on amounts (#6): a period made of the largest values the API
 * admits (quantities of 10^15, prices and fees of 18 integer digits and 10 decimals, packages of
 * 0.000001) is invoiced, and the stored invoice is exactly what the rating computes. Before the
 * money columns were widened, 1,000 events of 10^15 units at a price of 1 already overflowed
 * `numeric(28,10)` ("numeric field overflow"), and the invoice could never be written.
 *
 * At the database level: the events are written straight into `usage_events` (as the ledger
 * stores them), and `writePeriodInvoice` rates and writes the invoice as the invoice workflow's
 * activity does.
 */
const db = testDbForFile();

/** The largest price, fee or cost limit the API admits: 18 integer digits, 10 decimals. */
const MAX_PRICE = '999999999999999999.9999999999';
/** The largest quantity of one event. */
const MAX_QUANTITY = 1e15;
const ANCHOR = '2026-01-01T00:00:00.000Z';

/** Stores `count` events of `metric` in the fixture's period, cycling through `quantities`. */
async function storeEvents(t: TenantFixture, metric: string, count: number, quantities: number[]): Promise<string[]> {
  const batch = unique('batch');
  await db.raw(
    `INSERT INTO usage_events (tenant_id, event_id, metric, quantity, "timestamp", period_start, batch_id, received_at)
     SELECT ?, ? || '-' || g, ?, (?::numeric[])[1 + (g % ?)], ?::timestamptz + g * interval '1 millisecond', ?::timestamptz, ?, now()
       FROM generate_series(1, ?) AS g`,
    [t.tenantId, metric, metric, quantities.map(String), quantities.length, t.period.start, t.period.start, batch, count],
  );
  return Array.from({ length: count }, (_, i) => String(quantities[(i + 1) % quantities.length]));
}

/** Each meter's counter, computed here from what was stored (not by the code under test). */
function counterOf(aggregation: string, quantities: string[]): string {
  switch (aggregation) {
    case 'sum':
      return toDecimalString(quantities.reduce((sum, q) => sum.plus(q), new Dec(0)));
    case 'count':
      return String(quantities.length);
    case 'max':
      return toDecimalString(Dec.max(...quantities));
    default:
      return toDecimalString(quantities[quantities.length - 1]!); // latest: the last timestamp
  }
}

/** Invoices the fixture's period (finalized) and checks the stored invoice against `ratePeriod`. */
async function invoiceAndCompare(t: TenantFixture, counters: Record<string, string>): Promise<string> {
  const rated = ratePeriod(t.plan, counters);
  const summary = await writePeriodInvoice(db, { tenant_id: t.tenantId, period_start: t.period.start, version: 1 }, true);
  expect(summary).toMatchObject({ status: 'finalized', total: rated.total, lines: rated.lines.length });
  const invoice = await db('invoices').where({ id: summary.invoice_id }).first();
  expect({ subtotal: invoice.subtotal, total: invoice.total, status: invoice.status }).toEqual({ subtotal: rated.subtotal, total: rated.total, status: 'finalized' });
  const lines = await db('invoice_lines').where({ invoice_id: summary.invoice_id }).orderBy('position').select('metric', 'quantity', 'amount');
  expect(lines).toEqual(rated.lines.map((l) => ({ metric: l.metric, quantity: l.quantity, amount: l.amount })));
  expect(await db('periods').where({ tenant_id: t.tenantId, start: t.period.start }).first('status')).toEqual({ status: 'invoiced' });
  return rated.total;
}

test('1,000 events of 10^15 units at a price of 1 are invoiced: 10^18', async () => {
  const plan = createPlanBody.parse({
    id: unique('big'),
    name: 'Big',
    currency: 'USD',
    interval: 'month',
    base_fee: '0',
    meters: [{ metric: 'units', aggregation: 'sum', pricing: { model: 'per_unit', unit_price: '1' } }],
  }) as Omit<PlanVersion, 'version'>;
  const t = await createTenantFixture(db, { tenantId: unique('big'), plan, anchor: ANCHOR });
  const stored = await storeEvents(t, 'units', 1_000, [MAX_QUANTITY]);
  expect(await invoiceAndCompare(t, { units: counterOf('sum', stored) })).toBe('1000000000000000000.00');
});

test('the largest admissible period is invoiced exactly: every pricing model and aggregation at its largest values', async () => {
  const tiers = [
    { up_to: MAX_QUANTITY, unit_price: MAX_PRICE, flat_fee: MAX_PRICE },
    { up_to: null, unit_price: MAX_PRICE, flat_fee: MAX_PRICE },
  ];
  const meters = [
    { metric: 'per_unit', aggregation: 'sum', limit: Number.MAX_VALUE, pricing: { model: 'per_unit', unit_price: MAX_PRICE } },
    { metric: 'graduated', aggregation: 'sum', pricing: { model: 'graduated', tiers } },
    { metric: 'volume', aggregation: 'sum', pricing: { model: 'volume', tiers } },
    { metric: 'package', aggregation: 'sum', pricing: { model: 'package', package_size: 0.000001, package_price: MAX_PRICE } },
    { metric: 'counted', aggregation: 'count', pricing: { model: 'per_unit', unit_price: MAX_PRICE } },
    { metric: 'gauge', aggregation: 'max', pricing: { model: 'per_unit', unit_price: MAX_PRICE } },
    { metric: 'reading', aggregation: 'latest', pricing: { model: 'package', package_size: 0.000001, package_price: MAX_PRICE } },
  ];
  const body = { id: unique('max'), name: 'Largest', currency: 'USD', interval: 'month', base_fee: MAX_PRICE, cost_limit: MAX_PRICE, meters };
  // The API admits this plan and these quantities, and nothing larger.
  const plan = createPlanBody.parse(body) as Omit<PlanVersion, 'version'>;
  expect(createPlanBody.safeParse({ ...body, base_fee: '1000000000000000000' }).success).toBe(false);
  expect(createPlanBody.safeParse({ ...body, meters: [{ ...meters[3], pricing: { ...meters[3]!.pricing, package_size: 0.0000001 } }] }).success).toBe(false);
  expect(usageEvent.safeParse({ id: 'e', metric: 'm', quantity: MAX_QUANTITY }).success).toBe(true);
  expect(usageEvent.safeParse({ id: 'e', metric: 'm', quantity: MAX_QUANTITY + 0.125 }).success).toBe(false);
  expect(usageEvent.safeParse({ id: 'e', metric: 'm', quantity: 0.0000001 }).success).toBe(false);

  const t = await createTenantFixture(db, { tenantId: unique('max'), plan, anchor: ANCHOR });
  // Ten full batches per meter, mostly of the largest quantity, with the smallest fraction mixed
  // in so every amount carries all its decimals.
  const quantities = [MAX_QUANTITY, MAX_QUANTITY, MAX_QUANTITY, 0.000001, 123456789.123456];
  const counters: Record<string, string> = {};
  for (const meter of plan.meters) counters[meter.metric] = counterOf(meter.aggregation, await storeEvents(t, meter.metric, 10_000, quantities));
  expect(counters.per_unit).toBe('6000000246913578246.914');

  const total = await invoiceAndCompare(t, counters);
  // About 6 × 10^36 per sum meter: far beyond the 10^18 the old columns held.
  expect(total.length).toBeGreaterThan(40);

  // A cost alert on that period records the running cost, and a meter limit as large as the
  // API admits (the largest double) is stored too.
  await db('alerts').insert({
    id: unique('al'),
    tenant_id: t.tenantId,
    period_start: t.period.start,
    subject: '$cost',
    threshold: 1000,
    level: 'exceeded',
    status: 'notified',
    used: total,
    limit: new Dec(Number.MAX_VALUE).toFixed(),
    fired_at: new Date(),
  });
  const alert = await db('alerts').where({ tenant_id: t.tenantId }).first('used', 'limit');
  expect(alert).toEqual({ used: total, limit: new Dec(Number.MAX_VALUE).toFixed() });
});
