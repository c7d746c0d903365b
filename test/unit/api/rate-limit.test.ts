/** Token buckets and the rate-limit middleware, on a hand-driven clock. */
import type { NextFunction, Request, Response } from 'express';
import { TokenBuckets, rateLimit, type RateLimitBudget } from '../../../src/api/rate-limit';
import { ApiError } from '../../../src/api/errors';

test('a bucket allows its burst, then refills at its rate', () => {
  let now = 0;
  const buckets = new TokenBuckets(10, 20, () => now);
  for (let i = 0; i < 20; i++) expect(buckets.take('k').allowed).toBe(true);
  const refused = buckets.take('k');
  expect(refused).toEqual({ allowed: false, retryAfterSeconds: 1 });
  now += 100; // 0.1 s at 10/s: one token
  expect(buckets.take('k').allowed).toBe(true);
  expect(buckets.take('k').allowed).toBe(false);
  now += 60_000; // refills up to the burst, not beyond
  for (let i = 0; i < 20; i++) expect(buckets.take('k').allowed).toBe(true);
  expect(buckets.take('k').allowed).toBe(false);
});

test('keys have separate buckets', () => {
  const buckets = new TokenBuckets(1, 2, () => 0);
  expect([buckets.take('a'), buckets.take('a'), buckets.take('a')].map((r) => r.allowed)).toEqual([true, true, false]);
  expect(buckets.take('b').allowed).toBe(true);
});

test('Retry-After is the whole seconds until the next token, at least 1', () => {
  const buckets = new TokenBuckets(0.25, 1, () => 0);
  expect(buckets.take('k').allowed).toBe(true);
  expect(buckets.take('k')).toEqual({ allowed: false, retryAfterSeconds: 4 });
});

test('full buckets are forgotten when the key count is bounded', () => {
  let now = 0;
  const buckets = new TokenBuckets(100, 200, () => now, 3);
  for (const k of ['a', 'b', 'c']) buckets.take(k);
  now += 10_000;
  buckets.take('d');
  expect(buckets.size).toBe(1);
});

function call(mw: ReturnType<typeof rateLimit>, method: string, path: string, principal: object): unknown {
  const req = { method, baseUrl: '/v1', path } as Request;
  const res = { locals: { principal } } as unknown as Response;
  let result: unknown = 'not called';
  const next: NextFunction = (err?: unknown) => {
    result = err ?? 'next';
  };
  mw(req, res, next);
  return result;
}

test('ingest and reads have separate budgets per principal; refusals are 429 rate_limited with Retry-After', () => {
  const limited: RateLimitBudget[] = [];
  const mw = rateLimit({ ingestPerSecond: 1, readsPerSecond: 1, now: () => 0, onLimited: (b) => limited.push(b) });
  const tenant = { kind: 'tenant', tenantId: 'acme' };
  expect(call(mw, 'POST', '/events', tenant)).toBe('next');
  expect(call(mw, 'POST', '/events', tenant)).toBe('next'); // burst = 2x
  const refused = call(mw, 'POST', '/events', tenant);
  expect(refused).toBeInstanceOf(ApiError);
  expect(refused).toMatchObject({ status: 429, code: 'rate_limited', headers: { 'Retry-After': '1' } });
  // Reads still have their own budget, other tenants and the admin theirs.
  expect(call(mw, 'GET', '/tenants/acme/usage', tenant)).toBe('next');
  expect(call(mw, 'POST', '/events', { kind: 'tenant', tenantId: 'globex' })).toBe('next');
  expect(call(mw, 'POST', '/events', { kind: 'admin' })).toBe('next');
  expect(limited).toEqual(['ingest']);
});

test('a rate of 0 turns a budget off', () => {
  const mw = rateLimit({ ingestPerSecond: 0, readsPerSecond: 1, now: () => 0 });
  for (let i = 0; i < 100; i++) expect(call(mw, 'POST', '/events', { kind: 'admin' })).toBe('next');
  expect(call(mw, 'GET', '/plans', { kind: 'admin' })).toBe('next');
  expect(call(mw, 'GET', '/plans', { kind: 'admin' })).toBe('next');
  expect(call(mw, 'GET', '/plans', { kind: 'admin' })).toBeInstanceOf(ApiError);
});
