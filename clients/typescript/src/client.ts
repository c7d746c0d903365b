import type { AuthorizeResult, EstimateResult, UsageView, WireUsageEvent } from './api-types';
import { UsageDeliveryError } from './errors';
import { DEFAULT_RETRY, withRetries, type RetryOptions, type RetryPolicy } from './retry';
import { Transport } from './transport';
import { UsageBatcher, type UsageStats } from './usage-batcher';

/** The API's own limits on one `POST /v1/events` (docs/api.md): 1,000 events, a 1 MiB body. */
const API_MAX_BATCH_EVENTS = 1000;
const API_MAX_BODY_BYTES = 1024 * 1024;

export interface TallyClientOptions {
  /** Where the API answers, e.g. `http://localhost:3000`. */
  baseUrl: string;
  /** A tenant key (`tk_…`) or the admin key. */
  apiKey: string;
  /**
   * The tenant that `usage`, `authorize` and `estimate` act on, and that tracked events belong to,
   * unless a call names another. With a tenant key it is that key's tenant; with the admin key,
   * every event needs a tenant, from here or from `track({ tenantId })`.
   */
  tenantId?: string;
  /** Events per request. Default and maximum 1,000. */
  maxBatchEvents?: number;
  /** Body bytes per request. Default 512 KiB; at most 1 MiB. */
  maxBatchBytes?: number;
  /** The longest a tracked event waits before its batch is sent, in ms. Default 1,000. */
  flushIntervalMs?: number;
  /** Events held (waiting or in flight) before `track` throws `BufferFullError`. Default 20,000. */
  maxBufferedEvents?: number;
  /** Bytes held (waiting or in flight) before `track` throws `BufferFullError`. Default 16 MiB. */
  maxBufferedBytes?: number;
  /** Retries of 429, 503, 502, 504 and network errors, for batches and helpers alike. */
  retry?: RetryOptions;
  /** Time one request may take before it counts as a network error (and is retried). Default 30 s. */
  requestTimeoutMs?: number;
  /**
   * Called with the events the client gave up on: refused by the API (`rejected`), never
   * acknowledged within the retry budget (`retries_exhausted`), or still held when
   * `close({ timeoutMs })` ran out (`closed`). Without it, each is written to the console.
   */
  onError?: (error: UsageDeliveryError) => void;
  /** The fetch to use (a custom agent, a test double). Default: the global fetch of Node 20. */
  fetch?: typeof fetch;
}

/** One usage event to record. */
export interface TrackedUsage {
  metric: string;
  quantity: number;
  /**
   * The idempotency key: the API counts an id at most once per tenant, ever. When omitted, the
   * client makes one (a random UUID) when `track` is called, so resending never counts twice.
   */
  id?: string;
  /** When the usage happened. Default: when the API stores it. */
  timestamp?: Date | string;
  properties?: Record<string, unknown>;
  /** The tenant, when the client's key is the admin key and the client has no `tenantId`. */
  tenantId?: string;
}

type TenantScoped = { tenantId?: string; signal?: AbortSignal };

/**
 * A client for services that send usage to tally. `track` buffers events and sends them in
 * batches, retrying what is safe to retry; `usage`, `authorize` and `estimate` call the API at once.
 *
 * ```ts
 * const tally = new TallyClient({ baseUrl: 'http://localhost:3000', apiKey: process.env.TALLY_KEY!, tenantId: 'acme' });
 * tally.track({ metric: 'api_requests', quantity: 1 });
 * await tally.close(); // on shutdown: sends what is buffered
 * ```
 */
export class TallyClient {
  private readonly transport: Transport;
  private readonly retry: RetryPolicy;
  private readonly batcher: UsageBatcher;
  private readonly tenantId: string | undefined;
  private closed: Promise<void> | undefined;

  constructor(options: TallyClientOptions) {
    if (!options.baseUrl) throw new TypeError('baseUrl is required');
    if (!options.apiKey) throw new TypeError('apiKey is required');
    const fetchImpl = options.fetch ?? globalThis.fetch;
    if (typeof fetchImpl !== 'function') throw new TypeError('no fetch: use Node.js 20 or later, or pass options.fetch');
    this.tenantId = options.tenantId;
    this.retry = { ...DEFAULT_RETRY, ...options.retry };
    this.transport = new Transport({ baseUrl: options.baseUrl, apiKey: options.apiKey, fetch: fetchImpl, requestTimeoutMs: positive('requestTimeoutMs', options.requestTimeoutMs ?? 30_000) });
    const limits = {
      maxBatchEvents: positive('maxBatchEvents', options.maxBatchEvents ?? API_MAX_BATCH_EVENTS, API_MAX_BATCH_EVENTS),
      maxBatchBytes: positive('maxBatchBytes', options.maxBatchBytes ?? 512 * 1024, API_MAX_BODY_BYTES),
      flushIntervalMs: positive('flushIntervalMs', options.flushIntervalMs ?? 1000),
      maxBufferedEvents: positive('maxBufferedEvents', options.maxBufferedEvents ?? 20_000),
      maxBufferedBytes: positive('maxBufferedBytes', options.maxBufferedBytes ?? 16 * 1024 * 1024),
    };
    if (limits.maxBufferedEvents < limits.maxBatchEvents) throw new RangeError('maxBufferedEvents must be at least maxBatchEvents');
    if (limits.maxBufferedBytes < limits.maxBatchBytes) throw new RangeError('maxBufferedBytes must be at least maxBatchBytes');
    const onError = options.onError ?? ((error: UsageDeliveryError) => console.error(`tally client: ${error.message}`));
    this.batcher = new UsageBatcher(this.transport, limits, this.retry, onError);
  }

