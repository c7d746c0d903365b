import { log, proxyActivities } from '@temporalio/workflow';
import type * as activities from '../activities';
import type { DeliverAlertInput } from '../activities/types';
import { notifyAlertSummary } from './summaries';

/**
 * One notified alert's delivery (email and signed webhook), as its own workflow
 * `alert-<alert id>`: a receiver that hangs or fails retries here, for as long as its retry
 * budget lasts, while the tenant's run goes on counting and rolling over. The tenant's run
 * starts it and does not wait for it (it outlives that run); the id makes a second start of one
 * alert's delivery impossible.
 */
export interface AlertDeliveryInput extends DeliverAlertInput {
  /** For the summary: what crossed which threshold. */
  subject: string;
  threshold: number;
}

const acts = proxyActivities<ReturnType<typeof activities.createActivities>>({
  startToCloseTimeout: '30 seconds',
  retry: { maximumAttempts: 8, initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute' },
});

export async function alertDelivery(input: AlertDeliveryInput): Promise<void> {
  const { subject, threshold, ...delivery } = input;
  try {
    await acts.deliverAlert.executeWithOptions({ summary: notifyAlertSummary(subject, threshold) }, [delivery]);
  } catch (err) {
    // The delivery rows say `failed`: the alert is recorded, never lost silently.
    log.error('alert delivery failed for good', { alertId: input.alert_id, error: String(err) });
  }
}
