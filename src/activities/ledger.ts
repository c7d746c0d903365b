import { WorkflowExecutionAlreadyStartedError, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, type Client } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { activityInfo } from '@temporalio/activity';
import type { Db } from '../db/knex';
import type { Logger } from '../logger';
import { claimUsage } from '../db/ledger';
import { storeUsage } from '../db/ingest';
import { rollOverPeriod, storeCloseKey, type RolloverRequest, type RolloverResult } from '../db/rollover';
import { activeAlertRules, loadLedger } from '../db/ledger-restore';
import { readLimitOverrides } from '../db/entitlements';
import { readBalanceFacts } from '../db/credits';
import { readPacks, recordPackDraws } from '../db/packs';
import { countedGroupsOfPeriods } from '../db/dimensions';
import type { Pack } from '../domain/packs';
import type { BalanceFacts } from '../contracts/ledger';
import type { AlertRuleInput, ClaimResult, DecisionPoints, LedgerSnapshot } from '../contracts/ledger';
import { invoiceWorkflowId } from '../contracts/ids';
import { invoiceRunDetails, invoiceRunSummary } from '../workflows/summaries';
import { invoiceSearchAttributes } from '../workflows/search-attributes';

/** What the ledger activities need: PostgreSQL, a logger, and Temporal to start invoice workflows. */
export interface LedgerActivityDeps {
  db: Db;
  logger: Logger;
  temporal: Client;
}

/** The most events one claim takes: its answer is a few counters whatever the size. */
export const CLAIM_LIMIT = 5_000;

/** Claims the tenant's unclaimed events (see src/db/ledger.ts); the claim id makes a retry safe. */
export interface ClaimUsageInput {
  tenant_id: string;
  claim_id: string;
  /** Also answer the tenant's entitlements after the claim: prepaid credit and packs (a ledger that watches them). */
  balance?: boolean;
  /** Also answer the groups of the periods the claim touched (a ledger holding a plan that prices by group). */
  groups?: boolean;
  /** Count no event received after this one (an earlier claim's `barrier_seq`); default: all stored now. */
  through_seq?: string;
  /** Where the ledger next decides something, stored for bulk counting (null withdraws it; absent: unchanged). */
  decision_points?: DecisionPoints | null;
  /** Also answer every counter of this period (the worker's counter may have counted some in bulk). */
  current_period?: string;
}

/** Stores an authorized consumption as a usage event and counts it at once. */
export interface ConsumeAuthorizedInput {
  tenant_id: string;
  claim_id: string;
  /** `period_start`: the period the workflow placed it in, whose counters the answer holds. */
  event: { id: string; metric: string; quantity: string; timestamp: string; period_start: string };
}

/** A rollover, and whether the invoice workflow it starts carries tally's search attributes. */
export interface RollOverInput extends RolloverRequest {
  search_attributes?: boolean;
}

/** The rollover as stored, with the invoice workflow it started. */
export interface RollOverOutput extends RolloverResult {
  invoice_workflow_id: string;
}

/**
 * The tenant workflow's side effects on the event ledger. Each is one transaction, idempotent
 * under retry (claim ids, the stored rollover, deterministic workflow ids).
 */
