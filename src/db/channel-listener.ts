import pg from 'pg';
import type { Db } from './knex';

/** What a listener reports: each notification's payload, and when it starts or stops hearing them. */
export interface ChannelHandlers {
  /** A notification on the channel, with its payload as sent. */
  onNotice(payload: string): void;
  /**
   * The listener hears the channel from now on: first, and again after a lost connection. What was
   * notified before, or while it was away, was not heard.
   */
  onListening(): void;
  /** The listener stopped hearing the channel (its connection failed or ended); it tries again. */
  onLost?(): void;
  onError(err: unknown): void;
}

/**
 * Listens on a PostgreSQL notification channel from a connection of its own (a listening session
 * cannot go back to a pool), opened again `retryMs` after it is lost. The returned function stops
 * listening.
 */
export function listenOnChannel(db: Db, channel: string, handlers: ChannelHandlers, retryMs = 1_000): () => Promise<void> {
  let stopped = false;
  let current: pg.Client | undefined;
  let retry: NodeJS.Timeout | undefined;
  const lost = (client: pg.Client, err?: unknown) => {
    if (current !== client || stopped) return;
    if (err !== undefined) handlers.onError(err);
    handlers.onLost?.();
    current = undefined;
    client.end().catch(() => undefined);
    retry = setTimeout(() => void listen(), retryMs);
    retry.unref();
  };
  const listen = async () => {
    const client = new pg.Client(db.client.config.connection as string | pg.ClientConfig);
    current = client;
    client.on('notification', (notice) => handlers.onNotice(notice.payload ?? ''));
    client.on('error', (err) => lost(client, err));
    client.on('end', () => lost(client));
    try {
      await client.connect();
      await client.query(`LISTEN ${channel}`);
      if (current === client && !stopped) handlers.onListening();
    } catch (err) {
      lost(client, err);
    }
  };
  void listen();
  return async () => {
    stopped = true;
    clearTimeout(retry);
    await current?.end().catch(() => undefined);
  };
}
