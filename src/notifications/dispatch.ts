import { createHash } from 'node:crypto';
import type { Db } from '../db/knex';
import { completeDelivery, openDeliveryAttempt, recordDeliveryFailure, type DeliveryState } from '../db/deliveries';
import { findTenantWebhookSecret } from '../db/tenants';
import type { Logger } from '../logger';
import type { Notifier } from './notifier';
import { signWebhookBody } from './secrets';

/**
 * The delivery engine shared by alerts and invoice events. Every (event id, channel, target) has
 * one row in `notification_deliveries`, created on the first attempt with the payload frozen in
 * it; a retried activity resends that exact payload and skips rows already delivered, recorded
 * or failed. A short lease on the row keeps two overlapping attempts from both sending.
 */

/** Where a notification can go; `log` is the fallback when a tenant has no channel at all. */
export type Channel = 'email' | 'webhook' | 'log';

/** API.md's delivery states; `recorded` means kept but not sent (no SMTP server, or the log). */
export type DeliveryStatus = 'pending' | 'delivered' | 'failed' | 'recorded';

/** The event types of API.md's webhook body. */
export type EventType = 'alert.triggered' | 'invoice.finalized' | 'invoice.voided' | 'balance.low' | 'balance.depleted';

/** The webhook body of API.md: `{ id, type, created_at, data }`. */
export interface WebhookEvent {
  id: string;
  type: EventType;
  created_at: string;
  data: Record<string, unknown>;
}

/** What an email delivery sends (the address is the delivery's target). */
export interface EmailContent {
  subject: string;
  text: string;
}

/** One place an event goes, with what to send there. */
export type DeliveryPlan =
  | { channel: 'webhook'; target: string; payload: WebhookEvent }
  | { channel: 'email'; target: string; payload: EmailContent }
  | { channel: 'log'; target: 'log'; payload: Record<string, unknown> };

/** How one channel stands after this attempt (what the activity returns and the alert shows). */
export interface ChannelOutcome {
  channel: Channel;
  target: string;
  status: DeliveryStatus;
  attempts: number;
  last_error: string | null;
}

/** Which attempt of the activity this is, and whether the retry policy allows another. */
export interface AttemptContext {
  attempt: number;
  final: boolean;
  /**
   * An attempt made inline by the tenant's run: each webhook waits at most this long (the
   * configured timeout otherwise), and a plan with an email channel is declined whole (an SMTP
   * exchange cannot be cut short without risking a second copy of the email).
   */
  inlineSendBudgetMs?: number;
}

/** Raised before anything is sent when an inline attempt is declined: the delivery workflow makes the first attempt. */
export class InlineAttemptDeclined extends Error {
  override name = 'InlineAttemptDeclined';
}

/** What the engine needs: the database, the transports and a logger. */
export interface DispatchDeps {
  db: Db;
  notifier: Notifier;
  logger: Logger;
}

/**
 * Raised when some channel is still pending after this attempt, so the activity fails and
 * Temporal retries it with back-off; `final` says the failed rows are now marked `failed`.
 */
export class DeliveryIncompleteError extends Error {
  constructor(
    readonly outcomes: ChannelOutcome[],
    readonly final: boolean,
  ) {
    const failing = outcomes.filter((o) => o.status === 'pending' || o.status === 'failed');
    super(`${failing.map((o) => `${o.channel} ${o.target}: ${o.last_error ?? 'not delivered'}`).join('; ')}${final ? ' (gave up)' : ''}`);
    this.name = 'DeliveryIncompleteError';
  }
}

/**
 * An event to send: its id, type and tenant. `webhook_secret`, when the caller read the tenant
 * already (an alert's delivery reads it with the alert), signs its webhooks; absent, each webhook
 * send reads it.
 */
export interface DispatchedEvent {
  id: string;
  type: EventType;
  tenant_id: string;
  webhook_secret?: string | null;
}

/**
 * Sends one event through each planned channel, at most once successfully per (event id,
 * channel, target), and throws {@link DeliveryIncompleteError} when any channel is not done.
 */
