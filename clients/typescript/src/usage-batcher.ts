import type { IngestAccepted, WireUsageEvent } from './api-types';
import { BufferFullError, ClientClosedError, TallyApiError, UsageDeliveryError, type DeliveryFailureReason } from './errors';
import { isRetryable, withRetries, type RetryPolicy } from './retry';
import type { Transport } from './transport';

/** Limits of one `POST /v1/events` and of what the client holds. */
export interface BatchLimits {
  /** Events per request; a batch goes out as soon as this many wait. At most 1,000 (the API's limit). */
  maxBatchEvents: number;
  /** Body bytes per request; a batch goes out as soon as this much waits. At most 1 MiB (the API's limit). */
  maxBatchBytes: number;
  /** The longest an event waits before its batch goes out, in ms. */
  flushIntervalMs: number;
  /** Events held, queued or in flight, before `track` refuses and `trackAsync` waits. */
  maxBufferedEvents: number;
  /** Bytes held (serialized events), queued or in flight, before `track` refuses and `trackAsync` waits. */
  maxBufferedBytes: number;
}

/** What the batcher has done so far: for health checks and dashboards. */
export interface UsageStats {
  /** Events waiting for their batch. */
  queued: number;
  /** Events in the request in flight (sent, not yet acknowledged). */
  inFlight: number;
  /** Bytes held, queued and in flight. */
  heldBytes: number;
  /** `trackAsync` calls waiting for room. */
  waiting: number;
  /** Events the API acknowledged (202: durable). */
  delivered: number;
  /** Events given to `onError`, by reason. */
  failed: Record<DeliveryFailureReason, number>;
  /** Requests retried after 429, 503, 502, 504 or a network error. */
  retries: number;
}

/** One tracked event: its place in line, its id, and its JSON as it will be sent. */
interface HeldEvent {
  seq: number;
  id: string;
  json: string;
  /** UTF-8 bytes of `json`, plus one for the comma that separates it from the previous event. */
  bytes: number;
}

/** `{"events":[` and `]}`, less the first event's comma that is never written. */
const BODY_OVERHEAD = '{"events":[]}'.length - 1;

/**
 * The buffer behind `track()`: events wait in line, go out in batches of at most `maxBatchEvents`
 * events and `maxBatchBytes` bytes, one request at a time, in the order they were tracked. A batch
 * goes out when it is full, when the oldest waiting event has waited `flushIntervalMs`, on
 * `flush()` and on `close()`.
 *
 * Memory is bounded: the events held (queued or in the request in flight) never exceed
 * `maxBufferedEvents` nor `maxBufferedBytes`. Room comes back only when the API acknowledges a
 * batch (or the batch is given up), so while the API is down the buffer fills and then refuses
 * (`track`) or makes the caller wait (`trackAsync`): the back-pressure reaches the caller instead of
 * growing a queue.
 */
export class UsageBatcher {
  private queue: HeldEvent[] = [];
  /** Index of the first queued event in `queue` (the array is compacted as it empties). */
  private head = 0;
  private queuedBytes = 0;
  private inFlight: HeldEvent[] = [];
  private inFlightBytes = 0;
  private sending: Promise<void> | undefined;
  private lastSeq = 0;
  /** Every event up to this seq is due now (flush, interval, close). */
  private dueUpTo = 0;
  /** Every event up to this seq is acknowledged or given up. */
  private settledUpTo = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly flushWaiters: Array<{ seq: number; resolve: () => void }> = [];
  private readonly roomWaiters: Array<{ event: HeldEvent; resolve: (id: string) => void; reject: (err: unknown) => void; signal?: AbortSignal; onAbort?: () => void }> = [];
  private closing = false;
  /** Aborts the request in flight and retry waits when `close({ timeoutMs })` runs out of time. */
  private readonly abort = new AbortController();
  private readonly counters = { delivered: 0, retries: 0, failed: { rejected: 0, retries_exhausted: 0, closed: 0 } };

  constructor(
    private readonly transport: Transport,
    private readonly limits: BatchLimits,
    private readonly retry: RetryPolicy,
    private readonly onError: (error: UsageDeliveryError) => void,
  ) {}

  /** Buffers one serialized event, or throws `BufferFullError` / `ClientClosedError`. */
  add(event: WireUsageEvent): string {
    if (this.closing) throw new ClientClosedError();
    const held = this.hold(event);
    if (this.roomWaiters.length > 0 || !this.hasRoomFor(held)) throw new BufferFullError({ events: this.limits.maxBufferedEvents, bytes: this.limits.maxBufferedBytes });
    this.enqueue(held);
    return held.id;
  }

