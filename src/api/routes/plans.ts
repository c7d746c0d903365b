import { Router } from 'express';
import type { ApiContext } from '../context';
import { requireAdmin } from '../auth';
import { createPlanBody } from '../schemas';
import { findPlanVersion, latestPlanVersions, savePlanVersion } from '../../db/plans';
import { paginate, paginationQuery, parseListQuery } from '../pagination';
import type { PlanVersion } from '../../domain/plan';
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

  router.get('/', async (req, res) => {
    const page = await paginate<{ definition: PlanVersion }>(latestPlanVersions(ctx.db), parseListQuery(paginationQuery, req), {
      sort: ['p.created_at', 'p.id'],
      idColumn: 'p.id',
    });
    res.json({ ...page, data: page.data.map((row) => row.definition) });
  });

  router.get('/:planId', async (req, res) => {
    const version = req.query.version === undefined ? undefined : Number(req.query.version);
    const plan = await findPlanVersion(ctx.db, req.params.planId, Number.isInteger(version) ? version : undefined);
    if (!plan) throw notFound(`plan ${req.params.planId}`);
    res.json(plan);
  });
  return router;
}
