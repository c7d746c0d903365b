import { Router } from 'express';
import { z } from 'zod';
import type { ApiContext } from '../context';
import { requireAdmin } from '../auth';
import { createPlanBody, noQuery, resourceId } from '../schemas';
import { findPlanVersion, listLatestPlanVersions, savePlanVersion } from '../../db/plans';
import { paginationQuery, parseListQuery } from '../pagination';
import { notFound } from '../errors';
import { operation } from '../operation';
import { pageOf, plan as planResponse } from '../responses';

/** `GET /v1/plans`: pagination only. */
export const listPlansQuery = paginationQuery.strict();

/** `plan_versions.version` is an int4: a larger number cannot name a version. */
const MAX_VERSION = 2_147_483_647;
const VERSION_MESSAGE = `must be a version number: an integer from 1 to ${MAX_VERSION}`;

/**
 * `GET /v1/plans/{id}`: an optional `version`. Only plain digits become a number, so `abc`, `1.5`,
 * `1e1` or a repeated `version` are refused by name instead of reading the latest version.
 */
export const getPlanQuery = z.strictObject({
  version: z
    .preprocess(
      (value) => (typeof value === 'string' && /^\d{1,10}$/.test(value) ? Number(value) : value),
      z.number({ error: VERSION_MESSAGE }).int(VERSION_MESSAGE).min(1, VERSION_MESSAGE).max(MAX_VERSION, VERSION_MESSAGE),
    )
    .optional()
    .describe('a version number (default: the latest version)'),
});

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
      query: noQuery,
      body: createPlanBody,
      responses: { 201: { description: 'the stored plan version', schema: planResponse } },
    }),
    async (req, res) => {
      parseListQuery(noQuery, req);
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
      query: listPlansQuery,
      responses: { 200: { description: 'a page of plans', schema: pageOf(planResponse) } },
    }),
    async (req, res) => {
      res.json(await listLatestPlanVersions(ctx.db, parseListQuery(listPlansQuery, req)));
    },
  );

  router.get(
    '/:planId',
    operation({
      operationId: 'getPlan',
      tag: 'Plans',
      summary: 'Get a plan: its latest version, or the version asked for',
      params: { planId: z.string().describe('the plan id') },
      query: getPlanQuery,
      responses: { 200: { description: 'the plan version', schema: planResponse } },
      problems: { 404: 'no such plan, or no such version of it (`not_found`)' },
    }),
    async (req, res) => {
      const { version } = parseListQuery(getPlanQuery, req);
      // An id no plan can have (e.g. with a NUL byte, which PostgreSQL refuses) names nothing.
      const plan = resourceId.safeParse(req.params.planId).success ? await findPlanVersion(ctx.db, req.params.planId, version) : undefined;
      if (!plan) throw notFound(version === undefined ? `plan ${req.params.planId}` : `plan ${req.params.planId} version ${version}`);
      res.json(plan);
    },
  );
  return router;
}
