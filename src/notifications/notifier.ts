import type { Logger } from '../logger';
import {
  DEFAULT_EMAIL_TIMEOUT_MS,
  DEFAULT_WEBHOOK_TIMEOUT_MS,
  createSmtpSender,
  postWebhook,
  type EmailMessage,
  type WebhookRequest,
} from './transports';
import type { WebhookTargetPolicy } from './webhook-targets';

export type { EmailMessage, WebhookRequest } from './transports';

/**
 * The transports the delivery activities send through, injected into `createActivities` so tests
 * point them at local servers. Bookkeeping (which target, at most once, retries) lives in
 * `src/notifications/`, the same for every notifier.
 */
export interface Notifier {
  /** Sends an email, or answers `recorded` when no SMTP server is configured; throws on failure. */
  sendEmail(message: EmailMessage): Promise<'sent' | 'recorded'>;
  /** POSTs a signed webhook (2xx or it throws), or answers `recorded` when sending is off. */
  postWebhook(request: WebhookRequest): Promise<'sent' | 'recorded'>;
  /**
   * Gives a delivery up as `failed` after this many attempts even if the activity's retry policy
   * allows more (tests keep failures short); unset, the retry policy alone decides.
   */
  readonly maxAttempts?: number;
}

/** How the real notifier is configured: `SMTP_URL`, and bounds for tests. */
export interface NotifierOptions {
  logger: Logger;
  /** `smtp://` or `smtps://`; unset, emails are recorded as deliveries, not sent. */
  smtpUrl?: string;
  /** Bound on one webhook request (default 10 s). */
  webhookTimeoutMs?: number;
  /** Bound on one SMTP send (default 15 s). */
  emailTimeoutMs?: number;
  /** See {@link Notifier.maxAttempts}. */
  maxAttempts?: number;
  /** Where webhooks may go (WEBHOOK_ALLOW_PRIVATE_TARGETS, WEBHOOK_HTTP_ALLOWED_HOSTS); default: https to public addresses only. */
  webhookTargets?: WebhookTargetPolicy;
}

/**
 * The production notifier: webhooks over HTTP with a timeout, emails over `SMTP_URL` when it is
 * set (recorded, not sent, when it is not), so configuring SMTP is the only switch.
 */
export function createNotifier(options: NotifierOptions): Notifier {
  const smtp = options.smtpUrl ? createSmtpSender(options.smtpUrl, options.emailTimeoutMs ?? DEFAULT_EMAIL_TIMEOUT_MS) : undefined;
  if (!smtp) options.logger.info('SMTP_URL is unset: alert emails are recorded as deliveries, not sent');
  return {
    maxAttempts: options.maxAttempts,
    async sendEmail(message) {
      if (!smtp) {
        options.logger.info({ to: message.to, subject: message.subject }, 'email recorded (no SMTP_URL)');
        return 'recorded';
      }
      await smtp.send(message);
      return 'sent';
    },
    async postWebhook(request) {
      const timeoutMs = Math.min(options.webhookTimeoutMs ?? DEFAULT_WEBHOOK_TIMEOUT_MS, request.timeoutMs ?? Infinity);
      await postWebhook(request, timeoutMs, options.webhookTargets);
      return 'sent';
    },
  };
}

/**
 * A notifier that sends nothing: every email and webhook is recorded as a delivery with status
 * `recorded` and logged, so no alert is ever silently dropped. For tests and tools that must not
 * reach the network (time-skipping tests, history recording).
 */
export function createRecordingNotifier(logger: Logger): Notifier {
  return {
    async sendEmail(message) {
      logger.warn({ to: message.to, subject: message.subject }, 'email recorded');
      return 'recorded';
    },
    async postWebhook(request) {
      logger.warn({ url: request.url }, 'webhook recorded');
      return 'recorded';
    },
  };
}
