import { log, proxyActivities } from '@temporalio/workflow';
import type * as activities from '../activities';
import type { DeliverAlertInput } from '../activities/types';
import { notifyAlertSummary } from './summaries';

/**
 * One notified alert's delivery (email and signed webhook), as its own workflow
 * `alert-<alert id>`: a receiver that hangs or fails retries here, for as long as its retry
 * budget lasts, while the tenant's run goes on counting and rolling over. The tenant's run
 * makes the first attempt itself (a webhook that answers at once needs no more), and starts this
 * workflow only for what that attempt left undone, without waiting for it (it outlives that
 * run); the id makes a second start of one alert's delivery impossible.
 */
export interface AlertDeliveryInput extends DeliverAlertInput {
  /** For the summary: what crossed which threshold. */
  subject: string;
  threshold: number;
}

/** Every attempt at one alert's delivery, the tenant run's inline first attempt included. */
export const ALERT_DELIVERY_ATTEMPTS = 8;

const DELIVERY_RETRY = { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute' } as const;

const acts = proxyActivities<ReturnType<typeof activities.createActivities>>({
  startToCloseTimeout: '30 seconds',
  retry: { maximumAttempts: ALERT_DELIVERY_ATTEMPTS, ...DELIVERY_RETRY },
});

export async function alertDelivery(input: AlertDeliveryInput): Promise<void> {
  const { subject, threshold, ...delivery } = input;
  const earlier = input.earlier_attempts ?? 0;
  try {
    await acts.deliverAlert.executeWithOptions(
      { summary: notifyAlertSummary(subject, threshold), retry: { maximumAttempts: Math.max(1, ALERT_DELIVERY_ATTEMPTS - earlier), ...DELIVERY_RETRY } },
      [delivery],
    );
  } catch (err) {
    // The delivery rows say `failed`: the alert is recorded, never lost silently.
    log.error('alert delivery failed for good', { alertId: input.alert_id, error: String(err) });
  }
}
