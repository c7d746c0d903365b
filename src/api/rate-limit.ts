import type { RequestHandler } from 'express';
import { principalOf } from './auth';
import { ApiError } from './errors';

/**
 * Per-key rate limits: one token bucket per API key principal (the admin, or a tenant) and budget.
 * Ingest (`POST /v1/events`) and every other `/v1` request have separate budgets, so a tenant
 * flooding its reads cannot starve its own ingest, and one tenant cannot starve another.
 *
 * The buckets live in this process's memory: with N API replicas the effective limit is N times
 * the configured one, which is acceptable for a guard against runaway clients (not billing-grade
 * quota enforcement).
 */

/** The outcome of one `take`: allowed, or when to retry. */
export type TakeResult = { allowed: true; remaining: number } | { allowed: false; retryAfterSeconds: number };

/** A set of token buckets sharing one rate: `ratePerSecond` refill, `burst` capacity. */
export class TokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    readonly ratePerSecond: number,
    readonly burst: number,
    private readonly now: () => number = () => performance.now(),
    /** Above this many keys, buckets that have refilled completely are forgotten. */
    private readonly maxKeys = 10_000,
  ) {
    if (!(ratePerSecond > 0) || !(burst >= 1)) throw new Error('a token bucket needs a positive rate and a burst of at least 1');
  }

  /** Takes one token from `key`'s bucket if it has one. */
  take(key: string): TakeResult {
    const now = this.now();
    const bucket = this.buckets.get(key) ?? { tokens: this.burst, at: now };
    bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.ratePerSecond);
    bucket.at = now;
    if (!this.buckets.has(key)) {
      if (this.buckets.size >= this.maxKeys) this.prune(now);
      this.buckets.set(key, bucket);
    }
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return { allowed: true, remaining: Math.floor(bucket.tokens) };
    }
    return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil((1 - bucket.tokens) / this.ratePerSecond)) };
  }

  /** How many keys have a bucket (for tests). */
  get size(): number {
    return this.buckets.size;
  }

  private prune(now: number): void {
    for (const [key, b] of this.buckets) {
      if (b.tokens + ((now - b.at) / 1000) * this.ratePerSecond >= this.burst) this.buckets.delete(key);
    }
  }
}

/** The two budgets of API v1. */
export type RateLimitBudget = 'ingest' | 'reads';

/** Requests per second per API key for each budget; 0 (or absent) turns that budget's limit off. */
export interface RateLimitOptions {
  ingestPerSecond?: number;
  readsPerSecond?: number;
  /** Bucket capacity as a multiple of the rate (default 2). */
  burstFactor?: number;
  /** Called for every refused request (metrics). */
  onLimited?: (budget: RateLimitBudget) => void;
  now?: () => number;
}

/**
 * Express middleware for the `/v1` router, mounted after `authenticate` (it keys on the principal).
 * A refused request gets 429 problem+json `rate_limited` with `Retry-After` in seconds.
 */
export function rateLimit(options: RateLimitOptions): RequestHandler {
  const burstFactor = options.burstFactor ?? 2;
  const make = (rate: number | undefined) =>
    rate && rate > 0 ? new TokenBuckets(rate, Math.max(1, Math.ceil(rate * burstFactor)), options.now) : undefined;
  const budgets: Record<RateLimitBudget, TokenBuckets | undefined> = { ingest: make(options.ingestPerSecond), reads: make(options.readsPerSecond) };
  return (req, res, next) => {
    const budget: RateLimitBudget = req.method === 'POST' && `${req.baseUrl}${req.path}`.replace(/\/$/, '') === '/v1/events' ? 'ingest' : 'reads';
    const buckets = budgets[budget];
    if (!buckets) return next();
    const principal = principalOf(res);
    const key = principal.kind === 'tenant' ? `tenant:${principal.tenantId}` : 'admin';
    const result = buckets.take(key);
    if (result.allowed) return next();
    options.onLimited?.(budget);
    next(
      new ApiError(429, 'rate_limited', `too many ${budget} requests for this API key: at most ${buckets.ratePerSecond} per second`, undefined, {
        'Retry-After': String(result.retryAfterSeconds),
      }),
    );
  };
}
