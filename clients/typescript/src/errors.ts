import type { FieldError, WireUsageEvent } from './api-types';

/**
 * An answer of 400 or more from the API. `code` is the API's stable machine word
 * (`validation_failed`, `unknown_metric`, `rate_limited`, …): branch on it, not on `message`.
 */
export class TallyApiError extends Error {
  override readonly name = 'TallyApiError';
  readonly status: number;
  readonly code: string;
  readonly title: string;
  /** The fields at fault, each with a dotted path from the body's root (`events.3.timestamp`). */
  readonly errors: FieldError[];
  readonly requestId: string | undefined;
  /** What `Retry-After` asked for, in milliseconds, when the answer had one. */
  readonly retryAfterMs: number | undefined;

  constructor(init: { status: number; code: string; title: string; detail: string; errors?: FieldError[]; requestId?: string; retryAfterMs?: number }) {
    super(`${init.status} ${init.code}: ${init.detail}`);
    this.status = init.status;
    this.code = init.code;
    this.title = init.title;
    this.errors = init.errors ?? [];
    this.requestId = init.requestId;
    this.retryAfterMs = init.retryAfterMs;
  }
}

/** The request never got an answer: refused connection, reset, DNS failure or timeout. */
export class TallyNetworkError extends Error {
  override readonly name = 'TallyNetworkError';
  constructor(
    message: string,
    readonly timedOut: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * `track()` found no room: the buffer already holds `maxBufferedEvents` events or
 * `maxBufferedBytes` bytes (queued and in flight), usually because the API has been unreachable
 * for a while. Nothing was buffered. Wait and track again, or use `trackAsync()`, which waits.
 */
export class BufferFullError extends Error {
  override readonly name = 'BufferFullError';
  readonly code = 'buffer_full';
  constructor(readonly limit: { events: number; bytes: number }) {
    super(`the usage buffer is full (${limit.events} events or ${limit.bytes} bytes held while the API has not acknowledged them); nothing was buffered`);
  }
}

/** `track()` or `trackAsync()` after `close()` started. Nothing was buffered. */
export class ClientClosedError extends Error {
  override readonly name = 'ClientClosedError';
  readonly code = 'client_closed';
  constructor() {
    super('the client is closed: it takes no more usage events');
  }
}

/** Why events left the buffer without being acknowledged. */
export type DeliveryFailureReason =
  /** The API refused them (4xx other than 429): resending them as they are would fail again. */
  | 'rejected'
  /** 429, 503, 502, 504 or network errors until the retry budget was spent. */
  | 'retries_exhausted'
  /** `close({ timeoutMs })` ran out of time before they were acknowledged. */
  | 'closed';

/**
 * Events the client gave up on, handed to the `onError` callback. They keep their ids, so
 * tracking them again later (after fixing them, or once the API is back) can never count one twice.
 */
export class UsageDeliveryError extends Error {
  override readonly name = 'UsageDeliveryError';
  constructor(
    readonly reason: DeliveryFailureReason,
    readonly events: WireUsageEvent[],
    /** For `rejected`: what the API said about each event, by event id (field paths inside the event). */
    readonly fieldErrors: Array<{ eventId: string; path: string; message: string }>,
    options: { cause: unknown },
  ) {
    super(`${events.length} usage event(s) not delivered (${reason}): ${options.cause instanceof Error ? options.cause.message : String(options.cause)}`, options);
  }
}
