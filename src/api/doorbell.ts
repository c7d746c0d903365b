import type { UsageDoorbell } from '../workflows/messages';

/**
 * The ingest doorbell: after a batch is stored in PostgreSQL (and answered 202), the tenant's
 * workflow is rung so it claims and counts what waits. It carries no events, so one ring can
 * stand for any number of stored batches.
 *
 * Why coalesce: every ring is a write to the tenant workflow's history, and a claim already
 * takes everything stored before it. Ringing once per request would spend history (and server
 * commits) without counting anything sooner.
 *
 * How: per tenant, the first batch after a quiet spell rings at once (leading edge), and opens a
 * window of `windowMs`; batches stored during the window are remembered and ring once when it
 * ends (trailing edge), which opens the next window. So the last batch always rings, never more
 * than one ring per tenant per window is sent, and a quiet tenant costs nothing.
 *
 * A ring that fails is only logged (its `onRing` report says so): the batches are durable, and
 * the worker's sweeper rings every tenant whose events wait unclaimed for long.
 */

/** Rings one tenant's workflow; resolves once Temporal accepted the signal. */
export type Ring = (tenantId: string, doorbell: UsageDoorbell) => Promise<void>;

/** What one ring stood for, for metrics and logs. */
export interface RingReport {
  tenantId: string;
  /** Stored batches this ring stands for. */
  batches: number;
  events: number;
  durationMs: number;
  ok: boolean;
  error?: unknown;
}

/** Tuning of the doorbell; the default suits the API. */
export interface DoorbellOptions {
  /** At most one ring per tenant per this many milliseconds (0: ring for every batch). */
  windowMs?: number;
  /** Called after every ring, successful or not. */
  onRing?: (report: RingReport) => void;
}

/** Default window: a claim takes a few milliseconds, so rings faster than this count nothing sooner. */
export const DOORBELL_DEFAULT_WINDOW_MS = 20;

interface TenantWindow {
  timer: ReturnType<typeof setTimeout>;
  batches: number;
  events: number;
  highestSeq: string | null;
}

export class Doorbell {
  private readonly windows = new Map<string, TenantWindow>();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly windowMs: number;

  constructor(
    private readonly ring: Ring,
    private readonly options: DoorbellOptions = {},
  ) {
    this.windowMs = options.windowMs ?? DOORBELL_DEFAULT_WINDOW_MS;
  }

  /** A batch of `events` new events (highest receive sequence `highestSeq`) is stored for the tenant. */
  stored(tenantId: string, events: number, highestSeq: string | null): void {
    const open = this.windows.get(tenantId);
    if (open) {
      open.batches += 1;
      open.events += events;
      open.highestSeq = laterSeq(open.highestSeq, highestSeq);
      return;
    }
    this.send(tenantId, 1, events, highestSeq);
    if (this.windowMs > 0) this.openWindow(tenantId);
  }

  /** Resolves once every batch stored so far has rung (graceful shutdown, tests). */
  async drain(): Promise<void> {
    for (const [tenantId, window] of this.windows) {
      clearTimeout(window.timer);
      this.windows.delete(tenantId);
      if (window.batches > 0) this.send(tenantId, window.batches, window.events, window.highestSeq);
    }
    await Promise.all([...this.inFlight]);
  }

  private openWindow(tenantId: string): void {
    const window: TenantWindow = {
      batches: 0,
      events: 0,
      highestSeq: null,
      timer: setTimeout(() => {
        this.windows.delete(tenantId);
        if (window.batches === 0) return;
        this.send(tenantId, window.batches, window.events, window.highestSeq);
        this.openWindow(tenantId);
      }, this.windowMs),
    };
    window.timer.unref?.();
    this.windows.set(tenantId, window);
  }

  private send(tenantId: string, batches: number, events: number, highestSeq: string | null): void {
    const started = Date.now();
    const report = (ok: boolean, error?: unknown) =>
      this.options.onRing?.({ tenantId, batches, events, durationMs: Date.now() - started, ok, ...(error === undefined ? {} : { error }) });
    const ringing: Promise<void> = this.ring(tenantId, { events, highest_seq: highestSeq })
      .then(
        () => report(true),
        (err: unknown) => report(false, err),
      )
      .finally(() => this.inFlight.delete(ringing));
    this.inFlight.add(ringing);
  }
}

/** The later of two receive sequences (decimal strings of a bigint; null when unknown). */
function laterSeq(a: string | null, b: string | null): string | null {
  if (a === null) return b;
  if (b === null) return a;
  return BigInt(a) >= BigInt(b) ? a : b;
}
