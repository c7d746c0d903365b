/** The request and answer shapes the client uses, named from the generated OpenAPI types. */
import type { components, operations } from './generated/openapi';

type JsonBody<T> = T extends { content: { 'application/json': infer B } } ? B : never;

/** A usage event as `POST /v1/events` takes it. */
export type WireUsageEvent = JsonBody<operations['ingestUsageEvents']['requestBody']>['events'][number];
/** `POST /v1/events` → 202. */
export type IngestAccepted = JsonBody<operations['ingestUsageEvents']['responses'][202]>;
/** `GET /v1/tenants/{id}/usage`: the current period. */
export type UsageView = components['schemas']['UsageView'];
/** `POST /v1/tenants/{id}/authorize` body and answer. */
export type AuthorizeRequest = JsonBody<operations['authorizeUsage']['requestBody']>;
export type AuthorizeResult = JsonBody<operations['authorizeUsage']['responses'][200]>;
/** `POST /v1/tenants/{id}/estimate` body and answer. */
export type EstimateRequest = JsonBody<operations['estimateUsageCost']['requestBody']>;
export type EstimateResult = JsonBody<operations['estimateUsageCost']['responses'][200]>;
/** The body of every 4xx and 5xx answer (`application/problem+json`, RFC 9457). */
export type Problem = components['schemas']['Problem'];
/** One bad field of a refused request: `events.3.quantity` and what is wrong with it. */
export type FieldError = NonNullable<Problem['errors']>[number];
