import type { Db } from '../db/knex';
import { findPlanVersion } from '../db/plans';
import { latestPeriods } from '../db/periods';
import { findTenantStatus } from '../db/tenants';
import type { PlanVersion } from '../domain/plan';

/** What the ingest path needs to judge an event before acknowledging it. */
export interface TenantContext {
  id: string;
  status: 'active' | 'cancelled';
  plan: PlanVersion;
  current: { start: Date; end: Date };
  previous: { start: Date; end: Date; graceEndsAt: Date | null } | null;
}

/**
 * A short-lived cache of tenant contexts, so the hot ingest path does not query PostgreSQL for
 * every request. Entries expire quickly and are dropped on any change the API itself makes
 * (plan change, close, cancel); the workflow re-checks every event anyway.
 */
export class TenantDirectory {
  private readonly cache = new Map<string, { at: number; context: TenantContext | undefined }>();

  constructor(
    private readonly db: Db,
    private readonly ttlMs = 2_000,
  ) {}

  /** The tenant's context, or undefined when there is no such tenant. */
  async get(tenantId: string): Promise<TenantContext | undefined> {
    const hit = this.cache.get(tenantId);
    if (hit && Date.now() - hit.at < this.ttlMs) return hit.context;
    const context = await this.load(tenantId);
    this.cache.set(tenantId, { at: Date.now(), context });
    if (this.cache.size > 50_000) this.cache.delete(this.cache.keys().next().value!);
    return context;
  }

  /** Forgets a tenant after a change, so the next request sees it. */
  invalidate(tenantId: string): void {
    this.cache.delete(tenantId);
  }

  private async load(tenantId: string): Promise<TenantContext | undefined> {
    const tenant = await findTenantStatus(this.db, tenantId);
    if (!tenant) return undefined;
    const periods = await latestPeriods(this.db, tenantId, 2);
    const [current, previous] = periods;
    if (!current) return undefined;
    const plan = await findPlanVersion(this.db, current.plan_id, current.plan_version);
    if (!plan) return undefined;
    return {
      id: tenant.id,
      status: tenant.status,
      plan,
      current: { start: current.start, end: current.end },
      previous: previous ? { start: previous.start, end: previous.end, graceEndsAt: previous.grace_ends_at } : null,
    };
  }
}
