import { z } from 'zod';

/**
 * Every environment variable tally reads, validated once at start-up. A wrong value stops the
 * process with a message naming the variable, instead of failing later in a request.
 */
const port = z.coerce.number().int().min(1).max(65535);

const configSchema = z.object({
  PORT: port.default(3000),
  HOST: z.string().min(1).default('0.0.0.0'),
  TEMPORAL_ADDRESS: z.string().min(1).optional(),
  TEMPORAL_PORT: port.default(7233),
  TEMPORAL_UI_PORT: port.default(8233),
  TEMPORAL_NAMESPACE: z.string().min(1).default('default'),
  TEMPORAL_TASK_QUEUE: z.string().min(1).default('billing'),
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')
    .optional(),
  POSTGRES_PORT: port.default(5433),
  DATA_DIR: z.string().min(1).default('.data'),
  BILLING_ADMIN_KEY: z.string().min(16, 'must be at least 16 characters').optional(),
  SMTP_URL: z.string().regex(/^smtps?:\/\//, 'must be an smtp:// or smtps:// URL').optional(),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  // Per API key requests per second; the bucket holds twice that (burst). 0 turns the limit off.
  RATE_LIMIT_INGEST_PER_SECOND: z.coerce.number().min(0).max(1_000_000).default(200),
  RATE_LIMIT_READS_PER_SECOND: z.coerce.number().min(0).max(1_000_000).default(100),
  // At most one doorbell signal per tenant per this many ms (src/api/doorbell.ts); 0 rings for every batch.
  INGEST_DOORBELL_WINDOW_MS: z.coerce.number().int().min(0).max(1000).default(20),
  // A tenant with more acknowledged events than this waiting to be counted gets 503 on ingest; 0 turns it off.
  INGEST_MAX_PENDING_EVENTS: z.coerce.number().int().min(0).max(1_000_000_000).default(1_000_000),
  // The Temporal SDK runtime's Prometheus exporter (worker metrics); 0 turns it off.
  TEMPORAL_METRICS_PORT: z.coerce.number().int().min(0).max(65535).default(9464),
  /** Workflows kept in the worker's memory; beyond it the least recent replay from history when touched. */
  WORKER_MAX_CACHED_WORKFLOWS: z.coerce.number().int().min(0).max(100_000).default(1_000),
});

/** The validated configuration of one tally process. */
export type Config = z.infer<typeof configSchema>;

/** The names of every variable the config module reads (docker-compose.yml is checked against it). */
export const CONFIG_VARIABLES: readonly string[] = Object.keys(configSchema.shape);

/** Variables whose values may hold credentials: named in errors, never shown. */
const SECRET_VARIABLES = new Set(['BILLING_ADMIN_KEY', 'SMTP_URL', 'DATABASE_URL']);

/** Raised with one line per bad variable, so the operator sees everything wrong at once. */
export class ConfigError extends Error {}

/** Reads and validates the configuration; empty strings count as unset. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const raw: Record<string, string> = {};
  for (const name of CONFIG_VARIABLES) {
    const value = env[name];
    if (value !== undefined && value !== '') raw[name] = value;
  }
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => {
      const name = String(issue.path[0]);
      // Never echo a secret (an admin key, a password inside a URL) into logs.
      const shown = SECRET_VARIABLES.has(name) ? '(value hidden)' : JSON.stringify(raw[name] ?? '');
      return `  ${name}=${shown}: ${issue.message}`;
    });
    throw new ConfigError(`Invalid configuration:\n${lines.join('\n')}`);
  }
  return parsed.data;
}

/** Loads the configuration or exits with the validation message (for process entry points). */
export function loadConfigOrExit(env: NodeJS.ProcessEnv = process.env): Config {
  try {
    return loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(78); // EX_CONFIG
    }
    throw err;
  }
}
