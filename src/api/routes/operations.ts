import { Router } from 'express';
import type { ApiContext } from '../context';
import { pingDb } from '../../db/knex';

/** Liveness and readiness, unauthenticated so orchestrators can probe them. */
export function operationsRouter(ctx: ApiContext): Router {
  const router = Router();
  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  router.get('/readyz', async (_req, res) => {
    const [postgres, temporal] = await Promise.all([pingDb(ctx.db), ctx.temporalReady()]);
    res.status(postgres && temporal ? 200 : 503).json({ status: postgres && temporal ? 'ready' : 'unavailable', postgres, temporal });
  });
  return router;
}
