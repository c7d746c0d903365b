import type { UsageEventInput } from '../workflows/messages';

/**
 * Ingest coalescing: concurrent `POST /v1/events` requests for one tenant share one
 * `recordUsage` signal.
 *
 * Why: every signal is a write to the tenant workflow's history, and Temporal serializes the
 * writes of one workflow. Many small requests for one tenant would each pay a round trip and a
 * history event; merged, they pay one, and the run reaches its signal budget (continue-as-new)
 * far later.
 *
 * How: per tenant, at most one signal is in flight. The first request of an idle tenant opens a
 * group and waits `windowMs` for company; requests arriving while a signal is in flight join the
 * next group, which is sent as soon as the one in flight is acknowledged. A request's promise
 * settles with the signal that carries its events, so a 202 still means "in the workflow's
 * history" (durable), and a failed signal fails every request it carried. A request is never
 * split; groups are capped in events and bytes so a signal stays far below Temporal's 2 MB
 * payload limit, and requests keep their order (a request only joins the newest group).
 *
 * One signal carries one receive time (the workflow judges grace and "future" events by it). A
 * group uses the earliest receive time of its requests: an event the API accepted as within grace
 * is then still within grace. A request joins only if every event of the group stays within the
 * future tolerance of that earliest time, so no accepted event can turn into a `future_event`.
 */

/** Sends one merged batch; resolves once Temporal has durably accepted it. */
export type SendUsage = (tenantId: string, events: UsageEventInput[], receivedAt: Date) => Promise<void>;

/** What one signal carried, for metrics and logs. */
export interface SignalReport {
  tenantId: string;
  requests: number;
  events: number;
  bytes: number;
  durationMs: number;
  ok: boolean;
}

/** Tuning of the coalescer; the defaults suit the API. */
export interface CoalescerOptions {
  /** How long the first request of an idle tenant waits for others (0: send at once). */
  windowMs?: number;
  /** At most this many events per signal (a single larger request still goes alone). */
  maxEvents?: number;
  /** At most about this many bytes of JSON events per signal (idem). */
  maxBytes?: number;
  /** Events may be this far ahead of the receive time (the workflow's rule, BILLING.md). */
  futureToleranceMs?: number;
  /** Called after every signal, successful or not. */
  onSignal?: (report: SignalReport) => void;
}

/** Defaults: 2 ms window, 1,000 events / 512 KiB per signal, 5 minutes future tolerance. */
export const COALESCER_DEFAULTS = {
  windowMs: 2,
  maxEvents: 1_000,
  maxBytes: 512 * 1024,
  futureToleranceMs: 5 * 60_000,
} as const;

interface Waiter {
  resolve: () => void;
  reject: (err: unknown) => void;
}

interface Group {
  events: UsageEventInput[];
  bytes: number;
  /** The earliest receive time of its requests (ms). */
  receivedAtMs: number;
  /** The latest event timestamp in the group (ms), for the future-tolerance rule. */
  latestEventMs: number;
  waiters: Waiter[];
}

interface Lane {
  queue: Group[];
  inFlight: boolean;
  timer: NodeJS.Timeout | undefined;
}

/** Merges concurrent ingest requests per tenant into as few signals as durability allows. */
export class IngestCoalescer {
  private readonly lanes = new Map<string, Lane>();
  private readonly idleWaiters: Array<() => void> = [];
  private readonly options: Required<Omit<CoalescerOptions, 'onSignal'>> & Pick<CoalescerOptions, 'onSignal'>;

  constructor(
    private readonly send: SendUsage,
    options: CoalescerOptions = {},
  ) {
    this.options = { ...COALESCER_DEFAULTS, ...stripUndefined(options) };
  }

