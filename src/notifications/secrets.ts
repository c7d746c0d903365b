import { createHmac, randomBytes } from 'node:crypto';
import type { Db } from '../db/knex';
import { replaceWebhookSecret, storeWebhookSecretIfMissing } from '../db/tenants';

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
  return (await storeWebhookSecretIfMissing(db, tenantId, secret)) ? secret : undefined;
}

/** Replaces the tenant's secret at once (the old one stops signing) and returns the new one. */
export async function rotateWebhookSecret(db: Db, tenantId: string): Promise<string | undefined> {
  const secret = generateWebhookSecret();
  return (await replaceWebhookSecret(db, tenantId, secret)) ? secret : undefined;
}