export async function dispatchEvent(
  deps: DispatchDeps,
  event: DispatchedEvent,
  plans: DeliveryPlan[],
  attempt: AttemptContext,
): Promise<ChannelOutcome[]> {
  if (attempt.inlineSendBudgetMs !== undefined && plans.some((p) => p.channel === 'email')) throw new InlineAttemptDeclined('an email channel: the delivery workflow sends it');
  const unique = new Map<string, DeliveryPlan>();
  for (const plan of plans) unique.set(`${plan.channel} ${plan.target}`, plan);
  const outcomes = await Promise.all([...unique.values()].map((plan) => deliverOne(deps, event, plan, attempt)));
  if (outcomes.some((o) => o.status === 'pending')) throw new DeliveryIncompleteError(outcomes, false);
  if (outcomes.some((o) => o.status === 'failed') && attempt.final) throw new DeliveryIncompleteError(outcomes, true);
  return outcomes;
}

async function deliverOne(
  deps: DispatchDeps,
  event: DispatchedEvent,
  plan: DeliveryPlan,
  attempt: AttemptContext,
): Promise<ChannelOutcome> {
  const { db } = deps;
  const key = { event_id: event.id, channel: plan.channel, target: plan.target };
  const isLog = plan.channel === 'log';
  const opened = await openDeliveryAttempt(db, key, {
    tenant_id: event.tenant_id,
    event_type: event.type,
    status: isLog ? 'recorded' : 'pending',
    attempts: isLog ? 1 : 0,
    payload: plan.payload,
  });
  if (isLog && opened.kind !== 'busy' && opened.created) deps.logger.warn({ tenant_id: event.tenant_id, event: plan.payload }, `${event.type} (no channel configured)`);
  if (opened.kind === 'settled') return outcomeOf(plan, opened.delivery);
  // Only the attempt holding the lease sends a row; this one leaves it pending for that one.
  if (opened.kind === 'busy') return { channel: plan.channel, target: plan.target, status: 'pending', attempts: Number(opened.attempts), last_error: 'another attempt is sending it' };
  const leased = opened.delivery;

  try {
    const sent = await send(deps, event, plan, leased.payload, attempt.inlineSendBudgetMs);
    return outcomeOf(plan, await completeDelivery(db, leased.id, sent));
  } catch (err) {
    const message = errorMessage(err);
    const failed = await recordDeliveryFailure(db, leased.id, message, attempt.final);
    deps.logger.warn({ tenant_id: event.tenant_id, event_id: event.id, channel: plan.channel, target: plan.target, attempt: attempt.attempt, final: attempt.final, err: message }, 'notification delivery failed');
    return outcomeOf(plan, failed);
  }
}

/** One send through the notifier, with the payload stored on the first attempt. */
async function send(
  deps: DispatchDeps,
  event: DispatchedEvent,
  plan: DeliveryPlan,
  stored: unknown,
  timeoutMs: number | undefined,
): Promise<'delivered' | 'recorded'> {
  if (plan.channel === 'webhook') {
    const payload = stored as WebhookEvent;
    // Field order as API.md writes it; this exact string is what gets signed and sent.
    const body = JSON.stringify({ id: payload.id, type: payload.type, created_at: payload.created_at, data: payload.data });
    const secret = event.webhook_secret !== undefined ? event.webhook_secret : (await findTenantWebhookSecret(deps.db, event.tenant_id))?.webhook_secret;
    if (!secret) throw new Error('the tenant has no webhook secret (rotate one: POST /v1/tenants/{id}/webhook-secret)');
    const signature = signWebhookBody(body, secret, Math.floor(Date.now() / 1000));
    const result = await deps.notifier.postWebhook({ url: plan.target, body, headers: { 'x-billing-signature': signature }, ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
    return result === 'sent' ? 'delivered' : 'recorded';
  }
  if (plan.channel === 'email') {
    const content = stored as EmailContent;
    const result = await deps.notifier.sendEmail({
      to: plan.target,
      subject: content.subject,
      text: content.text,
      messageId: `<${event.id}.${createHash('sha256').update(plan.target).digest('hex').slice(0, 12)}@tally>`,
    });
    return result === 'sent' ? 'delivered' : 'recorded';
  }
  return 'recorded';
}

function outcomeOf(plan: DeliveryPlan, row: DeliveryState): ChannelOutcome {
  return { channel: plan.channel, target: plan.target, status: row.status, attempts: Number(row.attempts), last_error: row.last_error };
}

function errorMessage(err: unknown): string {
  const e = err as { name?: string; message?: string; cause?: { message?: string; code?: string } };
  const base = e?.name === 'TimeoutError' ? 'timed out' : String(e?.message ?? err);
  const cause = e?.cause?.code ?? e?.cause?.message;
  return (cause ? `${base} (${cause})` : base).slice(0, 500);
}
