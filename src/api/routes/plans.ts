import { Router } from 'express';
import type { ApiContext } from '../context';
import { requireAdmin } from '../auth';
import { createPlanBody } from '../schemas';
import { findPlanVersion, listLatestPlans, savePlanVersion } from '../../db/plans';
import { notFound } from '../errors';

/** Plans (admin): posting an existing id appends a version; running periods keep theirs. */
export function plansRouter(ctx: ApiContext): Router {
  const router = Router();
  router.use(requireAdmin);

  router.post('/', async (req, res) => {
    const body = createPlanBody.parse(req.body);
    const plan = await savePlanVersion(ctx.db, body);
    res.status(201).json(plan);
  });

  router.get('/', async (_req, res) => {
    const plans = await listLatestPlans(ctx.db);
    res.json({ data: plans.map(({ created_at: _c, ...plan }) => plan), has_more: false, total_count: plans.length });
  });

  router.get('/:planId', async (req, res) => {
    const version = req.query.version === undefined ? undefined : Number(req.query.version);
    const plan = await findPlanVersion(ctx.db, req.params.planId, Number.isInteger(version) ? version : undefined);
    if (!plan) throw notFound(`plan ${req.params.planId}`);
    res.json(plan);
  });
  return router;
}
