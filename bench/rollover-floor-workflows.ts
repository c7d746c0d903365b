/**
 * The Temporal part of a rollover and nothing else, for the bench's rollover floor
 * (bench/rollover-floor.ts): what any design that keeps the contract's names must ask the
 * server for at an anniversary (docs/operations.md lists the workflows). A tenant's run sleeps until its
 * anniversary, starts the closed period's invoice workflow from one local activity, and continues
 * as new into a run that sets its next timer; the invoice workflow finalizes in one local activity
 * in its first task. No PostgreSQL, no rating, no search attributes, no patches.
 */
import { continueAsNew, proxyLocalActivities, proxySinks, sleep, type Sinks } from '@temporalio/workflow';

export interface FloorActivities {
  /** Starts the invoice workflow of `tenant`'s closed period (already started counts as done). */
  startFloorInvoice(tenant: string): Promise<void>;
  /** The invoice's one step: the bench notes it finalized. */
  finalizeFloorInvoice(tenant: string): Promise<void>;
}

export interface FloorSinks extends Sinks {
  floor: { waiting(tenant: string): void };
}

const { startFloorInvoice, finalizeFloorInvoice } = proxyLocalActivities<FloorActivities>({ startToCloseTimeout: '1 minute' });
const { floor } = proxySinks<FloorSinks>();

const YEAR_MS = 365 * 24 * 3600 * 1000;

export async function floorTenant(tenant: string, anniversaryMs: number, closing: boolean): Promise<void> {
  if (closing) floor.waiting(tenant);
  await sleep(Math.max(1, anniversaryMs - Date.now()));
  if (!closing) return;
  await startFloorInvoice(tenant);
  await continueAsNew<typeof floorTenant>(tenant, anniversaryMs + YEAR_MS, false);
}

export async function floorInvoice(tenant: string): Promise<void> {
  await finalizeFloorInvoice(tenant);
}
