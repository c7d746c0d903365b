import type { NextFunction, Request, Response } from 'express';
import type { z } from 'zod';
import { resourceId } from './schemas';

/**
 * The OpenAPI side of a route, declared where the route is registered:
 *
 *     router.get('/:id', operation({ operationId: 'getTenant', ... }), async (req, res) => { ... });
 *
 * `operation()` returns a pass-through handler that carries the declaration. The document
 * (`openapi.ts`) walks the app's router and takes each route's method and path from Express and
 * its description from this handler, so a route cannot be served without being documented, nor
 * documented without being served. Who may call it is read from the chain too (`requireAdmin`).
 */

/** The document's tags, in the order the reference shows them. */
export const TAGS = {
  Plans: 'Price books: meters, pricing models, limits and alert thresholds. Posting an existing plan id appends a version; running periods keep theirs.',
  Tenants: 'The customers being billed. Creating one issues its API key and starts its billing workflow; cancelling closes and invoices its last period.',
  Usage: "Usage events in (acknowledged once durable), the current period's counters and costs out, check-and-consume against hard limits, and cost estimates.",
  Alerts: 'Threshold alerts, the rules that fire them, and the notifications (emails, signed webhooks) they send.',
  Finance: 'Closing periods, invoices and their PDFs, and reruns that re-rate a period as a new invoice version.',
  Operations: 'Liveness, readiness, Prometheus metrics and this reference. Public: no API key.',
  Dashboard: 'The web app at /dashboard and its sign-in: an API key is exchanged for a signed session cookie, which the /v1 routes accept with the same rights (writes echo X-CSRF-Token).',
} as const;

export type Tag = keyof typeof TAGS;

/** A response other than a problem: the success answer, or e.g. readiness's 503 with a JSON body. */
export interface ResponseSpec {
  description: string;
  /** Omitted for answers without a body (204). */
  schema?: z.ZodType;
  /** Default `application/json`. */
  contentType?: string;
  /** Response headers, e.g. `Location`. */
  headers?: z.ZodObject;
}

export interface OperationSpec {
  /** Stable camelCase name for generated clients; unique in the document. */
  operationId: string;
  tag: Tag;
  summary: string;
  description?: string;
  /** Served without an API key (the operations routes). */
  public?: boolean;
  /** Path parameters by their Express name (`:invoiceId`); the document spells them snake_case. */
  params?: Record<string, z.ZodType>;
  query?: z.ZodObject;
  headers?: z.ZodObject;
  body?: z.ZodType;
  /** The body may be omitted entirely (close-period). */
  bodyOptional?: boolean;
  /** By status: the success answer first. */
  responses: Record<number, ResponseSpec>;
  /**
   * Problem answers besides those the document infers (401, 429 and 503 on every keyed route, 403
   * behind `requireAdmin`, 404 with path parameters, 400/413/422 with a body, 422 with a query or
   * headers): status → when; `false` drops an inferred one the route cannot give.
   */
  problems?: Record<number, string | false>;
}

/** The `:id` of `/v1/tenants/:id/...`; ids that cannot be a tenant's answer 404. */
export const tenantIdParam = resourceId.describe('the tenant id');

const declared = new WeakMap<object, OperationSpec>();

/**
 * A handler that only passes the request on. Generic in the route parameters, so it takes the
 * route's own (`req.params.planId` stays typed by the path) instead of widening them.
 */
export type OperationHandler = <P>(req: Request<P>, res: Response, next: NextFunction) => void;

/** A pass-through handler that declares the OpenAPI operation of the route it is registered on. */
export function operation(spec: OperationSpec): OperationHandler {
  const handler: OperationHandler = (_req, _res, next) => next();
  declared.set(handler, spec);
  return handler;
}

/** The declaration a route handler carries, if it is one made by {@link operation}. */
export function declaredOperation(handler: unknown): OperationSpec | undefined {
  return typeof handler === 'function' ? declared.get(handler) : undefined;
}
