import type { Knex } from 'knex';
import type { Db } from './knex';
import { keysetPage, type Page, type PageRequest } from './pagination';
import type { PlanVersion } from '../domain/plan';

/**
 * Plans are versioned: saving an existing id appends a version; running periods keep theirs.
 *
 * The version is taken by one upsert: concurrent saves of a new id cannot both insert it (a
 * read-then-insert would let both see no row and one fail on the primary key), and the row it
 * locks until commit hands out the versions one at a time, 1, 2, 3... without gaps.
 */
export async function savePlanVersion(db: Db, plan: Omit<PlanVersion, 'version'>): Promise<PlanVersion> {
  return db.transaction(async (trx) => {
    const taken = await trx.raw<{ rows: Array<{ latest_version: number }> }>(
      `INSERT INTO plans (id, latest_version) VALUES (?, 1)
       ON CONFLICT (id) DO UPDATE SET latest_version = plans.latest_version + 1
       RETURNING latest_version`,
      [plan.id],
    );
    const version = taken.rows[0]!.latest_version;
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

/**
 * A plan's version as stored (the latest when `version` is omitted). A given version never
 * changes, so it is read from its database once per process (a missing one is asked again),
 * and handed out frozen: every caller shares it. The cache is per database (its connection), so
 * pools and transactions on one database share it and a process that talks to several (the test
 * suites) never mixes their plans.
 */
export function findPlanVersion(db: Db | Knex.Transaction, planId: string, version?: number): Promise<PlanVersion | undefined> {
  if (version === undefined) return readPlanVersion(db, planId);
  const key = `${JSON.stringify(db.client.config.connection)}|${planId}@${version}`;
  let found = storedVersions.get(key);
  if (!found) {
    found = readPlanVersion(db, planId, version).then((plan) => plan && deepFreeze(plan));
    storedVersions.set(key, found);
    void found.then((plan) => plan ?? storedVersions.delete(key), () => storedVersions.delete(key));
  }
  return found;
}

const storedVersions = new Map<string, Promise<PlanVersion | undefined>>();

async function readPlanVersion(db: Db | Knex.Transaction, planId: string, version?: number): Promise<PlanVersion | undefined> {
  const query = db('plan_versions').where({ plan_id: planId });
  const row = await (version === undefined ? query.orderBy('version', 'desc') : query.andWhere({ version })).first<
    { definition: PlanVersion } | undefined
  >();
  return row?.definition;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}

/** A page of every plan at its latest version, newest plan first. */
export async function listLatestPlanVersions(db: Db, page: PageRequest): Promise<Page<PlanVersion>> {
  const latest = db('plan_versions as v')
    .join('plans as p', function joinLatest() {
      this.on('p.id', '=', 'v.plan_id').andOn('p.latest_version', '=', 'v.version');
    })
    .select('v.definition');
  const found = await keysetPage<{ definition: PlanVersion }>(latest, page, { sort: ['p.created_at', 'p.id'], idColumn: 'p.id' });
  return { ...found, data: found.data.map((row) => row.definition) };
}