  /** Queues one request's events; settles when the signal carrying them settles. */
  submit(tenantId: string, events: UsageEventInput[], receivedAt: Date): Promise<void> {
    if (events.length === 0) return Promise.resolve();
    const bytes = Buffer.byteLength(JSON.stringify(events));
    const receivedAtMs = receivedAt.getTime();
    let latestEventMs = Number.NEGATIVE_INFINITY;
    for (const e of events) {
      const at = Date.parse(e.timestamp);
      if (Number.isFinite(at) && at > latestEventMs) latestEventMs = at;
    }

    let lane = this.lanes.get(tenantId);
    if (!lane) {
      lane = { queue: [], inFlight: false, timer: undefined };
      this.lanes.set(tenantId, lane);
    }
    const wasIdle = !lane.inFlight && lane.queue.length === 0;

    return new Promise<void>((resolve, reject) => {
      const waiter = { resolve, reject };
      const last = lane.queue[lane.queue.length - 1];
      if (last && this.fits(last, events.length, bytes, receivedAtMs, latestEventMs)) {
        last.events.push(...events);
        last.bytes += bytes;
        last.receivedAtMs = Math.min(last.receivedAtMs, receivedAtMs);
        last.latestEventMs = Math.max(last.latestEventMs, latestEventMs);
        last.waiters.push(waiter);
      } else {
        lane.queue.push({ events: [...events], bytes, receivedAtMs, latestEventMs, waiters: [waiter] });
      }

      if (lane.inFlight) return; // the group goes out when the signal in flight is acknowledged
      if (lane.queue.length > 1 || this.isFull(lane.queue[0]!)) {
        this.pump(tenantId, lane); // a full group gains nothing by waiting
      } else if (wasIdle) {
        if (this.options.windowMs <= 0) this.pump(tenantId, lane);
        else lane.timer = setTimeout(() => this.pump(tenantId, lane), this.options.windowMs);
      }
    });
  }

  /** Resolves once no signal is queued or in flight (for graceful shutdown and tests). */
  drain(): Promise<void> {
    if (this.lanes.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Tenants with a signal queued or in flight (for tests and metrics). */
  get activeTenants(): number {
    return this.lanes.size;
  }

  private fits(group: Group, events: number, bytes: number, receivedAtMs: number, latestEventMs: number): boolean {
    if (group.events.length + events > this.options.maxEvents) return false;
    if (group.bytes + bytes > this.options.maxBytes) return false;
    const earliest = Math.min(group.receivedAtMs, receivedAtMs);
    const latest = Math.max(group.latestEventMs, latestEventMs);
    return latest <= earliest + this.options.futureToleranceMs;
  }

  private isFull(group: Group): boolean {
    return group.events.length >= this.options.maxEvents || group.bytes >= this.options.maxBytes;
  }

  private pump(tenantId: string, lane: Lane): void {
    if (lane.timer) {
      clearTimeout(lane.timer);
      lane.timer = undefined;
    }
    if (lane.inFlight) return;
    const group = lane.queue.shift();
    if (!group) {
      this.lanes.delete(tenantId);
      if (this.lanes.size === 0) for (const resolve of this.idleWaiters.splice(0)) resolve();
      return;
    }
    lane.inFlight = true;
    const started = performance.now();
    const report = (ok: boolean) =>
      this.options.onSignal?.({
        tenantId,
        requests: group.waiters.length,
        events: group.events.length,
        bytes: group.bytes,
        durationMs: performance.now() - started,
        ok,
      });
    let sending: Promise<void>;
    try {
      sending = this.send(tenantId, group.events, new Date(group.receivedAtMs));
    } catch (err) {
      sending = Promise.reject(err);
    }
    sending.then(
      () => {
        lane.inFlight = false;
        safely(() => report(true));
        for (const w of group.waiters) w.resolve();
        this.pump(tenantId, lane);
      },
      (err: unknown) => {
        lane.inFlight = false;
        safely(() => report(false));
        for (const w of group.waiters) w.reject(err);
        this.pump(tenantId, lane);
      },
    );
  }
}

function safely(fn: () => void): void {
  try {
    fn();
  } catch {
    // a metrics hook must never break ingest
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