export function createLedgerActivities({ db, logger, temporal }: LedgerActivityDeps) {
  return {
    async claimUsage(input: ClaimUsageInput): Promise<ClaimResult> {
      let claimed: ClaimResult = await claimUsage(db, input.tenant_id, input.claim_id, CLAIM_LIMIT, {
        ...(input.through_seq !== undefined ? { throughSeq: input.through_seq } : {}),
        ...(input.decision_points !== undefined ? { decisionPoints: input.decision_points } : {}),
        ...(input.current_period !== undefined ? { currentPeriod: input.current_period } : {}),
      });
      if (input.groups) claimed = { ...claimed, groups: await countedGroupsOfPeriods(db, input.tenant_id, claimed.counters.map((c) => c.period_start)) };
      if (!input.balance) return claimed;
      return { ...claimed, balance: await readBalanceFacts(db, input.tenant_id, new Date()), packs: await readPacks(db, input.tenant_id) };
    },

    async consumeAuthorized(input: ConsumeAuthorizedInput): Promise<ClaimResult> {
      // Received when the workflow decided it (its clock stamped the event), not when this attempt runs.
      const stored = await storeUsage(db, input.tenant_id, [input.event], new Date(input.event.timestamp), input.claim_id);
      if (stored.kind !== 'stored') {
        // The workflow decided against the period it holds; PostgreSQL disagreeing is a bug to see, not to retry.
        throw ApplicationFailure.nonRetryable(`authorized event ${input.event.id} could not be stored: ${JSON.stringify(stored)}`, 'consume_refused');
      }
      // The worker's bulk counter may count the stored event before this claim does (it stays
      // below every decision point): the claim then counts nothing, and only the period's
      // counters as they stand tell the workflow that the event is counted.
      return claimUsage(db, input.tenant_id, input.claim_id, CLAIM_LIMIT, { currentPeriod: input.event.period_start });
    },

    /** Closes the period and opens the next in one transaction, then starts the closed period's invoice workflow. */
    async rollOverPeriod(input: RollOverInput): Promise<RollOverOutput> {
      const result = await rollOverPeriod(db, input);
      const invoice = {
        tenant_id: input.tenant_id,
        period_start: result.closed.start,
        period_end: result.closed.end,
        grace_ends_at: result.closed.grace_ends_at,
        version: 1,
      };
      const workflowId = invoiceWorkflowId(input.tenant_id, result.closed.start, 1);
      try {
        await temporal.workflow.start('periodInvoice', {
          workflowId,
          taskQueue: activityInfo().taskQueue,
          args: [invoice],
          workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
          workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
          staticSummary: invoiceRunSummary(invoice),
          staticDetails: invoiceRunDetails(invoice),
          ...(input.search_attributes === false ? {} : { typedSearchAttributes: invoiceSearchAttributes(input.tenant_id, result.closed.start) }),
        });
      } catch (err) {
        if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err; // started by an earlier attempt
      }
      logger.info({ tenant_id: input.tenant_id, closed: result.closed, next: result.next?.period ?? null }, 'period rolled over');
      return { ...result, invoice_workflow_id: workflowId };
    },

    /** Stores a close's `Idempotency-Key` with the period whose rollover answered it (a close that shared another's rollover). */
    async storeCloseKey(input: { tenant_id: string; idempotency_key: string; period_start: string }): Promise<void> {
      await storeCloseKey(db, input.tenant_id, input.idempotency_key, input.period_start);
    },

    /** The tenant's entitlements as stored now: its limit overrides, its prepaid credit and its packs. */
    async readEntitlements(input: { tenant_id: string }): Promise<{ limit_overrides: Record<string, string>; balance: BalanceFacts; packs: Pack[] }> {
      return {
        limit_overrides: await readLimitOverrides(db, input.tenant_id),
        balance: await readBalanceFacts(db, input.tenant_id, new Date()),
        packs: await readPacks(db, input.tenant_id),
      };
    },

    /** The tenant's alert rules in force as stored now (a rule was created or deleted). */
    async readAlertRules(input: { tenant_id: string }): Promise<AlertRuleInput[]> {
      return activeAlertRules(db, input.tenant_id);
    },

    /** Stores the pack draws the tenant's ledger decided for one period (absolute units; never for an invoiced period). */
    async recordPackDraws(input: { tenant_id: string; period_start: string; draws: Array<{ pack_id: string; units: string }> }): Promise<void> {
      await recordPackDraws(db, input.tenant_id, input.period_start, input.draws);
    },

    /** The tenant's ledger as PostgreSQL holds it (a first run, or a run restarted after it ended unexpectedly). */
    async restoreLedger(input: { tenant_id: string }): Promise<LedgerSnapshot | null> {
      return loadLedger(db, input.tenant_id);
    },
  };
}

/** The ledger activities as the worker registers them. */
export type LedgerActivities = ReturnType<typeof createLedgerActivities>;
