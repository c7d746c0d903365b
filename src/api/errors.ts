import type { ErrorRequestHandler, RequestHandler } from 'express';
import { ZodError } from 'zod';
import { PlacementKeptChanging } from '../db/ingest';
import { UnknownCursor } from '../db/pagination';

/** The stable machine words of API.md; clients branch on these, never on titles. */
export type ProblemCode =
  | 'validation_failed'
  | 'not_found'
  | 'unauthorized'
  | 'forbidden'
  | 'late_event'
  | 'future_event'
  | 'unknown_metric'
  | 'webhook_target_refused'
  | 'subscription_cancelled'
  | 'events_purged'
  | 'conflict'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'rate_limited'
  | 'unavailable'
  | 'internal';

const TITLES: Record<ProblemCode, string> = {
  validation_failed: 'Validation failed',
  not_found: 'Not found',
  unauthorized: 'Unauthorized',
  forbidden: 'Forbidden',
  late_event: 'Event too late',
  future_event: 'Event in the future',
  unknown_metric: 'Unknown metric',
  webhook_target_refused: 'Webhook target refused',
  subscription_cancelled: 'Subscription cancelled',
  events_purged: 'Events purged',
  conflict: 'Conflict',
  payload_too_large: 'Payload too large',
  unsupported_media_type: 'Unsupported media type',
  rate_limited: 'Too many requests',
  unavailable: 'Service unavailable',
  internal: 'Internal error',
};

/** One bad field of a request: `events.3.quantity` and what is wrong with it. */
export interface FieldError {
  path: string;
  message: string;
}

/** An error that becomes an RFC 9457 problem+json response with a stable `code`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: ProblemCode,
    detail: string,
    readonly errors?: FieldError[],
    readonly headers?: Record<string, string>,
  ) {
    super(detail);
  }
}

/** 404 exactly as if the resource did not exist (also what another tenant's key sees). */
export function notFound(what: string): ApiError {
  return new ApiError(404, 'not_found', `${what} not found`);
}

/** 422 for a `starting_after` that is not an id of the list (e.g. another tenant's id). */
export function unknownCursor(startingAfter: string | undefined): ApiError {
  return new ApiError(422, 'validation_failed', `starting_after ${startingAfter} is not an id of this list`, [
    { path: 'starting_after', message: 'unknown id: pass the id of an item from a previous page' },
  ]);
}

/**
 * How many unknown fields of one object are named one by one; the rest are summed up in one more
 * entry, so a body of 60,000 unknown keys does not answer with 60,000 errors.
 */
const MAX_UNKNOWN_FIELDS_NAMED = 10;

/** A key as it may appear in an error path: printable and at most 64 characters. */
export function printableKey(key: string): string {
  // eslint-disable-next-line no-control-regex
  const clean = key.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]|[\u0000-\u001f\u007f]/g, '\ufffd');
  return clean.length > 64 ? `${clean.slice(0, 64)}…` : clean;
}

/**
 * Turns zod issues into `errors[]` with dotted paths (`events.3.quantity`). Zod reports unknown
 * fields once per object, at the object's path; each is named here at its own path
 * (`events.0.colour`), which is what a client needs to find the field it misspelled.
 */
export function fieldErrors(error: ZodError): FieldError[] {
  return error.issues.flatMap((issue) => {
    const path = issue.path.map(String);
    if (issue.code !== 'unrecognized_keys') return [{ path: path.join('.') || '(body)', message: issue.message }];
    const named = issue.keys.slice(0, MAX_UNKNOWN_FIELDS_NAMED).map((key) => ({ path: [...path, printableKey(key)].join('.'), message: 'is not a known field' }));
    const more = issue.keys.length - named.length;
    return more > 0 ? [...named, { path: path.join('.') || '(body)', message: `has ${more} more unknown fields` }] : named;
  });
}

