/**
 * The load generator and its ledger (the ground truth of the chaos run).
 *
 * Every event has an id of its own (`<tenant>-e<n>`) and a client timestamp, strictly increasing
 * per tenant. A batch is resent, identical, until the API answers 202 — after a timeout, a reset
 * or refused connection, a 5xx or a 429 — like a real service would. A 4xx other than 429 is a
 * final "no" (e.g. 422 `late_event` for a batch whose period closed while it was being retried):
 * the batch is dropped and its events are not acknowledged.
 *
 * "Acknowledged" means: some request carrying the event got a 202. The ledger keeps, per tenant,
 * the content of each acknowledged id as first acknowledged (metric, quantity, timestamp).
 * Deliberate duplicates are sent too: copies of an event inside its own batch, resends of
 * earlier acknowledged events (identical), and resends of earlier ids with another quantity
 * (which must be ignored: the first acknowledged content is the one that counts).
 *
 * Tenants whose subscription is cancelled during the run stay in the rotation: the senders keep
 * posting to them, as a real client that has not heard of the cancellation would. Batches that
 * carry their events, and every batch finally refused, are logged with their outcome
 * ({@link BatchRecord}) so the checks can tell what was refused from what was stored.
 */
import { HttpClient } from '../bench/http';
import { sleep } from './stack';

export interface ChaosEvent {
  id: string;
  tenant_id: string;
  metric: string;
  quantity: number;
  timestamp: string;
}

export interface AckedEvent {
  metric: string;
  /** Decimal string, as sent. */
  quantity: string;
  timestamp: string;
  /** When the first 202 for it came back (epoch ms): before or after a cancellation answered. */
  acked_at: number;
}

/** `probe`: a batch the driver sends itself (late events around a cancellation). */
type BatchKind = 'new' | 'multi' | 'resend' | 'conflict' | 'probe';

/**
 * One batch's fate. `ambiguous`: some attempt got no definite answer (no response, a 5xx, a
 * 408/429), so that attempt may have committed; a batch refused without any such attempt
 * stored nothing.
 */
export interface BatchRecord {
  kind: BatchKind;
  events: Array<Pick<ChaosEvent, 'tenant_id' | 'id' | 'timestamp'>>;
  first_sent_at: number;
  answered_at: number;
  /** `acked`, `abandoned`, or the final refusal as `<status> <code>`. */
  outcome: string;
  attempts: number;
  ambiguous: boolean;
}

export interface LoadStats {
  requests: number;
  batches: Record<BatchKind, number>;
  batches_acked: number;
  batches_rejected: number;
  batches_abandoned: number;
  retries: number;
  /** Transport failures and statuses of attempts that were retried. */
  retry_causes: Record<string, number>;
  /** Codes of the final 4xx answers, and the first answers of each code. */
  rejected_codes: Record<string, number>;
  rejected_examples: Record<string, unknown[]>;
  events_sent: number;
  duplicate_copies_sent: number;
  conflicting_resends_sent: number;
}

/** A pseudo-random generator with a seed, so a run's load can be replayed. */
export function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const TOKEN_QUANTITIES = [0.1, 0.2, 0.5, 1, 1.25, 2, 3.333333, 5];

/** The mean token quantity, to size limits from the planned rate. */
export const MEAN_TOKEN_QUANTITY = TOKEN_QUANTITIES.reduce((a, b) => a + b, 0) / TOKEN_QUANTITIES.length;

/** Share of each metric among new events. */
export const METRIC_MIX = { tokens: 0.55, requests: 0.25, storage_gb: 0.1, seats: 0.1 } as const;

interface TenantState {
  id: string;
  seq: number;
  lastTs: number;
  /** Recently acknowledged events, for resends. */
  recent: ChaosEvent[];
}

export interface LoadOptions {
  tenants: string[];
  /** Target events per second (new events; duplicates come on top). */
  eventsPerSecond: number;
  concurrency: number;
  seed: number;
  requestTimeoutMs: number;
  /** Tenants whose batches are all logged in {@link LoadGenerator.batchLog} (the cancelled ones). */
  watch?: ReadonlySet<string>;
}

