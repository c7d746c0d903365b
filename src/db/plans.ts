import type { Db } from './knex';
import type { PlanVersion } from '../domain/plan';

/** Plans are versioned: saving an existing id appends a version; running periods keep theirs. */
export async function savePlanVersion(db: Db, plan: Omit<PlanVersion, 'version'>): Promise<PlanVersion> {
  return db.transaction(async (trx) => {
    const existing = await trx('plans').where({ id: plan.id }).forUpdate().first<{ latest_version: number } | undefined>();
    const version = existing ? existing.latest_version + 1 : 1;
    if (existing) await trx('plans').where({ id: plan.id }).update({ latest_version: version });
    else await trx('plans').insert({ id: plan.id, latest_version: version });
    const saved: PlanVersion = { ...plan, version };
    await trx('plan_versions').insert({
      plan_id: plan.id,
      version,
      name: plan.name,
      currency: plan.currency,
      interval: plan.interval,
      base_fee: plan.base_fee,
      cost_limit: plan.cost_limit ?? null,
      grace_period_seconds: plan.grace_period_seconds,
      definition: JSON.stringify(saved),
    });
    return saved;
  });
}

/** A plan's version as stored (the latest when `version` is omitted). */
export async function findPlanVersion(db: Db, planId: string, version?: number): Promise<PlanVersion | undefined> {
  const query = db('plan_versions').where({ plan_id: planId });
  const row = await (version === undefined ? query.orderBy('version', 'desc') : query.andWhere({ version })).first<
    { definition: PlanVersion } | undefined
  >();
  return row?.definition;
}

/** Every plan at its latest version (a query to scope, sort and page; selects `definition`). */
export function latestPlanVersions(db: Db) {
  return db('plan_versions as v')
    .join('plans as p', function joinLatest() {
      this.on('p.id', '=', 'v.plan_id').andOn('p.latest_version', '=', 'v.version');
    })
    .select('v.definition');
}
