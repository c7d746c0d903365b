import http from 'node:http';
import https from 'node:https';
import nodemailer from 'nodemailer';
import { STRICT_WEBHOOK_TARGETS, checkWebhookUrl, pinnedLookup, type WebhookTargetPolicy } from './webhook-targets';

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
  /** A tighter bound than the notifier's own for this one request (an inline attempt's). */
  timeoutMs?: number;
}

/** Thrown for a receiver that answered, but not with a 2xx (the attempt failed; retry later). */
export class WebhookRejectedError extends Error {
  constructor(readonly status: number) {
    super(`receiver answered HTTP ${status}`);
  }
}

/** Default bound on one webhook request, connection to response (spec: e.g. 10 s). */
export const DEFAULT_WEBHOOK_TIMEOUT_MS = 10_000;
/** Bound on resolving and connecting (TCP and TLS) to a receiver, within the request's bound. */
export const WEBHOOK_CONNECT_TIMEOUT_MS = 3_000;
/** At most this much of a receiver's answer is read, then discarded: it never reaches logs or the API. */
export const WEBHOOK_RESPONSE_LIMIT_BYTES = 4_096;
/** Default bound on one SMTP send, connection to the server's acceptance of the message. */
export const DEFAULT_EMAIL_TIMEOUT_MS = 15_000;

/** A webhook request that took longer than its bound (`last_error` shows `timed out`). */
class WebhookTimeoutError extends Error {
  override name = 'TimeoutError';
}

/**
 * POSTs one webhook to a target the policy allows (see `webhook-targets.ts`): the socket connects
 * only to an address checked by {@link pinnedLookup}, and an IP literal is checked before any
 * connection. Success is any 2xx; redirects are not followed (a 3xx is a failure, so a signed body
 * never goes somewhere the tenant did not configure). At most {@link WEBHOOK_RESPONSE_LIMIT_BYTES}
 * of the answer are read and dropped; the whole exchange is bounded by `timeoutMs`, and resolving
 * plus connecting by {@link WEBHOOK_CONNECT_TIMEOUT_MS}.
 */
export async function postWebhook(
  request: WebhookRequest,
  timeoutMs = DEFAULT_WEBHOOK_TIMEOUT_MS,
  targets: WebhookTargetPolicy = STRICT_WEBHOOK_TARGETS,
): Promise<void> {
  const url = new URL(request.url);
  checkWebhookUrl(targets, url);
  const send = url.protocol === 'https:' ? https.request : http.request;
  const body = Buffer.from(request.body, 'utf8');
  const status = await new Promise<number>((resolve, reject) => {
    const req = send(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'user-agent': 'tally-webhooks/1', ...request.headers, 'content-length': String(body.length) },
      agent: false, // a fresh connection each time: never a pooled socket to an address checked earlier
      lookup: pinnedLookup(targets),
    });
    const fail = (err: Error) => req.destroy(err);
    const deadline = setTimeout(() => fail(new WebhookTimeoutError(`no answer within ${timeoutMs} ms`)), timeoutMs);
    const connectDeadline = setTimeout(() => fail(new WebhookTimeoutError(`not connected within ${WEBHOOK_CONNECT_TIMEOUT_MS} ms`)), Math.min(WEBHOOK_CONNECT_TIMEOUT_MS, timeoutMs));
    const settle = () => {
      clearTimeout(deadline);
      clearTimeout(connectDeadline);
    };
    req.on('socket', (socket) => socket.once(url.protocol === 'https:' ? 'secureConnect' : 'connect', () => clearTimeout(connectDeadline)));
    req.on('error', (err) => {
      settle();
      reject(err);
    });
    req.on('response', (res) => {
      clearTimeout(connectDeadline);
      let read = 0;
      const done = () => {
        settle();
        res.destroy();
        resolve(res.statusCode ?? 0);
      };
      res.on('data', (chunk: Buffer) => {
        read += chunk.length;
        if (read >= WEBHOOK_RESPONSE_LIMIT_BYTES) done();
      });
      res.on('end', done);
      res.on('error', done);
      res.on('close', done);
    });
    req.end(body);
  });
  if (status < 200 || status >= 300) throw new WebhookRejectedError(status);
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