export class LoadGenerator {
  /** tenant -> event id -> content as first acknowledged. */
  readonly acked = new Map<string, Map<string, AckedEvent>>();
  /** tenant -> every event id ever sent (acknowledged or not). */
  readonly sent = new Map<string, Set<string>>();
  readonly stats: LoadStats = {
    requests: 0,
    batches: { new: 0, multi: 0, resend: 0, conflict: 0, probe: 0 },
    batches_acked: 0,
    batches_rejected: 0,
    batches_abandoned: 0,
    retries: 0,
    retry_causes: {},
    rejected_codes: {},
    rejected_examples: {},
    events_sent: 0,
    duplicate_copies_sent: 0,
    conflicting_resends_sent: 0,
  };
  /** Batches finally refused, and every batch carrying an event of a watched tenant. */
  readonly batchLog: BatchRecord[] = [];
  private readonly state = new Map<string, TenantState>();
  private readonly random: () => number;
  private running = false;
  /** After this instant, a batch still retrying gives up (only set when the load stops). */
  private giveUpAt = Infinity;
  private loops: Promise<void>[] = [];
  private cursor = 0;
  private nextSlot = 0;

  constructor(
    private readonly http: HttpClient,
    private readonly options: LoadOptions,
  ) {
    this.random = prng(options.seed);
    for (const id of options.tenants) {
      this.state.set(id, { id, seq: 0, lastTs: 0, recent: [] });
      this.acked.set(id, new Map());
      this.sent.set(id, new Set());
    }
  }

  get acknowledged(): number {
    let n = 0;
    for (const m of this.acked.values()) n += m.size;
    return n;
  }

  start(): void {
    this.running = true;
    this.nextSlot = Date.now();
    this.loops = Array.from({ length: this.options.concurrency }, () => this.loop());
  }

  /** Stops making new batches; batches still retrying get `drainMs` to be acknowledged. */
  async stop(drainMs: number): Promise<void> {
    this.running = false;
    this.giveUpAt = Date.now() + drainMs;
    await Promise.all(this.loops);
  }

  private async loop(): Promise<void> {
    while (this.running) {
      const { events, kind } = this.nextBatch();
      // Pace on new events: a global schedule of slots, one per batch.
      const fresh = kind === 'resend' || kind === 'conflict' ? 0 : events.length;
      const slot = this.nextSlot;
      this.nextSlot = Math.max(this.nextSlot, Date.now() - 1000) + (fresh * 1000) / this.options.eventsPerSecond;
      if (slot > Date.now()) await sleep(slot - Date.now());
      if (!this.running) break;
      await this.sendUntilDone(events, kind);
    }
  }

  /**
   * Sends a batch the driver built (its ids must be new), with the same retries as the load;
   * resolves with its outcome once it is acknowledged, refused or abandoned.
   */
  async probe(events: ChaosEvent[]): Promise<BatchRecord> {
    return this.sendUntilDone(events, 'probe');
  }

