import { randomUUID } from 'node:crypto';
import express, { type Express } from 'express';
import { pinoHttp } from 'pino-http';
import type { Client } from '@temporalio/client';
import type { Db } from '../db/knex';
import type { Logger } from '../logger';
import { BillingGateway } from './billing-gateway';
import { TenantDirectory } from './tenant-directory';
import { authenticate } from './auth';
import { errorMiddleware, notFoundMiddleware } from './errors';
import type { ApiContext } from './context';
import { operationsRouter } from './routes/operations';
import { plansRouter } from './routes/plans';
import { tenantsRouter } from './routes/tenants';
import { usageRouter } from './routes/usage';
import { financeRouter } from './routes/finance';

/** What the HTTP API is built from; `npm start`, `npm run api` and tests all pass real ones. */
export interface AppDeps {
  db: Db;
  temporal: Client;
  taskQueue: string;
  namespace: string;
  adminKey: string;
  logger: Logger;
  /** False on servers without tally's search attributes (the time-skipping test server). */
  searchAttributes?: boolean;
}

/** Builds the Express app of API v1: thin routes over the gateway and the repositories. */
export function createApp(deps: AppDeps): Express {
  const ctx: ApiContext = {
    db: deps.db,
    billing: new BillingGateway(deps.temporal, deps.taskQueue, { searchAttributes: deps.searchAttributes !== false }),
    tenants: new TenantDirectory(deps.db),
    adminKey: deps.adminKey,
    config: { TEMPORAL_NAMESPACE: deps.namespace },
    temporalReady: async () => {
      try {
        await deps.temporal.connection.workflowService.getSystemInfo({});
        return true;
      } catch {
        return false;
      }
    },
  };

  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', false);
  app.use(
    pinoHttp({
      logger: deps.logger,
      genReqId: (req, res) => {
        const id = String(req.headers['x-request-id'] ?? '') || randomUUID();
        res.setHeader('x-request-id', id);
        return id;
      },
      customProps: (req) => ({ request_id: req.id }),
      autoLogging: { ignore: (req) => req.url === '/healthz' || req.url === '/readyz' },
    }),
  );
  app.use(express.json({ limit: '1mb', strict: true, type: ['application/json', 'application/*+json'] }));

  app.use(operationsRouter(ctx));
  const v1 = express.Router();
  v1.use(authenticate(deps.db, deps.adminKey));
  v1.use('/plans', plansRouter(ctx));
  v1.use('/tenants', tenantsRouter(ctx));
  v1.use(usageRouter(ctx));
  v1.use(financeRouter(ctx));
  app.use('/v1', v1);

  app.use(notFoundMiddleware());
  app.use(errorMiddleware());
  return app;
}
