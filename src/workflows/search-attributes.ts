import { defineSearchAttributeKey, SearchAttributeType, type SearchAttributePair } from '@temporalio/common';

/**
 * tally's search attributes (API.md, "Temporal conventions"). Every place that registers them
 * (the embedded dev server, docker-compose's temporal-init, the chaos stack) registers exactly
 * these; test/unit/workflows/search-attributes.test.ts checks that they agree.
 */
export const SEARCH_ATTRIBUTES = {
  TenantId: defineSearchAttributeKey('TenantId', SearchAttributeType.KEYWORD),
  PlanId: defineSearchAttributeKey('PlanId', SearchAttributeType.KEYWORD),
  BillingPeriodStart: defineSearchAttributeKey('BillingPeriodStart', SearchAttributeType.DATETIME),
  BillingPeriodEnd: defineSearchAttributeKey('BillingPeriodEnd', SearchAttributeType.DATETIME),
  AlertLevel: defineSearchAttributeKey('AlertLevel', SearchAttributeType.KEYWORD),
} as const;

/**
 * What an invoice workflow (a period's invoice, or a rerun of it) carries: its tenant and its
 * period's start, so `TenantId = "acme"` lists a tenant's invoices beside its billing runs and
 * `BillingPeriodStart = "…"` a period's run beside its invoice versions.
 */
export function invoiceSearchAttributes(tenantId: string, periodStart: string): SearchAttributePair[] {
  return [
    { key: SEARCH_ATTRIBUTES.TenantId, value: tenantId },
    { key: SEARCH_ATTRIBUTES.BillingPeriodStart, value: new Date(periodStart) },
  ];
}

/** A tenant run's period as search attributes (List Filters): its plan, its bounds and its alert level. */
export function periodSearchAttributes(planId: string, period: { start: string; end: string }, alertLevel: string): SearchAttributePair[] {
  return [
    { key: SEARCH_ATTRIBUTES.PlanId, value: planId },
    { key: SEARCH_ATTRIBUTES.BillingPeriodStart, value: new Date(period.start) },
    { key: SEARCH_ATTRIBUTES.BillingPeriodEnd, value: new Date(period.end) },
    { key: SEARCH_ATTRIBUTES.AlertLevel, value: alertLevel },
  ];
}
