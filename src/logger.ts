import pino from 'pino';

/**
 * Structured JSON logs. Child loggers carry `tenant_id`, `workflow_id` and `request_id`, so one
 * grep follows a tenant from the HTTP request to its workflow and activities.
 */
export const logger = pino({
  level: process.env.LOG_LEVEL ?? 'info',
  base: { service: process.env.TALLY_SERVICE ?? 'tally' },
  timestamp: pino.stdTimeFunctions.isoTime,
});

/** The logger type, for dependency injection into activities and routes. */
export type Logger = pino.Logger;

/** Request headers that carry credentials: logged as `[redacted]`, never as their value. */
const SECRET_HEADERS = ['x-api-key', 'authorization', 'proxy-authorization', 'cookie'];

/** A request and a response as pino-http's standard serializers hand them on. */
interface LoggedRequest {
  id?: unknown;
  method?: string;
  url?: string;
  remoteAddress?: string;
  headers?: Record<string, unknown>;
}
interface LoggedResponse {
  statusCode?: number;
  headers?: Record<string, unknown>;
}

/**
 * The `req` and `res` serializers of the API's request log (pino-http). At info a request is one
 * short line: method, url, status and time. Headers are most of a line's bytes and rarely what an
 * operator reads, so they are logged only when `log` is at debug or below, and then with the
 * credentials redacted (the admin key included): the headers object is the live one, so it is copied.
 */
export function requestLogSerializers(log: Logger): { req: (req: LoggedRequest) => LoggedRequest; res: (res: LoggedResponse) => LoggedResponse } {
  if (!log.isLevelEnabled('debug')) {
    return {
      req: (req) => ({ method: req.method, url: req.url, remoteAddress: req.remoteAddress }),
      res: (res) => ({ statusCode: res.statusCode }),
    };
  }
  return {
    req: (req) => {
      if (!req.headers) return req;
      const headers = { ...req.headers };
      for (const name of SECRET_HEADERS) if (headers[name] !== undefined) headers[name] = '[redacted]';
      return { ...req, headers };
    },
    res: (res) => res,
  };
}
