export { TallyClient, type TallyClientOptions, type TrackedUsage } from './client';
export { BufferFullError, ClientClosedError, TallyApiError, TallyNetworkError, UsageDeliveryError, type DeliveryFailureReason } from './errors';
export type { RetryOptions } from './retry';
export type { UsageStats } from './usage-batcher';
export type { AuthorizeResult, EstimateResult, FieldError, Problem, UsageView, WireUsageEvent } from './api-types';
export type { components, operations, paths } from './generated/openapi';
