import nodemailer from 'nodemailer';

/**
 * How a notification leaves the process: one SMTP transport (nodemailer) and one HTTP POST.
 * Both are bounded in time, so a hanging server or receiver fails the attempt (and the activity
 * retries) instead of hanging the activity until its start-to-close timeout.
 */

/** One email, ready to send. `messageId` is derived from the event id, so mail systems can dedupe. */
export interface EmailMessage {
  to: string;
  subject: string;
  text: string;
  messageId: string;
  headers?: Record<string, string>;
}

/** One webhook POST; `body` is already serialized because it is exactly what was signed. */
export interface WebhookRequest {
  url: string;
  body: string;
  headers: Record<string, string>;
}

/** Thrown for a receiver that answered, but not with a 2xx (the attempt failed; retry later). */
export class WebhookRejectedError extends Error {
  constructor(readonly status: number) {
    super(`receiver answered HTTP ${status}`);
  }
}

/** Default bound on one webhook request, connection to response headers (spec: e.g. 10 s). */
export const DEFAULT_WEBHOOK_TIMEOUT_MS = 10_000;
/** Default bound on one SMTP send, connection to the server's acceptance of the message. */
export const DEFAULT_EMAIL_TIMEOUT_MS = 15_000;

/**
 * POSTs one webhook. Success is any 2xx; redirects are not followed (a 3xx is a failure, so a
 * signed body never goes somewhere the tenant did not configure). The response body is dropped.
 */
export async function postWebhook(request: WebhookRequest, timeoutMs = DEFAULT_WEBHOOK_TIMEOUT_MS): Promise<void> {
  const res = await fetch(request.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'user-agent': 'tally-webhooks/1', ...request.headers },
    body: request.body,
    redirect: 'manual',
    signal: AbortSignal.timeout(timeoutMs),
  });
  await res.body?.cancel().catch(() => undefined);
  if (res.status < 200 || res.status >= 300) throw new WebhookRejectedError(res.status);
}

/** Sends one email (a fresh SMTP connection per message: nothing to close); see {@link createSmtpSender}. */
export type SmtpSender = { send(message: EmailMessage): Promise<void> };

/**
 * A sender over `SMTP_URL` (`smtp://user:pass@host:port`, `smtps://…` for implicit TLS). An
 * optional `?from=` query parameter sets the From address (default `tally <alerts@localhost>`).
 * Connection, greeting and socket timeouts, plus an overall deadline, bound each send.
 */
export function createSmtpSender(smtpUrl: string, timeoutMs = DEFAULT_EMAIL_TIMEOUT_MS): SmtpSender {
  const url = new URL(smtpUrl);
  const from = url.searchParams.get('from') ?? 'tally <alerts@localhost>';
  url.searchParams.delete('from');
  const transport = nodemailer.createTransport({
    url: url.toString(),
    connectionTimeout: timeoutMs,
    greetingTimeout: timeoutMs,
    socketTimeout: timeoutMs,
  });
  return {
    async send(message) {
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`SMTP send timed out after ${timeoutMs} ms`)), timeoutMs + 1_000);
      });
      try {
        await Promise.race([
          transport.sendMail({ from, to: message.to, subject: message.subject, text: message.text, messageId: message.messageId, headers: message.headers }),
          deadline,
        ]);
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
