import type { Knex } from 'knex';
import type { Db } from './knex';
import { keysetPage, type Page, type PageRequest } from './pagination';
import { normalizeDecimal } from './numeric';
import { readLimitOverrides } from './entitlements';
import { aggregateStoredGroups } from './dimensions';
import { drawDown, packCharges, rateWithPacks, type Pack } from '../domain/packs';
import { meterLimit } from '../domain/limits';
import type { PlanVersion } from '../domain/plan';
import type { RatedPeriod } from '../domain/rating';
import { Dec } from '../domain/decimal';

/**
 * Add-on packs as PostgreSQL holds them (`packs`, `pack_draws`). Draws are stored per pack and
 * period as absolute units: the tenant's ledger records what it drew as usage was counted, the
 * finalization draws what the ledger had not yet (in its own transaction), and a rerun
 * recomputes its period's draws. A pack's remainder is always its units less every period's
 * draws, so no unit is ever drawn twice.
 */

/** A pack row as pg returns it. */
export interface PackRow {
  tenant_id: string;
  id: string;
  metric: string;
  units: string;
  price: string | null;
  currency: string;
  purchased_at: Date;
  expires_at: Date;
  created_at: Date;
}

/** A pack to store: `id` is the client's idempotency key. */
export type NewPack = Omit<PackRow, 'tenant_id' | 'created_at'>;

/** Stores a pack once per (tenant, id): the same id again answers the stored pack with `created: false`. */
export async function insertPack(db: Db, tenantId: string, pack: NewPack): Promise<{ pack: PackRow; created: boolean }> {
  const inserted = await db('packs').insert({ tenant_id: tenantId, ...pack }).onConflict(['tenant_id', 'id']).ignore().returning<PackRow[]>('*');
  if (inserted[0]) return { pack: inserted[0], created: true };
  return { pack: await db('packs').where({ tenant_id: tenantId, id: pack.id }).first<PackRow>(), created: false };
}

/**
 * Withdraws a pack nothing has drawn from yet (a purchase its tenant's run did not confirm), and
 * answers whether it did. A pack with draws stays: the run took it after all and drew usage from
 * it (the draws' foreign key refuses the delete).
 */
export async function removeUndrawnPack(db: Db, tenantId: string, packId: string): Promise<boolean> {
  try {
    await db('packs').where({ tenant_id: tenantId, id: packId }).delete();
    return true;
  } catch (err) {
    if ((err as { code?: unknown }).code === '23503') return false;
    throw err;
  }
}

/** A page of the tenant's packs, newest first. */
export async function listPacks(db: Db, tenantId: string, page: PageRequest): Promise<Page<PackRow>> {
  const scope = db('packs').where({ tenant_id: tenantId });
  return keysetPage<PackRow>(scope.clone().select('*'), page, { sort: ['created_at', 'id'], idColumn: 'id', cursorScope: scope });
}

/** Every pack of the tenant with its draws per period (`forUpdate` inside an invoice transaction). */
export async function readPacks(db: Db | Knex.Transaction, tenantId: string, options: { forUpdate?: boolean } = {}): Promise<Pack[]> {
  const query = db('packs').where({ tenant_id: tenantId }).orderBy([{ column: 'expires_at' }, { column: 'id' }]);
  const rows = await (options.forUpdate ? query.forUpdate() : query).select<PackRow[]>('*');
  if (rows.length === 0) return [];
  const draws = await db('pack_draws').where({ tenant_id: tenantId }).select<Array<{ pack_id: string; period_start: Date; units: string }>>('pack_id', 'period_start', 'units');
  return rows.map((r) => packFromRow(r, draws.filter((d) => d.pack_id === r.id)));
}

/** A stored pack with its draws, as the ledger and the reads take it. */
export function packFromRow(
  row: Pick<PackRow, 'id' | 'metric' | 'units' | 'price' | 'purchased_at' | 'expires_at'>,
  draws: ReadonlyArray<{ period_start: Date; units: string }>,
): Pack {
  return {
    id: row.id,
    metric: row.metric,
    units: normalizeDecimal(row.units),
    purchased_at: row.purchased_at.toISOString(),
    expires_at: row.expires_at.toISOString(),
    ...(row.price === null ? {} : { price: normalizeDecimal(row.price) }),
    draws: Object.fromEntries(draws.map((d) => [d.period_start.toISOString(), normalizeDecimal(d.units)])),
  };
}

