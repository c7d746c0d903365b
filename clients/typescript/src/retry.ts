import { TallyApiError, TallyNetworkError } from './errors';

/** How a request that got no usable answer is retried. */
export interface RetryOptions {
  /** Attempts per request, the first one included. Default 10. */
  maxAttempts?: number;
  /** The first backoff window: the wait before retry n is drawn from [0, min(maxDelayMs, baseDelayMs × 2^(n-1))). Default 200 ms. */
  baseDelayMs?: number;
  /** The largest backoff window. Default 30 s. */
  maxDelayMs?: number;
  /** The time budget from the first attempt: a retry whose wait would end after it is not made. Default 120 s. */
  maxElapsedMs?: number;
}

export type RetryPolicy = Required<RetryOptions>;

export const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 10, baseDelayMs: 200, maxDelayMs: 30_000, maxElapsedMs: 120_000 };

/**
 * Answers worth retrying unchanged: 429 (rate limited) and 503 (unavailable) come with
 * `Retry-After` from the API; 502 and 504 come from a proxy in front of it that could not reach it.
 * Anything else (4xx: the request is wrong; 500: a defect) is not retried.
 */
const RETRYABLE_STATUSES = new Set([429, 502, 503, 504]);

export function isRetryable(err: unknown): boolean {
  if (err instanceof TallyNetworkError) return true;
  return err instanceof TallyApiError && RETRYABLE_STATUSES.has(err.status);
}

/** `Retry-After` in milliseconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3). */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const at = Date.parse(trimmed);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/**
 * The wait before retry `retry` (1 for the first retry): exponential backoff with full jitter,
 * a uniform draw from [0, window), so that many clients refused together do not come back
 * together. A `Retry-After` is a floor: the client never comes back sooner than the server asked.
 */
export function retryDelayMs(policy: RetryPolicy, retry: number, retryAfterMs: number | undefined, random: () => number = Math.random): number {
  const window = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (retry - 1));
  const backoff = Math.floor(random() * window);
  return retryAfterMs === undefined ? backoff : Math.max(retryAfterMs, backoff);
}

/** Waits `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Runs `attempt` until it succeeds, fails with an error that is not worth retrying, or the
 * policy's budget (attempts, then time) is spent; the last error is thrown then.
 */
export async function withRetries<T>(policy: RetryPolicy, attempt: () => Promise<T>, options: { signal?: AbortSignal; onRetry?: (err: unknown, delayMs: number) => void } = {}): Promise<T> {
  const started = Date.now();
  for (let n = 1; ; n += 1) {
    try {
      return await attempt();
    } catch (err) {
      if (!isRetryable(err) || n >= policy.maxAttempts || options.signal?.aborted) throw err;
      const delay = retryDelayMs(policy, n, err instanceof TallyApiError ? err.retryAfterMs : undefined);
      if (Date.now() - started + delay > policy.maxElapsedMs) throw err;
      options.onRetry?.(err, delay);
      await sleep(delay, options.signal);
    }
  }
}