  private pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.random() * items.length)]!;
  }

  private nextTenant(): TenantState {
    const id = this.options.tenants[this.cursor++ % this.options.tenants.length]!;
    return this.state.get(id)!;
  }

  private newEvent(t: TenantState): ChaosEvent {
    const ts = Math.max(Date.now(), t.lastTs + 1);
    t.lastTs = ts;
    const r = this.random();
    let metric: string;
    let quantity: number;
    if (r < METRIC_MIX.tokens) {
      metric = 'tokens';
      quantity = this.pick(TOKEN_QUANTITIES);
    } else if (r < METRIC_MIX.tokens + METRIC_MIX.requests) {
      metric = 'requests';
      quantity = 1;
    } else if (r < METRIC_MIX.tokens + METRIC_MIX.requests + METRIC_MIX.storage_gb) {
      metric = 'storage_gb';
      quantity = Math.round(this.random() * 10_000) / 100;
    } else {
      metric = 'seats';
      quantity = 1 + Math.floor(this.random() * 50);
    }
    return { id: `${t.id}-e${++t.seq}`, tenant_id: t.id, metric, quantity, timestamp: new Date(ts).toISOString() };
  }

  private nextBatch(): { events: ChaosEvent[]; kind: BatchKind } {
    const r = this.random();
    if (r < 0.08) {
      // Earlier acknowledged events, resent as they were.
      const t = this.nextTenant();
      if (t.recent.length > 0) {
        const n = 1 + Math.floor(this.random() * Math.min(20, t.recent.length));
        const events = Array.from({ length: n }, () => this.pick(t.recent));
        this.stats.duplicate_copies_sent += events.length;
        return { events, kind: 'resend' };
      }
    } else if (r < 0.11) {
      // Earlier ids with another quantity: ignored, the first acknowledged content counts.
      const t = this.nextTenant();
      if (t.recent.length > 0) {
        const n = 1 + Math.floor(this.random() * Math.min(5, t.recent.length));
        const events = Array.from({ length: n }, () => {
          const e = this.pick(t.recent);
          // At most 6 decimals, like every quantity (3.333333 + 1 in binary floating point has more).
          return { ...e, quantity: e.metric === 'requests' ? 7 : Math.round((e.quantity + 1) * 1e6) / 1e6 };
        });
        this.stats.conflicting_resends_sent += events.length;
        return { events, kind: 'conflict' };
      }
    } else if (r < 0.19) {
      // One request for several tenants: stored in one transaction, all or nothing.
      const events: ChaosEvent[] = [];
      for (let i = 0; i < 3; i++) {
        const t = this.nextTenant();
        const n = 3 + Math.floor(this.random() * 6);
        for (let j = 0; j < n; j++) events.push(this.newEvent(t));
      }
      return { events, kind: 'multi' };
    }
    const t = this.nextTenant();
    const n = 5 + Math.floor(this.random() * 30);
    const events = Array.from({ length: n }, () => this.newEvent(t));
    if (this.random() < 0.15) {
      // The same event twice in one batch.
      events.splice(Math.floor(this.random() * events.length), 0, events[Math.floor(this.random() * events.length)]!);
      this.stats.duplicate_copies_sent += 1;
    }
    return { events, kind: 'new' };
  }

  /** Sends one batch until it is acknowledged or finally rejected. */
  private async sendUntilDone(events: ChaosEvent[], kind: BatchKind): Promise<BatchRecord> {
    this.stats.batches[kind] += 1;
    this.stats.events_sent += events.length;
    for (const e of events) this.sent.get(e.tenant_id)!.add(e.id);
    const record: BatchRecord = {
      kind,
      events: events.map((e) => ({ tenant_id: e.tenant_id, id: e.id, timestamp: e.timestamp })),
      first_sent_at: Date.now(),
      answered_at: 0,
      outcome: 'abandoned',
      attempts: 0,
      ambiguous: false,
    };
    const watched = this.options.watch !== undefined && events.some((e) => this.options.watch!.has(e.tenant_id));
    const done = (outcome: string): BatchRecord => {
      record.outcome = outcome;
      record.answered_at = Date.now();
      if (watched || (outcome !== 'acked' && outcome !== 'abandoned')) this.batchLog.push(record);
      return record;
    };
    for (let attempt = 0; ; attempt++) {
      if (Date.now() > this.giveUpAt) {
        this.stats.batches_abandoned += 1;
        return done('abandoned');
      }
      this.stats.requests += 1;
      record.attempts += 1;
      const res = await this.http.attempt('POST', '/v1/events', { events }, this.options.requestTimeoutMs);
      if (res.status === 202) {
        this.stats.batches_acked += 1;
        if (kind !== 'conflict') this.record(events);
        return done('acked');
      }
      if (res.status >= 400 && res.status < 500 && res.status !== 429 && res.status !== 408) {
        this.stats.batches_rejected += 1;
        const code = `${res.status} ${typeof res.body?.code === 'string' ? res.body.code : ''}`.trim();
        this.stats.rejected_codes[code] = (this.stats.rejected_codes[code] ?? 0) + 1;
        const examples = (this.stats.rejected_examples[code] ??= []);
        if (examples.length < 3) examples.push({ kind, detail: res.body?.detail, errors: res.body?.errors?.slice?.(0, 3) });
        return done(code);
      }
      // Retried with the same ids: at-least-once sending, exactly-once counting.
      record.ambiguous = true;
      this.stats.retries += 1;
      const cause = res.status === 0 ? (res.error ?? 'error') : String(res.status);
      this.stats.retry_causes[cause] = (this.stats.retry_causes[cause] ?? 0) + 1;
      await sleep(Math.min(2000, 100 * 2 ** Math.min(attempt, 5)) * (0.5 + this.random()));
    }
  }

  private record(events: ChaosEvent[]): void {
    const now = Date.now();
    for (const e of events) {
      const acked = this.acked.get(e.tenant_id)!;
      if (acked.has(e.id)) continue;
      acked.set(e.id, { metric: e.metric, quantity: String(e.quantity), timestamp: e.timestamp, acked_at: now });
      const t = this.state.get(e.tenant_id)!;
      t.recent.push(e);
      if (t.recent.length > 300) t.recent.splice(0, t.recent.length - 300);
    }
  }
}
