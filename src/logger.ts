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
