import type { LedgerSnapshot } from '../../src/contracts/ledger';
import type { Period } from '../../src/domain/periods';
import type { PlanVersion } from '../../src/domain/plan';

/**
 * A tenant ledger as it stands when `period` opens on `plan`: tenant `acme` (UTC, anchored at the
 * period's start), nothing counted, decided, alerted, closing or authorized yet. `overrides`
 * replace whole fields, for the tests of the tenant workflow's pure ledger (test/unit/workflows/).
 */
export function openedLedgerSnapshot(plan: PlanVersion, period: Period, overrides: Partial<LedgerSnapshot> = {}): LedgerSnapshot {
  return {
    tenant: { id: 'acme', name: 'Acme', timezone: 'UTC', billing_anchor: period.start },
    alert_rules: [],
    current: { period, plan, counters: [], decided: [] },
    alerts: [],
    closing: [],
    authorizations: [],
    ...overrides,
  };
}
