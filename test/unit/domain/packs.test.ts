import fc from 'fast-check';
import { Dec } from '../../../src/domain/decimal';
import { comparePacks, defaultPackExpiry, drawDown, drawnInPeriod, effectiveLimit, packRemaining, packStatus, rateWithPacks, type Pack } from '../../../src/domain/packs';
import type { PlanVersion } from '../../../src/domain/plan';

const P1 = '2026-11-01T00:00:00.000Z';
const P2 = '2026-12-01T00:00:00.000Z';
const pack = (id: string, units: number, expires_at: string, purchased_at = '2026-10-15T00:00:00.000Z', draws: Record<string, string> = {}): Pack => ({
  id,
  metric: 'tokens',
  units: String(units),
  purchased_at,
  expires_at,
  draws,
});

test('the default expiry is 3 months after the purchase, clamped like monthly anniversaries', () => {
  expect(defaultPackExpiry('2026-11-30T10:00:00.000Z', 'UTC')).toBe('2027-02-28T10:00:00.000Z');
  expect(defaultPackExpiry('2027-01-31T00:00:00.000Z', 'UTC')).toBe('2027-04-30T00:00:00.000Z');
});

test('usage beyond the limit draws from the pack expiring first; the effective limit is limit + drawn + left', () => {
  const packs = [pack('late', 500, '2027-02-01T00:00:00.000Z'), pack('soon', 200, '2026-12-15T00:00:00.000Z')];
  expect(effectiveLimit('1000', packs, 'tokens', P1, '2026-11-20T00:00:00.000Z')).toBe('1700');
  const drawn = drawDown(packs, 'tokens', P1, '1350', '1000', '2026-11-20T00:00:00.000Z');
  expect(drawn.changed).toEqual([
    { pack_id: 'soon', units: '200' },
    { pack_id: 'late', units: '150' },
  ]);
  expect(effectiveLimit('1000', drawn.packs, 'tokens', P1, '2026-11-20T00:00:00.000Z')).toBe('1700');
  // Drawing again for the same counter draws nothing more.
  expect(drawDown(drawn.packs, 'tokens', P1, '1350', '1000', '2026-11-21T00:00:00.000Z').changed).toEqual([]);
  // After `soon` expires (having given everything), December's usage draws from `late` only.
  const december = drawDown(drawn.packs, 'tokens', P2, '1400', '1000', '2026-12-20T00:00:00.000Z');
  expect(december.changed).toEqual([{ pack_id: 'late', units: '350' }]);
  expect(packRemaining(december.packs.find((p) => p.id === 'late')!).toFixed()).toBe('0');
});

test('a pack that expires mid-period keeps what was drawn from it; what it had left is lost and reported', () => {
  const packs = [pack('soon', 200, '2026-11-15T00:00:00.000Z', '2026-10-15T00:00:00.000Z', { [P1]: '50' })];
  expect(effectiveLimit('1000', packs, 'tokens', P1, '2026-11-10T00:00:00.000Z')).toBe('1200');
  expect(effectiveLimit('1000', packs, 'tokens', P1, '2026-11-20T00:00:00.000Z')).toBe('1050');
  expect(packStatus(packs[0]!, '2026-11-20T00:00:00.000Z')).toEqual({ status: 'expired', remaining: '0', lost: '150' });
  expect(drawDown(packs, 'tokens', P1, '1300', '1000', '2026-11-20T00:00:00.000Z').changed).toEqual([]);
});

const arbPack = fc.record({
  id: fc.uuid(),
  metric: fc.constant('tokens'),
  units: fc.integer({ min: 1, max: 1000 }).map(String),
  purchased_at: fc.integer({ min: Date.parse('2026-09-01'), max: Date.parse('2026-11-30') }).map((ms) => new Date(ms).toISOString()),
  expires_at: fc.integer({ min: Date.parse('2026-11-01'), max: Date.parse('2027-03-01') }).map((ms) => new Date(ms).toISOString()),
  draws: fc.constant({} as Record<string, string>),
}).filter((p) => p.expires_at > p.purchased_at);

test('property: no pack unit is drawn twice, draws follow the expiry order, and usage is covered as far as packs allow', () => {
  fc.assert(
    fc.property(
      fc.uniqueArray(arbPack, { maxLength: 6, selector: (p) => p.id }),
      fc.array(fc.record({ period: fc.constantFrom(P1, P2), counter: fc.integer({ min: 0, max: 4000 }), at: fc.integer({ min: Date.parse('2026-11-01'), max: Date.parse('2026-12-31') }) }), { maxLength: 10 }),
      (initial, steps) => {
        let packs: Pack[] = initial;
        for (const step of steps) {
          const at = new Date(step.at).toISOString();
          const before = drawnInPeriod(packs, 'tokens', step.period);
          const result = drawDown(packs, 'tokens', step.period, step.counter, 1000, at);
          const used = result.changed.map((c) => result.packs.find((p) => p.id === c.pack_id)!);
          // In expiry order, each from a pack active then.
          expect([...used].sort(comparePacks)).toEqual(used);
          for (const p of used) expect(Date.parse(p.purchased_at) <= step.at && step.at < Date.parse(p.expires_at)).toBe(true);
          packs = result.packs;
          // Never more than a pack holds, across every period.
          for (const p of packs) expect(packRemaining(p).greaterThanOrEqualTo(0) && new Dec(p.units).minus(Object.values(p.draws).reduce((s, d) => s.plus(d), new Dec(0))).greaterThanOrEqualTo(0)).toBe(true);
          // Draws never shrink, and never go past what the usage needs.
          const after = drawnInPeriod(packs, 'tokens', step.period);
          expect(after.greaterThanOrEqualTo(before)).toBe(true);
          const need = Dec.max(0, new Dec(step.counter).minus(1000));
          if (after.greaterThan(before)) expect(after.lessThanOrEqualTo(need)).toBe(true);
        }
      },
    ),
  );
});

test('the invoice bills the counter less the units drawn, shows the draws per pack, and a priced pack once', () => {
  const plan: PlanVersion = {
    id: 'p', version: 1, name: 'P', currency: 'USD', interval: 'month', base_fee: '0', alert_thresholds: [80, 90, 100], grace_period_seconds: 0,
    meters: [{ metric: 'tokens', aggregation: 'sum', limit: 1000, hard_limit: true, pricing: { model: 'per_unit', unit_price: '0.01' } }],
  };
  const packs = [pack('a', 500, '2027-02-01T00:00:00.000Z', '2026-11-10T00:00:00.000Z', { [P1]: '300' }), pack('b', 200, '2026-12-15T00:00:00.000Z', '2026-11-10T00:00:00.000Z', { [P1]: '200' })];
  const rated = rateWithPacks(plan, { tokens: '1500' }, packs, P1, [{ pack_id: 'a', metric: 'tokens', units: '500', price: '5' }]);
  expect(rated.lines).toEqual([
    expect.objectContaining({ metric: 'tokens', quantity: '1000', amount: '10.00', pack_draws: [{ pack_id: 'b', units: '200' }, { pack_id: 'a', units: '300' }] }),
    { kind: 'pack', metric: 'tokens', description: 'Add-on pack a: 500 tokens', quantity: '1', amount: '5.00' },
  ]);
  expect(rated.total).toBe('15.00');
});
