import { Client, Connection } from '@temporalio/client';
import { TypedSearchAttributes } from '@temporalio/common';
import { recordUsageSignal, tenantWorkflowId, type UsageDoorbell } from './workflows/messages';
import { SEARCH_ATTRIBUTES } from './workflows/search-attributes';
import { tenantRunSummary } from './workflows/summaries';
import type { tenantBilling, TenantBillingInput } from './workflows/tenant-billing';

/** A Temporal client plus its connection, so callers can close what they opened. */
export interface TemporalHandle {
  client: Client;
  connection: Connection;
}

/** Connects the API (or a test) to Temporal. */
export async function connectTemporal(address: string, namespace: string): Promise<TemporalHandle> {
  const connection = await Connection.connect({ address });
  return { client: new Client({ connection, namespace }), connection };
}

/**
 * Rings a tenant's workflow (the `recordUsage` doorbell), starting a run if none is there: a run
 * that ended unexpectedly rebuilds its ledger from PostgreSQL and claims what waits. Shared by
 * the API (after each stored batch) and the worker's sweeper (for events left unclaimed).
 */
export async function ringTenantWorkflow(
  client: Client,
  options: { taskQueue: string; tenantId: string; doorbell: UsageDoorbell; searchAttributes: boolean },
): Promise<void> {
  const input: TenantBillingInput = { tenant_id: options.tenantId, search_attributes: options.searchAttributes };
  await client.workflow.signalWithStart<typeof tenantBilling, [UsageDoorbell]>('tenantBilling', {
    taskQueue: options.taskQueue,
    workflowId: tenantWorkflowId(options.tenantId),
    args: [input],
    staticSummary: tenantRunSummary(options.tenantId),
    ...(options.searchAttributes ? { typedSearchAttributes: new TypedSearchAttributes([{ key: SEARCH_ATTRIBUTES.TenantId, value: options.tenantId }]) } : {}),
    signal: recordUsageSignal,
    signalArgs: [options.doorbell],
  });
}
