import { Client, Connection, WorkflowIdConflictPolicy, type TLSConfig } from '@temporalio/client';
import { readPemVariable, type Config } from './config';
import { TypedSearchAttributes, type SearchAttributePair } from '@temporalio/common';
import { recordUsageSignal, tenantWorkflowId, type UsageDoorbell } from './workflows/messages';
import { tenantRunSummary } from './workflows/summaries';
import type { tenantBilling, TenantBillingInput } from './workflows/tenant-billing';
import { HANDED_OVER_PATCHES, handedRunSearchAttributes } from './workflows/run-patches';

/** A Temporal client plus its connection, so callers can close what they opened. */
export interface TemporalHandle {
  client: Client;
  connection: Connection;
}

/**
 * How to reach Temporal: the address, TLS (server CA, mTLS client pair, server name) and the API
 * key. Both the clients (`Connection`) and the worker (`NativeConnection`) take exactly this.
 */
export interface TemporalConnectionSettings {
  address: string;
  tls?: TLSConfig;
  apiKey?: string;
}

/**
 * The one place that turns TEMPORAL_TLS* and TEMPORAL_API_KEY into connection settings, for the
 * API's client, the worker's client and the worker's own connection alike. TLS is on when
 * TEMPORAL_TLS=true, or when any TLS variable or the API key is set (`loadConfig` has already
 * refused contradictions, unreadable files and text that is not PEM).
 */
export function temporalConnectionSettings(
  config: Pick<Config, 'TEMPORAL_TLS' | 'TEMPORAL_TLS_CERT' | 'TEMPORAL_TLS_KEY' | 'TEMPORAL_TLS_CA' | 'TEMPORAL_TLS_SERVER_NAME' | 'TEMPORAL_API_KEY'>,
  address: string,
): TemporalConnectionSettings {
  const { TEMPORAL_TLS_CERT: cert, TEMPORAL_TLS_KEY: key, TEMPORAL_TLS_CA: ca, TEMPORAL_TLS_SERVER_NAME: serverName, TEMPORAL_API_KEY: apiKey } = config;
  const tlsOn = config.TEMPORAL_TLS ?? Boolean(cert || ca || serverName || apiKey);
  if (!tlsOn) return { address };
  const tls: TLSConfig = {
    ...(ca ? { serverRootCACertificate: readPemVariable('TEMPORAL_TLS_CA', ca) } : {}),
    ...(cert && key ? { clientCertPair: { crt: readPemVariable('TEMPORAL_TLS_CERT', cert), key: readPemVariable('TEMPORAL_TLS_KEY', key) } } : {}),
    ...(serverName ? { serverNameOverride: serverName } : {}),
  };
  return { address, tls, ...(apiKey ? { apiKey } : {}) };
}

/** Connects the API (or the worker's client, or a test) to Temporal. */
export async function connectTemporal(settings: TemporalConnectionSettings, namespace: string): Promise<TemporalHandle> {
  const connection = await Connection.connect(settings);
  return { client: new Client({ connection, namespace }), connection };
}

/**
 * Rings a tenant's workflow (the `recordUsage` doorbell), starting a run if none is there: a run
 * that ended unexpectedly rebuilds its ledger from PostgreSQL and claims what waits. The worker's
 * counter rings (src/workers/bulk-counter.ts); tests and ops may ring through the API's gateway.
 */
export async function ringTenantWorkflow(
  client: Client,
  options: { taskQueue: string; tenantId: string; doorbell: UsageDoorbell; searchAttributes: boolean },
): Promise<void> {
  await client.workflow.signalWithStart<typeof tenantBilling, [UsageDoorbell]>('tenantBilling', {
    ...tenantRunStart(options),
    signal: recordUsageSignal,
    signalArgs: [options.doorbell],
  });
}

/**
 * Starts the tenant's run if none is running. A running run is left as it is: the start meets it
 * (`USE_EXISTING`) and writes nothing to its history, unlike a ring.
 */
export async function ensureTenantRun(client: Client, options: { taskQueue: string; tenantId: string; searchAttributes: boolean }): Promise<void> {
  await client.workflow.start<typeof tenantBilling>('tenantBilling', { ...tenantRunStart(options), workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING });
}

/** How a ring or a check starts a tenant's run when none is there: this code's input, summary and start attributes. */
function tenantRunStart(options: { taskQueue: string; tenantId: string; searchAttributes: boolean }) {
  return {
    taskQueue: options.taskQueue,
    workflowId: tenantWorkflowId(options.tenantId),
    args: [tenantRunInput(options.tenantId, options.searchAttributes)] as [TenantBillingInput],
    staticSummary: tenantRunSummary(options.tenantId),
    ...(options.searchAttributes ? { typedSearchAttributes: tenantRunSearchAttributes(options.tenantId) } : {}),
  };
}

/**
 * The input of a tenant run that this code starts (the API's first start, or a start after a run
 * ended unexpectedly): its ledger is read from PostgreSQL, and it is handed this code's patches
 * (src/workflows/run-patches.ts), as a run that continue-as-new starts is.
 */
export function tenantRunInput(tenantId: string, searchAttributes: boolean): TenantBillingInput {
  return { tenant_id: tenantId, search_attributes: searchAttributes, patches_at_start: [...HANDED_OVER_PATCHES] };
}

/** The search attributes such a run starts with: its tenant, the handed patches, and its period's when the starter knows them. */
export function tenantRunSearchAttributes(tenantId: string, period: SearchAttributePair[] = []): TypedSearchAttributes {
  return new TypedSearchAttributes(handedRunSearchAttributes(tenantId, period));
}