/**
 * Stores draws the ledger decided for a period (absolute units per pack). Draws only grow, never
 * past what the pack holds beside its other periods' draws (the packs are locked, as the invoice
 * transactions lock them, so a ledger deciding on facts a finalization has since moved can never
 * draw a unit twice), and a period already invoiced is left as its invoice drew it.
 */
export async function recordPackDraws(db: Db, tenantId: string, periodStart: string, draws: ReadonlyArray<{ pack_id: string; units: string }>): Promise<void> {
  if (draws.length === 0) return;
  await db.transaction(async (trx) => {
    const period = await trx('periods').where({ tenant_id: tenantId, start: periodStart }).first<{ status: string } | undefined>('status');
    if (!period || period.status === 'invoiced') return;
    const packs = new Map((await readPacks(trx, tenantId, { forUpdate: true })).map((p) => [p.id, p]));
    for (const draw of draws) {
      const pack = packs.get(draw.pack_id);
      if (!pack) continue;
      const elsewhere = Object.entries(pack.draws).filter(([start]) => start !== new Date(periodStart).toISOString()).reduce((sum, [, units]) => sum.plus(units), new Dec(0));
      const stored = new Dec(pack.draws[new Date(periodStart).toISOString()] ?? 0);
      const units = Dec.max(stored, Dec.min(draw.units, new Dec(pack.units).minus(elsewhere)));
      if (units.equals(stored)) continue;
      await trx('pack_draws')
        .insert({ tenant_id: tenantId, pack_id: draw.pack_id, period_start: periodStart, units: units.toFixed() })
        .onConflict(['tenant_id', 'pack_id', 'period_start'])
        .merge({ units: units.toFixed(), updated_at: trx.fn.now() });
    }
  });
}

/**
 * A period rated with its packs and its dimensioned meters' groups, as an invoice writes it (one function for the finalization,
 * drafts, reruns and their previews). `top-up` keeps the period's stored draws and draws what its
 * usage still needs; `recompute` (a rerun) starts the period's draws from nothing, so they follow
 * the plan the rerun rates with. Either way units are drawn from the packs active at the period's
 * last instant, earliest expiry first, within what other periods left of them. Nothing is
 * stored: `storePeriodDraws` does, in the caller's transaction.
 */
export async function ratePeriodWithPacks(
  trx: Db | Knex.Transaction,
  tenantId: string,
  period: { start: string; end: string },
  plan: PlanVersion,
  counters: Readonly<Record<string, string>>,
  mode: 'top-up' | 'recompute',
  options: { forUpdate?: boolean } = {},
): Promise<{ rated: RatedPeriod; packs: Pack[] }> {
  let packs = await readPacks(trx, tenantId, options);
  if (mode === 'recompute') packs = packs.map((p) => ({ ...p, draws: Object.fromEntries(Object.entries(p.draws).filter(([start]) => start !== period.start)) }));
  if (packs.some((p) => plan.meters.some((m) => m.metric === p.metric))) {
    const overrides = await readLimitOverrides(trx, tenantId);
    const at = new Date(Date.parse(period.end) - 1).toISOString();
    for (const meter of plan.meters) packs = drawDown(packs, meter.metric, period.start, counters[meter.metric] ?? '0', meterLimit(meter, overrides), at).packs;
  }
  const groups = await aggregateStoredGroups(trx, tenantId, period.start, plan.meters);
  return { rated: rateWithPacks(plan, counters, packs, period.start, packCharges(packs, period), groups), packs };
}

/** Stores a period's draws as `ratePeriodWithPacks` left them (absolute; a pack drawn nothing for it has no row). */
export async function storePeriodDraws(trx: Knex.Transaction, tenantId: string, periodStart: string, packs: readonly Pack[]): Promise<void> {
  await trx('pack_draws').where({ tenant_id: tenantId, period_start: periodStart }).delete();
  const rows = packs.filter((p) => p.draws[periodStart] !== undefined && Number(p.draws[periodStart]) > 0);
  if (rows.length === 0) return;
  await trx('pack_draws').insert(rows.map((p) => ({ tenant_id: tenantId, pack_id: p.id, period_start: periodStart, units: p.draws[periodStart] })));
}
