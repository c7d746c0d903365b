import { Router } from 'express';
import { z } from 'zod';
import type { ApiContext } from '../context';
import { requireAdmin } from '../auth';
import { createPlanBody } from '../schemas';
import { findPlanVersion, latestPlanVersions, savePlanVersion } from '../../db/plans';
import { paginate, paginationQuery, parseListQuery } from '../pagination';
import type { PlanVersion } from '../../domain/plan';
import { notFound } from '../errors';
import { operation } from '../operation';
import { pageOf, plan as planResponse } from '../responses';

/** Plans (admin): posting an existing id appends a version; running periods keep theirs. */
export function plansRouter(ctx: ApiContext): Router {
  const router = Router();
  router.use(requireAdmin);

  router.post(
    '/',
    operation({
      operationId: 'createPlan',
      tag: 'Plans',
      summary: 'Create a plan, or a new version of an existing plan id',
      body: createPlanBody,
      responses: { 201: { description: 'the stored plan version', schema: planResponse } },
    }),
    async (req, res) => {
      const body = createPlanBody.parse(req.body);
      const plan = await savePlanVersion(ctx.db, body);
      res.status(201).json(plan);
    },
  );

  router.get(
    '/',
    operation({
      operationId: 'listPlans',
      tag: 'Plans',
      summary: 'List plans (the latest version of each)',
      query: paginationQuery,
      responses: { 200: { description: 'a page of plans', schema: pageOf(planResponse) } },
    }),
    async (req, res) => {
      const page = await paginate<{ definition: PlanVersion }>(latestPlanVersions(ctx.db), parseListQuery(paginationQuery, req), {
        sort: ['p.created_at', 'p.id'],
        idColumn: 'p.id',
      });
      res.json({ ...page, data: page.data.map((row) => row.definition) });
    },
  );

  router.get(
    '/:planId',
    operation({
      operationId: 'getPlan',
      tag: 'Plans',
      summary: 'Get a plan: its latest version, or the version asked for',
      params: { planId: z.string().describe('the plan id') },
      query: z.object({ version: z.string().optional().describe('a version number (an unusable one reads the latest)') }),
      responses: { 200: { description: 'the plan version', schema: planResponse } },
      // `version` is read leniently, never refused.
      problems: { 422: false },
    }),
    async (req, res) => {
      const version = req.query.version === undefined ? undefined : Number(req.query.version);
      const plan = await findPlanVersion(ctx.db, req.params.planId, Number.isInteger(version) ? version : undefined);
      if (!plan) throw notFound(`plan ${req.params.planId}`);
      res.json(plan);
    },
  );
  return router;
}
