import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import express, { Router, type RequestHandler } from 'express';
import { z } from 'zod';
import type { Db } from '../../db/knex';
import { authenticate, principalOf } from '../auth';
import { ApiError } from '../errors';
import { operation } from '../operation';
import { pagePolicy } from '../page-policy';
import { clearSessionCookie, DashboardSessions, setSessionCookie, type VerifiedSession } from './session';
import type { TenantKeyCache } from '../tenant-key-cache';

/**
 * `/dashboard`: the web app (web/, bundled by scripts/build-web.mjs into .build/web/) and its
 * session endpoints. Every asset comes from this origin; the page's policy allows nothing else.
 */
export const DASHBOARD_BUILD_DIR = path.resolve(__dirname, '..', '..', '..', '.build', 'web');

const signInBody = z.strictObject({ api_key: z.string().min(1).max(512) });

/** What the dashboard router needs beyond the database. */
export interface DashboardOptions {
  db: Db;
  adminKey: string;
  sessions: DashboardSessions;
  namespace: string;
  /** The Temporal Web UI, for links to a tenant's workflow; null when unknown. */
  temporalUiUrl: string | null;
  /** The API's cache of tenant keys, as `authenticate` uses it. */
  tenantKeys?: TenantKeyCache;
}

/** The session as the app sees it: who is signed in and the CSRF token to echo. */
function presentSession(session: VerifiedSession) {
  const p = session.principal;
  return {
    principal: p.kind === 'admin' ? { kind: 'admin' as const } : { kind: 'tenant' as const, tenant_id: p.tenantId },
    csrf_token: session.csrfToken,
    expires_at: session.expiresAt.toISOString(),
  };
}

/**
 * Sign-in is refused from another site: a cross-site page must not sign a browser in under the
 * attacker's key (login CSRF). Browsers send `Origin` on every cross-site POST.
 */
const sameOriginOnly: RequestHandler = (req, _res, next) => {
  const origin = req.get('origin');
  if (origin !== undefined && origin !== 'null') {
    let host: string | undefined;
    try {
      host = new URL(origin).host;
    } catch {
      host = undefined;
    }
    if (host !== req.get('host')) return next(new ApiError(403, 'forbidden', 'sign-in is accepted only from the dashboard itself'));
  } else if (origin === 'null') {
    return next(new ApiError(403, 'forbidden', 'sign-in is accepted only from the dashboard itself'));
  }
  next();
};

/** The session the cookie proved; 401 for a request that came with a key in a header instead. */
const sessionOnly: RequestHandler = (_req, res, next) => {
  if (!res.locals.session) return next(new ApiError(401, 'unauthorized', 'this route needs the dashboard session cookie (POST /dashboard/session)'));
  next();
};

const sessionView = z.object({
  principal: z.union([z.object({ kind: z.literal('admin') }), z.object({ kind: z.literal('tenant'), tenant_id: z.string() })]),
  csrf_token: z.string().describe('echo it in `X-CSRF-Token` on every state-changing request made with the session'),
  expires_at: z.string(),
});

const configView = z.object({
  temporal_ui_url: z.string().nullable().describe('the Temporal Web UI (TEMPORAL_UI_URL); null for a tenant session or when unknown'),
  namespace: z.string(),
});

/** The session routes need the cookie, not a key: documented as public, with their own 401. */
const SESSION_PROBLEMS = { 401: 'no dashboard session, or it expired, was forged, or its key was revoked (`unauthorized`)' };

