import { quantile, sleep } from './lib';

/** A probe gives up here and records this value (`lag_capped` says how many did). */
const LAG_CAP_MS = 60_000;

/**
 * Lag from a 202 until `GET …/usage` shows the batch: the read model counts at least what the
 * bench had acknowledged for the tenant by then (a batch acknowledged beside it may add a little).
 *
 * Every poll is a request to the system being measured, and a `pending_events` count over the
 * tenant's backlog, so the probe is frugal: one poller per watched tenant serves all its sampled
 * batches, at most `maxTenants` tenants are watched at once, new tenants are sampled at most once
 * per `spacingMs`, and a poller polls every 50 ms at first and then every 1/20 of the oldest wait
 * (at most every 500 ms), which keeps the error within 50 ms or 5 %.
 */
export class LagProbe {
  private readonly watched = new Map<string, Array<{ expected: number; ackedAt: number }>>();
  private readonly pollers = new Set<Promise<void>>();
  private readonly values: number[] = [];
  private capped = 0;
  private lastSampledAt = -Infinity;

  constructor(
    /** The tenant's counted usage as a client reads it, or undefined when the read failed. */
    private readonly read: (tenantId: string) => Promise<number | undefined>,
    private readonly options: { maxTenants: number; spacingMs: number },
  ) {}

  /** Measures this batch's lag, unless too many tenants are watched or the last sample was too recent. */
  sample(tenantId: string, expected: number, ackedAt: number): void {
    const waiting = this.watched.get(tenantId);
    if (waiting) {
      waiting.push({ expected, ackedAt });
      return;
    }
    if (this.watched.size >= this.options.maxTenants || ackedAt - this.lastSampledAt < this.options.spacingMs) return;
    this.lastSampledAt = ackedAt;
    this.watched.set(tenantId, [{ expected, ackedAt }]);
    const poller: Promise<void> = this.watch(tenantId).finally(() => this.pollers.delete(poller));
    this.pollers.add(poller);
  }

  /** Resolves once every sampled batch is visible (or capped). */
  async done(): Promise<void> {
    while (this.pollers.size > 0) await Promise.all([...this.pollers]);
  }

  summary() {
    return {
      lag_p50_ms: quantile(this.values, 0.5),
      lag_p99_ms: quantile(this.values, 0.99),
      lag_max_ms: quantile(this.values, 1),
      lag_samples: this.values.length,
      ...(this.capped > 0 ? { lag_capped: this.capped } : {}),
    };
  }

  private async watch(tenantId: string): Promise<void> {
    const waiting = this.watched.get(tenantId)!;
    for (;;) {
      const used = await this.read(tenantId);
      const now = performance.now();
      for (let i = waiting.length - 1; i >= 0; i--) {
        const { expected, ackedAt } = waiting[i]!;
        if (used !== undefined && used >= expected) this.values.push(now - ackedAt);
        else if (now - ackedAt > LAG_CAP_MS) {
          this.values.push(LAG_CAP_MS);
          this.capped += 1;
        } else continue;
        waiting.splice(i, 1);
      }
      if (waiting.length === 0) break;
      // Batches are sampled in the order they were acknowledged: the first waits longest.
      const oldest = now - waiting[0]!.ackedAt;
      await sleep(Math.min(500, Math.max(50, oldest / 20)));
    }
    // No await since the list emptied: a batch sampled from here on starts a new poller.
    this.watched.delete(tenantId);
  }
}
