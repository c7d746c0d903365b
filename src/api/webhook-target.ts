import { assertWebhookTarget, WebhookTargetRefusedError } from '../notifications/webhook-targets';
import type { ApiContext } from './context';
import { ApiError } from './errors';

/**
 * Refuses a webhook URL the deployment's policy does not allow (not https, or naming a loopback,
 * private, link-local or metadata address, directly or through DNS): 422
 * `webhook_target_refused`, naming the field. The worker checks every delivery again.
 */
export async function assertWebhookTargetAllowed(ctx: Pick<ApiContext, 'webhookTargets'>, url: string, path: string): Promise<void> {
  try {
    await assertWebhookTarget(ctx.webhookTargets, url);
  } catch (err) {
    if (!(err instanceof WebhookTargetRefusedError)) throw err;
    throw new ApiError(422, 'webhook_target_refused', `${path} is refused: ${err.message}`, [{ path, message: err.message }]);
  }
}
