import { randomUUID } from 'node:crypto';
import type { Express, Request, RequestHandler, Response } from 'express';
import type { Logger } from '../logger';

declare module 'http' {
  interface IncomingMessage {
    /** The request id: the client's `X-Request-Id` when short and log-safe, a new UUID otherwise. */
    id: string;
    /** A logger whose lines carry the request id and, once authenticated, who is calling. */
    log: Logger;
  }
}

/** Client-supplied request ids are echoed only when short and log-safe; otherwise a new one is made. */
const REQUEST_ID_PATTERN = /^[A-Za-z0-9._:@/+=-]{1,128}$/;

/** Request headers that carry credentials: logged as `[redacted]`, never as their value. */
const SECRET_HEADERS = ['x-api-key', 'authorization', 'proxy-authorization', 'cookie'];

/** Probes and scrapes, which would drown the log. */
const UNLOGGED_PATHS = new Set(['/healthz', '/readyz', '/metrics']);

const LOGGER = Symbol('tally.requestLogger');
const CALLER = Symbol('tally.requestCaller');
type LoggedRequest = Request & { [LOGGER]?: Logger; [CALLER]?: Record<string, unknown> };

/**
 * The API's request log, and `req.id` / `req.log` for the handlers.
 *
 * One line per answered request at info: method, URL, status, response time and request id.
 * Headers are most of a line's bytes and rarely what an operator reads, so they are logged only
 * at debug or below, with credentials redacted (the admin key included).
 *
 * Every request pays for this, ingest's included, so it makes nothing a request may not use:
 * `req.log` is made the first time a handler logs through it (most never do), and the line is
 * written straight from the request, without a logger of its own.
 */
export function requestLog(app: Express, logger: Logger): RequestHandler {
  // On the app's request prototype, once, rather than on every request.
  Object.defineProperty(app.request, 'log', {
    configurable: true,
    get(this: LoggedRequest): Logger {
      return (this[LOGGER] ??= logger.child({ request_id: this.id, ...this[CALLER] }));
    },
    set(this: LoggedRequest, value: Logger) {
      this[LOGGER] = value;
    },
  });
  return (req, res, next) => {
    const given = req.headers['x-request-id'];
    const id = typeof given === 'string' && REQUEST_ID_PATTERN.test(given) ? given : randomUUID();
    res.setHeader('x-request-id', id);
    req.id = id;
    if (logger.isLevelEnabled('info') && !UNLOGGED_PATHS.has(req.path)) {
      const started = Date.now();
      const log = () => {
        res.off('finish', log).off('close', log);
        logAnswer(logger, req, res, Date.now() - started);
      };
      // Finished: answered. Closed first: the client went away before the answer.
      res.once('finish', log).once('close', log);
    }
    next();
  };
}

/** Says who is calling in the lines `req.log` writes from now on. */
export function identifyCaller(req: Request, caller: Record<string, unknown>): void {
  const logged = req as LoggedRequest;
  logged[CALLER] = caller;
  if (logged[LOGGER]) logged[LOGGER] = logged[LOGGER].child(caller);
}

function logAnswer(logger: Logger, req: Request, res: Response, responseTime: number): void {
  const debug = logger.isLevelEnabled('debug');
  const line = {
    request_id: req.id,
    req: { method: req.method, url: req.originalUrl, remoteAddress: req.socket?.remoteAddress, ...(debug ? { headers: redacted(req.headers) } : {}) },
    res: { statusCode: res.statusCode, ...(debug ? { headers: res.getHeaders() } : {}) },
    responseTime,
  };
  if (!res.writableFinished) logger.info(line, 'request aborted');
  else if (res.statusCode >= 500) logger.info(line, 'request errored');
  else logger.info(line, 'request completed');
}

/** The headers with each credential replaced; the live object is copied, never changed. */
function redacted(headers: Request['headers']): Record<string, unknown> {
  const copy: Record<string, unknown> = { ...headers };
  for (const name of SECRET_HEADERS) if (copy[name] !== undefined) copy[name] = '[redacted]';
  return copy;
}
