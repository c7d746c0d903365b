import type { Db } from '../db/knex';
import type { Logger } from '../logger';

/** One alert ready to go out, with everything a channel needs. */
export interface AlertNotification {
  alert_id: string;
  tenant_id: string;
  subject: string;
  threshold: number;
  level: string;
  used: string;
  limit: string;
  covers: number[];
  period_start: string;
  fired_at: string;
}

/** A channel the alert goes through (email, webhook, or the log when none is configured). */
export interface Notifier {
  deliverAlert(alert: AlertNotification, db: Db): Promise<Array<{ channel: string; target: string; status: 'delivered' | 'recorded' | 'skipped' }>>;
}

/**
 * The notifier used until email and webhook channels are configured: it records the alert as a
 * `recorded` delivery (visible in the API) and logs it, so no alert is ever silently dropped.
 * The delivery row's unique key (alert id, channel, target) makes a retried activity a no-op.
 */
export function createRecordingNotifier(logger: Logger): Notifier {
  return {
    async deliverAlert(alert, db) {
      const inserted = await db('notification_deliveries')
        .insert({
          event_id: alert.alert_id,
          tenant_id: alert.tenant_id,
          channel: 'log',
          target: 'log',
          status: 'recorded',
          attempts: 1,
          payload: JSON.stringify(alert),
          delivered_at: new Date(),
        })
        .onConflict(['event_id', 'channel', 'target'])
        .ignore()
        .returning('id');
      if (inserted.length > 0) logger.warn({ tenant_id: alert.tenant_id, alert }, 'usage alert');
      return [{ channel: 'log', target: 'log', status: inserted.length > 0 ? 'recorded' : 'skipped' }];
    },
  };
}