export function dashboardRouter(options: DashboardOptions): Router {
  const router = Router();
  router.use(pagePolicy);
  const requireSession = authenticate(options.db, options.adminKey, options.sessions, options.tenantKeys);

  router.post(
    '/session',
    operation({
      operationId: 'signInToDashboard',
      tag: 'Dashboard',
      summary: 'Exchange an API key for the dashboard session cookie (httpOnly, SameSite=Strict, signed)',
      public: true,
      body: signInBody,
      responses: { 201: { description: 'the session; the `tally_session` cookie is set', schema: sessionView } },
      problems: { 401: 'unknown or revoked key (`unauthorized`)', 403: 'sent from another site: `Origin` is not this server (`forbidden`)' },
    }),
    sameOriginOnly,
    async (req, res) => {
      const body = signInBody.parse(req.body ?? {});
      const issued = await options.sessions.issue(body.api_key.trim());
      if (!issued) throw new ApiError(401, 'unauthorized', 'unknown or revoked API key');
      setSessionCookie(req, res, issued.cookie);
      res.setHeader('Cache-Control', 'no-store');
      res.status(201).json(presentSession(issued.session));
    },
  );

  router.get(
    '/session',
    operation({
      operationId: 'getDashboardSession',
      tag: 'Dashboard',
      summary: 'The current dashboard session and its CSRF token (after a reload)',
      public: true,
      responses: { 200: { description: 'the session', schema: sessionView } },
      problems: SESSION_PROBLEMS,
    }),
    requireSession,
    sessionOnly,
    (_req, res) => {
      res.setHeader('Cache-Control', 'no-store');
      res.json(presentSession(res.locals.session as VerifiedSession));
    },
  );

  // Sign-out changes state, so it needs the CSRF token like any other write.
  router.delete(
    '/session',
    operation({
      operationId: 'signOutOfDashboard',
      tag: 'Dashboard',
      summary: 'Sign out: clears the session cookie (needs `X-CSRF-Token`)',
      public: true,
      responses: { 204: { description: 'signed out; the cookie is cleared' } },
      problems: { ...SESSION_PROBLEMS, 403: 'missing or wrong `X-CSRF-Token` (`forbidden`)' },
    }),
    requireSession,
    sessionOnly,
    (req, res) => {
      clearSessionCookie(req, res);
      res.status(204).end();
    },
  );

  router.get(
    '/config',
    operation({
      operationId: 'getDashboardConfig',
      tag: 'Dashboard',
      summary: 'What the API process knows that the dashboard links to (the Temporal Web UI)',
      public: true,
      responses: { 200: { description: 'the configuration', schema: configView } },
      problems: SESSION_PROBLEMS,
    }),
    requireSession,
    (_req, res) => {
      res.json({
        temporal_ui_url: principalOf(res).kind === 'admin' ? options.temporalUiUrl : null,
        namespace: options.namespace,
      });
    },
  );

  router.use('/assets', express.static(path.join(DASHBOARD_BUILD_DIR, 'assets'), { index: false, redirect: false, maxAge: 0 }));

  // One page: the app routes in the URL's fragment, so every view is this document.
  router.get(
    '/',
    operation({
      operationId: 'getDashboard',
      tag: 'Dashboard',
      summary: 'The web app for tenants and for finance and ops (served by this server: works offline)',
      public: true,
      responses: { 200: { description: 'HTML page', contentType: 'text/html', schema: z.string() } },
      problems: { 503: 'the bundle is not built (`unavailable`): `node scripts/build-web.mjs`' },
    }),
    (_req, res) => {
      const index = path.join(DASHBOARD_BUILD_DIR, 'index.html');
      if (!fs.existsSync(index)) throw new ApiError(503, 'unavailable', 'the dashboard is not built: run `node scripts/build-web.mjs` (npm start and npm test do)');
      res.setHeader('Cache-Control', 'no-cache');
      // `.build` is a dot-directory, which send() would otherwise hide.
      res.sendFile(index, { dotfiles: 'allow' });
    },
  );
  return router;
}

/** How the dashboard is configured: DASHBOARD_SESSION_SECRET and the Temporal UI's address. */
export interface DashboardSettings {
  /** Signs session cookies; when absent, one is derived from the admin key (stable across restarts and replicas). */
  sessionSecret?: string;
  temporalUiUrl?: string | null;
}

/** The dashboard of one app: its sessions (which the API's auth accepts) and its router. */
export function createDashboard(deps: { db: Db; adminKey: string; namespace: string; tenantKeys?: TenantKeyCache } & DashboardSettings): { sessions: DashboardSessions; router: Router } {
  const secret = deps.sessionSecret ?? createHmac('sha256', deps.adminKey).update('tally dashboard session secret').digest('base64url');
  const sessions = new DashboardSessions(deps.db, deps.adminKey, secret, deps.tenantKeys);
  return { sessions, router: dashboardRouter({ db: deps.db, adminKey: deps.adminKey, sessions, namespace: deps.namespace, temporalUiUrl: deps.temporalUiUrl ?? null, tenantKeys: deps.tenantKeys }) };
}