/** The one error middleware: every 4xx/5xx body is problem+json; client input never yields a 5xx. */
export function errorMiddleware(): ErrorRequestHandler {
  return (err, req, res, _next) => {
    const requestId = String(res.getHeader('x-request-id') ?? '');
    let problem: ApiError;
    if (err instanceof ApiError) problem = err;
    else if (err instanceof UnknownCursor) problem = unknownCursor(err.startingAfter);
    else if (err instanceof ZodError) problem = new ApiError(422, 'validation_failed', 'the request is invalid', fieldErrors(err));
    else if (err instanceof PlacementKeptChanging) {
      problem = new ApiError(503, 'unavailable', "the tenant's periods changed while its events were being stored; nothing was stored; retry", undefined, { 'Retry-After': '1' });
    } else if (err?.type === 'entity.parse.failed') problem = new ApiError(400, 'validation_failed', 'malformed JSON body');
    else if (err?.type === 'entity.too.large') problem = new ApiError(413, 'payload_too_large', 'the request body is too large');
    else if (err?.status === 415) problem = new ApiError(415, 'unsupported_media_type', String(err.message ?? 'unsupported media type'));
    else if (typeof err?.status === 'number' && err.status >= 400 && err.status < 500) {
      problem = new ApiError(err.status, 'validation_failed', String(err.message ?? 'bad request'));
    } else if (isDependencyOutage(err)) {
      req.log?.warn({ err }, 'a dependency is unavailable');
      problem = new ApiError(503, 'unavailable', 'the database or the workflow service is unavailable; retry', undefined, { 'Retry-After': '1' });
    } else {
      req.log?.error({ err }, 'unhandled error');
      problem = new ApiError(500, 'internal', 'an internal error occurred; it has been logged');
    }
    if (problem.headers) res.set(problem.headers);
    res
      .status(problem.status)
      .type('application/problem+json')
      .json({
        type: `https://tally.dev/problems/${problem.code}`,
        title: TITLES[problem.code],
        status: problem.status,
        detail: problem.message,
        code: problem.code,
        ...(problem.errors ? { errors: problem.errors } : {}),
        request_id: requestId || undefined,
      });
  };
}

/** Unknown routes answer problem+json 404 too. */
export function notFoundMiddleware(): RequestHandler {
  return (req, _res, next) => next(new ApiError(404, 'not_found', `no route ${req.method} ${req.path}`));
}

/** Connection-level failures of node sockets and of PostgreSQL (SQLSTATE class 08, 57P01-57P03). */
const OUTAGE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENOTFOUND', '57P01', '57P02', '57P03']);
/**
 * What node-postgres says, without a code, when a connection broke or could not be made in time:
 * a client whose connection failed (or that was closed as it failed) refuses the queries queued
 * on it, and the pool gives up waiting for a new connection.
 */
const PG_OUTAGE_MESSAGE =
  /Connection terminated|the database system is (starting up|shutting down)|Client has encountered a connection error and is not queryable|Client was closed and is not queryable|timeout exceeded when trying to connect|^timeout expired$/;
/** gRPC UNAVAILABLE and DEADLINE_EXCEEDED: the Temporal server is down or not answering. */
const GRPC_OUTAGE = new Set([4, 14]);

/**
 * True when an error means PostgreSQL or Temporal could not be reached, rather than a bug: the
 * client gets 503 with Retry-After (as during a restart of either), not a 500 that reads as a
 * defect. Follows `cause` chains (Temporal's ServiceError wraps the gRPC error).
 */
export function isDependencyOutage(err: unknown): boolean {
  type Failure = { code?: unknown; details?: unknown; name?: unknown; message?: unknown; cause?: unknown };
  for (let e = err as Failure | undefined, depth = 0; e && depth < 5; e = e.cause as Failure | undefined, depth++) {
    if (typeof e.code === 'string' && (OUTAGE_CODES.has(e.code) || e.code.startsWith('08'))) return true;
    if (typeof e.code === 'number' && GRPC_OUTAGE.has(e.code) && typeof e.details === 'string') return true;
    if (e.name === 'KnexTimeoutError') return true;
    if (typeof e.message === 'string' && PG_OUTAGE_MESSAGE.test(e.message)) return true;
  }
  return false;
}