  /** Buffers one event, waiting (in line with other waiters) while the buffer is full. */
  addWhenRoom(event: WireUsageEvent, signal?: AbortSignal): Promise<string> {
    if (this.closing) return Promise.reject(new ClientClosedError());
    const held = this.hold(event);
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.roomWaiters.length === 0 && this.hasRoomFor(held)) {
      this.enqueue(held);
      return Promise.resolve(held.id);
    }
    return new Promise<string>((resolve, reject) => {
      const waiter: (typeof this.roomWaiters)[number] = { event: held, resolve, reject, signal };
      if (signal) {
        waiter.onAbort = () => {
          const i = this.roomWaiters.indexOf(waiter);
          if (i >= 0) this.roomWaiters.splice(i, 1);
          reject(signal.reason);
        };
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      this.roomWaiters.push(waiter);
    });
  }

  /** Sends every event buffered so far; resolves once each is acknowledged or given to `onError`. */
  flush(): Promise<void> {
    const target = this.lastSeq;
    if (this.settledUpTo >= target) return Promise.resolve();
    this.dueUpTo = Math.max(this.dueUpTo, target);
    const done = new Promise<void>((resolve) => this.flushWaiters.push({ seq: target, resolve }));
    this.pump();
    return done;
  }

  /**
   * Refuses new events and waiters, sends everything held, and clears the timer. With `timeoutMs`,
   * whatever is still held when it runs out is given to `onError` (reason `closed`) and the request
   * in flight is aborted; without it, close waits as long as the retry budget lets a batch live.
   */
  async close(timeoutMs?: number): Promise<void> {
    this.closing = true;
    for (const waiter of this.roomWaiters.splice(0)) {
      if (waiter.onAbort) waiter.signal?.removeEventListener('abort', waiter.onAbort);
      waiter.reject(new ClientClosedError());
    }
    const drained = this.flush();
    if (timeoutMs !== undefined) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const expired = await Promise.race([drained.then(() => false), new Promise<boolean>((r) => (timer = setTimeout(() => r(true), timeoutMs)))]);
      clearTimeout(timer);
      if (expired) {
        this.abort.abort(new ClientClosedError());
        const left = this.queue.slice(this.head);
        this.queue = [];
        this.head = 0;
        this.queuedBytes = 0;
        if (left.length > 0) this.fail('closed', left, [], new Error(`close() timed out after ${timeoutMs} ms`));
        await this.sending;
        this.settle(this.lastSeq);
      }
    }
    await drained;
    this.clearTimer();
  }

  stats(): UsageStats {
    return {
      queued: this.queue.length - this.head,
      inFlight: this.inFlight.length,
      heldBytes: this.queuedBytes + this.inFlightBytes,
      waiting: this.roomWaiters.length,
      delivered: this.counters.delivered,
      failed: { ...this.counters.failed },
      retries: this.counters.retries,
    };
  }

  private hold(event: WireUsageEvent): HeldEvent {
    const json = JSON.stringify(event);
    const bytes = Buffer.byteLength(json) + 1;
    if (BODY_OVERHEAD + bytes - 1 > this.limits.maxBatchBytes) {
      throw new RangeError(`usage event ${event.id} is ${bytes - 1} bytes as JSON: a batch holds at most ${this.limits.maxBatchBytes} bytes`);
    }
    return { seq: 0, id: event.id, json, bytes };
  }

  private hasRoomFor(event: HeldEvent): boolean {
    const events = this.queue.length - this.head + this.inFlight.length;
    const bytes = this.queuedBytes + this.inFlightBytes;
    return events + 1 <= this.limits.maxBufferedEvents && bytes + event.bytes <= this.limits.maxBufferedBytes;
  }

  private enqueue(event: HeldEvent): void {
    this.lastSeq += 1;
    event.seq = this.lastSeq;
    this.queue.push(event);
    this.queuedBytes += event.bytes;
    if (this.batchIsFull()) this.pump();
    else this.armTimer();
  }

  private batchIsFull(): boolean {
    return this.queue.length - this.head >= this.limits.maxBatchEvents || BODY_OVERHEAD + this.queuedBytes >= this.limits.maxBatchBytes;
  }

  /** The timer runs only while events wait, so an idle client holds no handle open. */
  private armTimer(): void {
    if (this.timer !== undefined || this.queue.length === this.head) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.dueUpTo = Math.max(this.dueUpTo, this.lastSeq);
      this.pump();
    }, this.limits.flushIntervalMs);
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Starts the next batch if one is due and no request is in flight. */
  private pump(): void {
    if (this.sending) return;
    const queued = this.queue.length - this.head;
    if (queued === 0) {
      this.clearTimer();
      return;
    }
    if (!this.batchIsFull() && this.queue[this.head]!.seq > this.dueUpTo) {
      this.armTimer();
      return;
    }
    const batch = this.takeBatch();
    if (this.queue.length === this.head) this.clearTimer();
    this.sending = this.deliver(batch).finally(() => {
      this.sending = undefined;
      this.inFlight = [];
      this.inFlightBytes = 0;
      this.settle(batch[batch.length - 1]!.seq);
      this.admitWaiters();
      this.pump();
    });
  }

  private takeBatch(): HeldEvent[] {
    let count = 0;
    let bytes = BODY_OVERHEAD;
    const queued = this.queue.length - this.head;
    while (count < queued && count < this.limits.maxBatchEvents) {
      const next = this.queue[this.head + count]!;
      if (count > 0 && bytes + next.bytes > this.limits.maxBatchBytes) break;
      bytes += next.bytes - (count === 0 ? 1 : 0);
      count += 1;
    }
    const batch = this.queue.slice(this.head, this.head + count);
    this.head += count;
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    const batchBytes = batch.reduce((sum, e) => sum + e.bytes, 0);
    this.queuedBytes -= batchBytes;
    this.inFlight = batch;
    this.inFlightBytes = batchBytes;
    return batch;
  }

  /**
   * Sends one batch until the API acknowledges it or it is given up. Every retry sends the same
   * events with the same ids, so a batch the API stored before its answer was lost is not counted
   * twice. A refusal that names events (`events.3.timestamp`: the API stored nothing of the batch)
   * gives those events to `onError` and sends the others again.
   */
  private async deliver(batch: HeldEvent[]): Promise<void> {
    let pending = batch;
    while (pending.length > 0) {
      const body = `{"events":[${pending.map((e) => e.json).join(',')}]}`;
      try {
        await withRetries(this.retry, () => this.transport.send<IngestAccepted>('POST', '/v1/events', body, this.abort.signal), {
          signal: this.abort.signal,
          onRetry: () => (this.counters.retries += 1),
        });
        this.counters.delivered += pending.length;
        return;
      } catch (err) {
        if (this.abort.signal.aborted) return this.fail('closed', pending, [], err);
        if (isRetryable(err)) return this.fail('retries_exhausted', pending, [], err);
        const named = err instanceof TallyApiError && err.status < 500 ? refusedEvents(err, pending) : undefined;
        if (!named) return this.fail('rejected', pending, [], err);
        this.fail('rejected', pending.filter((_, i) => named.has(i)), [...named.values()].flat(), err);
        pending = pending.filter((_, i) => !named.has(i));
      }
    }
  }

  private fail(reason: DeliveryFailureReason, events: HeldEvent[], fieldErrors: UsageDeliveryError['fieldErrors'], cause: unknown): void {
    this.counters.failed[reason] += events.length;
    const error = new UsageDeliveryError(reason, events.map((e) => JSON.parse(e.json) as WireUsageEvent), fieldErrors, { cause });
    try {
      this.onError(error);
    } catch {
      // the caller's callback must not stop delivery of the other batches
    }
  }

  private settle(seq: number): void {
    this.settledUpTo = Math.max(this.settledUpTo, seq);
    for (let i = this.flushWaiters.length - 1; i >= 0; i -= 1) {
      const waiter = this.flushWaiters[i]!;
      if (waiter.seq <= this.settledUpTo) {
        this.flushWaiters.splice(i, 1);
        waiter.resolve();
      }
    }
  }

  private admitWaiters(): void {
    while (this.roomWaiters.length > 0 && this.hasRoomFor(this.roomWaiters[0]!.event)) {
      const waiter = this.roomWaiters.shift()!;
      if (waiter.onAbort) waiter.signal?.removeEventListener('abort', waiter.onAbort);
      this.enqueue(waiter.event);
      waiter.resolve(waiter.event.id);
    }
  }
}

/**
 * The events a refusal names, by batch index, with their field errors (paths inside the event),
 * when every error it lists is inside one event (`events.3`, `events.3.quantity`); undefined when
 * the refusal concerns the request as a whole (a bad key, a body too large).
 */
function refusedEvents(err: TallyApiError, batch: HeldEvent[]): Map<number, UsageDeliveryError['fieldErrors']> | undefined {
  if (err.errors.length === 0) return undefined;
  const named = new Map<number, UsageDeliveryError['fieldErrors']>();
  for (const e of err.errors) {
    const m = /^events\.(\d+)(?:\.(.*))?$/.exec(e.path);
    const event = m ? batch[Number(m[1])] : undefined;
    if (!event) return undefined;
    const errors = named.get(Number(m![1])) ?? [];
    errors.push({ eventId: event.id, path: m![2] ?? '', message: e.message });
    named.set(Number(m![1]), errors);
  }
  return named;
}
