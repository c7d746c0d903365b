import type { Client } from '@temporalio/client';
import { tsToMs } from '@temporalio/common/lib/time';
import { temporal as temporalProto } from '@temporalio/proto';
import { invoiceWorkflowId, tenantWorkflowId } from '../src/workflows/messages';

type HistoryEvent = temporalProto.api.history.v1.IHistoryEvent;

/**
 * What one rollover writes to Temporal history, in events: every server commit appends some, so
 * events per rollover times the tenants closing at once is the work the server must commit
 * before the last invoice is final.
 */
export interface RolloverHistory {
  /** The closing run from its period-end timer on: timer fired, workflow tasks, the rollover activity, continue-as-new. */
  closing_run: number;
  /** The next run as it stands (its start, first workflow tasks, period-end timer). */
  next_run: number;
  /** The closed period's invoice workflow, whole (grace timer, finalize). */
  invoice: number;
  total: number;
  /** The event types of each part, in order: where the events go. */
  types: { closing_run: string[]; next_run: string[]; invoice: string[] };
}

/**
 * Counts the history of one tenant's rollover at `closeAt`: the run that closed the period is
 * the one the current run continued from. `periodStart` names the closed period's invoice.
 */
export function rolloverHistory(temporal: Client, tenantId: string, periodStart: string, closeAt: number): Promise<RolloverHistory> {
  return rolloverHistoryOf(temporal, tenantWorkflowId(tenantId), invoiceWorkflowId(tenantId, periodStart, 1), closeAt);
}

/** {@link rolloverHistory} by workflow ids: the tenant's (whose current run continued from the closing one) and the invoice's. */
export async function rolloverHistoryOf(temporal: Client, tenantWorkflow: string, invoiceWorkflow: string, closeAt: number): Promise<RolloverHistory> {
  const current = (await temporal.workflow.getHandle(tenantWorkflow).fetchHistory()).events ?? [];
  const previousRunId = current[0]?.workflowExecutionStartedEventAttributes?.continuedExecutionRunId;
  if (!previousRunId) throw new Error(`${tenantWorkflow}: the current run did not continue from a closing run`);
  const closing = (await temporal.workflow.getHandle(tenantWorkflow, previousRunId).fetchHistory()).events ?? [];
  const invoice = (await temporal.workflow.getHandle(invoiceWorkflow).fetchHistory()).events ?? [];
  // The closing run's earlier events (its start, restore, claims) belong to the period, not to its close.
  const closingRun = closing.filter((e) => tsToMs(e.eventTime) >= closeAt);
  return {
    closing_run: closingRun.length,
    next_run: current.length,
    invoice: invoice.length,
    total: closingRun.length + current.length + invoice.length,
    types: { closing_run: closingRun.map(typeName), next_run: current.map(typeName), invoice: invoice.map(typeName) },
  };
}

function typeName(event: HistoryEvent): string {
  const name = temporalProto.api.enums.v1.EventType[event.eventType ?? 0] ?? String(event.eventType);
  return name.replace(/^EVENT_TYPE_/, '').toLowerCase();
}