  /**
   * Buffers one event and returns its id at once. Throws `BufferFullError` when the buffer is full
   * (the API has not acknowledged enough of what was sent: nothing was buffered, so the caller
   * decides to wait, drop or fail), `ClientClosedError` after `close()`, and `TypeError` or
   * `RangeError` for an event the API could never take (see the README).
   */
  track(event: TrackedUsage): string {
    return this.batcher.add(this.wireEvent(event));
  }

  /** Like `track`, but waits for room while the buffer is full. `signal` stops the wait. */
  trackAsync(event: TrackedUsage, options: { signal?: AbortSignal } = {}): Promise<string> {
    let wire: WireUsageEvent;
    try {
      wire = this.wireEvent(event);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.batcher.addWhenRoom(wire, options.signal);
  }

  /** Sends everything tracked so far; resolves once each event is acknowledged or given to `onError`. */
  flush(): Promise<void> {
    return this.batcher.flush();
  }

  /**
   * Graceful shutdown: refuses new events (waiting `trackAsync` calls reject with
   * `ClientClosedError`), sends everything buffered, and stops the flush timer, so the client
   * holds no handle open. With `timeoutMs`, what is still unacknowledged then goes to `onError`
   * (reason `closed`). Calling it again returns the same promise.
   */
  close(options: { timeoutMs?: number } = {}): Promise<void> {
    this.closed ??= this.batcher.close(options.timeoutMs);
    return this.closed;
  }

  /** Counts of what is buffered, in flight, delivered and given up. */
  stats(): UsageStats {
    return this.batcher.stats();
  }

  /** `GET /v1/tenants/{id}/usage`: the current period. `consistent` waits until every acknowledged event is counted. */
  async usage(options: TenantScoped & { consistent?: boolean } = {}): Promise<UsageView> {
    const query = options.consistent ? '?consistent=true' : '';
    return this.call<UsageView>('GET', `${this.tenantPath(options.tenantId)}/usage${query}`, undefined, options.signal);
  }

  /**
   * `POST /v1/tenants/{id}/authorize`: check and consume `quantity` against the meter's hard limit.
   * Idempotent on `id`, which the client makes once per call when omitted, so its own retries never
   * consume twice. The answer carries the id used.
   */
  async authorize(request: TenantScoped & { metric: string; quantity: number; id?: string }): Promise<AuthorizeResult & { id: string }> {
    const id = request.id ?? globalThis.crypto.randomUUID();
    const body = JSON.stringify({ id, metric: request.metric, quantity: request.quantity });
    const result = await this.call<AuthorizeResult>('POST', `${this.tenantPath(request.tenantId)}/authorize`, body, request.signal);
    return { ...result, id };
  }

  /** `POST /v1/tenants/{id}/estimate`: what `quantity` more of `metric` would cost now. */
  async estimate(request: TenantScoped & { metric: string; quantity: number }): Promise<EstimateResult> {
    const body = JSON.stringify({ metric: request.metric, quantity: request.quantity });
    return this.call<EstimateResult>('POST', `${this.tenantPath(request.tenantId)}/estimate`, body, request.signal);
  }

  private call<T>(method: 'GET' | 'POST', path: string, body: string | undefined, signal: AbortSignal | undefined): Promise<T> {
    return withRetries(this.retry, () => this.transport.send<T>(method, path, body, signal), { signal });
  }

  private tenantPath(tenantId: string | undefined): string {
    const id = tenantId ?? this.tenantId;
    if (!id) throw new TypeError('no tenant: pass tenantId to this call or to the client');
    return `/v1/tenants/${encodeURIComponent(id)}`;
  }

  /** The event as the API takes it, with its id fixed now: every resend carries the same id. */
  private wireEvent(event: TrackedUsage): WireUsageEvent {
    if (typeof event.metric !== 'string' || event.metric === '') throw new TypeError('metric must be a non-empty string');
    if (typeof event.quantity !== 'number' || !Number.isFinite(event.quantity) || event.quantity < 0) {
      throw new RangeError(`quantity must be a finite number of at least 0, not ${String(event.quantity)}`);
    }
    const id = event.id ?? globalThis.crypto.randomUUID();
    if (typeof id !== 'string' || id.length < 1 || id.length > 128) throw new RangeError('id must be 1 to 128 characters');
    const wire: WireUsageEvent = { id, metric: event.metric, quantity: event.quantity };
    const tenantId = event.tenantId ?? this.tenantId;
    if (tenantId !== undefined) wire.tenant_id = tenantId;
    if (event.timestamp !== undefined) wire.timestamp = event.timestamp instanceof Date ? event.timestamp.toISOString() : event.timestamp;
    if (event.properties !== undefined) {
      if (event.properties === null || typeof event.properties !== 'object' || Array.isArray(event.properties)) throw new TypeError('properties must be a JSON object');
      wire.properties = event.properties;
    }
    return wire;
  }
}

function positive(name: string, value: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isInteger(value) || value < 1 || value > max) throw new RangeError(`${name} must be an integer from 1 to ${max}, not ${value}`);
  return value;
}
