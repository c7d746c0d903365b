import { createHmac, randomBytes } from 'node:crypto';
import type { Db } from '../db/knex';

/**
 * Webhook secrets: one per tenant, generated when a webhook is first configured, shown once,
 * rotatable. Stored as-is in `tenants.webhook_secret` because signing needs the secret itself
 * (HMAC), not a hash; docs/webhooks.md explains the choice and its risk.
 */

/** A new secret: `whsec_` and 32 random bytes in hex; the whole string is the HMAC key. */
export function generateWebhookSecret(): string {
  return `whsec_${randomBytes(32).toString('hex')}`;
}

/**
 * The `X-Billing-Signature` header of one delivery: `t=<unix seconds>,v1=<hex HMAC-SHA256 of
 * "<t>.<raw body>">` (API.md). Signed at send time, so a retry carries a fresh timestamp and a
 * rotated secret applies to retries too.
 */
export function signWebhookBody(rawBody: string, secret: string, unixSeconds: number): string {
  const v1 = createHmac('sha256', secret).update(`${unixSeconds}.${rawBody}`, 'utf8').digest('hex');
  return `t=${unixSeconds},v1=${v1}`;
}

/**
 * Gives the tenant a secret if it has none and returns it, or undefined when one already
 * existed (it is never shown again). Conditional on NULL, so two concurrent calls issue one.
 */
export async function issueWebhookSecretIfMissing(db: Db, tenantId: string): Promise<string | undefined> {
  const secret = generateWebhookSecret();
  const updated = await db('tenants')
    .where({ id: tenantId })
    .whereNull('webhook_secret')
    .update({ webhook_secret: secret, updated_at: new Date() })
    .returning('id');
  return updated.length > 0 ? secret : undefined;
}

/**
 * Takes back a secret `issueWebhookSecretIfMissing` just issued, when the request that issued it
 * failed before answering (it was never shown). A secret rotated since is left as it is.
 */
export async function withdrawWebhookSecret(db: Db, tenantId: string, secret: string): Promise<void> {
  await db('tenants').where({ id: tenantId, webhook_secret: secret }).update({ webhook_secret: null });
}

/** Replaces the tenant's secret at once (the old one stops signing) and returns the new one. */
export async function rotateWebhookSecret(db: Db, tenantId: string): Promise<string | undefined> {
  const secret = generateWebhookSecret();
  const updated = await db('tenants').where({ id: tenantId }).update({ webhook_secret: secret, updated_at: new Date() }).returning('id');
  return updated.length > 0 ? secret : undefined;
}
