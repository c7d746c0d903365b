import fs from 'node:fs';
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
  // Temporal over TLS (src/temporal.ts builds the connections): on when a certificate, a CA, a
  // server name or an API key is set; `false` forces plaintext and refuses those settings.
  TEMPORAL_TLS: z.enum(['true', 'false'], 'must be true or false').transform((v) => v === 'true').optional(),
  // mTLS client certificate and key, and the CA of the server's certificate: a file path, or the PEM text itself.
  TEMPORAL_TLS_CERT: z.string().min(1).optional(),
  TEMPORAL_TLS_KEY: z.string().min(1).optional(),
  TEMPORAL_TLS_CA: z.string().min(1).optional(),
  // The name the server's certificate is checked against, when it is not the host of TEMPORAL_ADDRESS.
  TEMPORAL_TLS_SERVER_NAME: z.string().min(1).optional(),
  // Temporal Cloud API key (sent as a bearer token; needs TLS).
  TEMPORAL_API_KEY: z.string().min(1).optional(),
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')
    .optional(),
  POSTGRES_PORT: port.default(5433),
  DATA_DIR: z.string().min(1).default('.data'),
  BILLING_ADMIN_KEY: z.string().min(16, 'must be at least 16 characters').optional(),
  // Signs dashboard session cookies (HMAC); npm start generates one under DATA_DIR when unset.
  DASHBOARD_SESSION_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
  // The Temporal Web UI the dashboard links to (npm start knows its embedded one).
  TEMPORAL_UI_URL: z.string().regex(/^https?:\/\//, 'must be an http:// or https:// URL').optional(),
  SMTP_URL: z.string().regex(/^smtps?:\/\//, 'must be an smtp:// or smtps:// URL').optional(),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  // Per API key requests per second; the bucket holds twice that (burst). 0 turns the limit off.
  RATE_LIMIT_INGEST_PER_SECOND: z.coerce.number().min(0).max(1_000_000).default(200),
  RATE_LIMIT_READS_PER_SECOND: z.coerce.number().min(0).max(1_000_000).default(100),
  // How often the worker's counter counts waiting events in bulk or rings their workflows (src/workers/bulk-counter.ts).
  COUNTING_INTERVAL_MS: z.coerce.number().int().min(10).max(5_000).default(100),
  // A tenant with more acknowledged events than this waiting to be counted gets 503 on ingest; 0 turns it off.
  INGEST_MAX_PENDING_EVENTS: z.coerce.number().int().min(0).max(1_000_000_000).default(1_000_000),
  // The Temporal SDK runtime's Prometheus exporter (worker metrics); 0 turns it off.
  TEMPORAL_METRICS_PORT: z.coerce.number().int().min(0).max(65535).default(9464),
  /** Workflows kept in the worker's memory; beyond it the least recent replay from history when touched. */
  WORKER_MAX_CACHED_WORKFLOWS: z.coerce.number().int().min(0).max(100_000).default(1_000),
  /** Days raw usage events are kept after their period (plans may set their own `retention_days`). */
  RETENTION_DAYS: z.coerce.number().int().min(0).max(36_500).default(90),
  // Webhook targets (src/notifications/webhook-targets.ts): loopback, private and similar addresses
  // only with this opt-in (tests, local development); cloud metadata addresses never.
  WEBHOOK_ALLOW_PRIVATE_TARGETS: z.enum(['true', 'false'], 'must be true or false').default('false').transform((v) => v === 'true'),
  // Hosts (comma-separated) that webhooks may reach over plain http; every other target must be https.
  WEBHOOK_HTTP_ALLOWED_HOSTS: z
    .string()
    .regex(/^[A-Za-z0-9.:_[\]-]+(,[A-Za-z0-9.:_[\]-]+)*$/, 'must be host names separated by commas')
    .transform((v) => v.split(',').map((h) => h.toLowerCase().replace(/^\[(.*)\]$/, '$1')))
    .optional(),
});

/** The validated configuration of one tally process. */
export type Config = z.infer<typeof configSchema>;

/** The names of every variable the config module reads (docker-compose.yml is checked against it). */
export const CONFIG_VARIABLES: readonly string[] = Object.keys(configSchema.shape);

/** Variables whose values may hold credentials: named in errors, never shown. */
const SECRET_VARIABLES = new Set(['TEMPORAL_API_KEY', 'TEMPORAL_TLS_KEY', 'BILLING_ADMIN_KEY', 'SMTP_URL', 'DATABASE_URL', 'DASHBOARD_SESSION_SECRET']);

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
  const temporalProblems = temporalTlsProblems(parsed.data);
  if (temporalProblems.length > 0) throw new ConfigError(`Invalid configuration:\n${temporalProblems.map((line) => `  ${line}`).join('\n')}`);
  return parsed.data;
}

/** The TLS variables that hold PEM (a path, or the text itself). */
export type PemVariable = 'TEMPORAL_TLS_CERT' | 'TEMPORAL_TLS_KEY' | 'TEMPORAL_TLS_CA';

/**
 * The PEM a TLS variable designates: the value itself when it is PEM text (`\n` escapes, as
 * environment files often carry them, become newlines), otherwise the contents of the file it
 * names. Throws a ConfigError naming the variable when the file cannot be read or is not PEM.
 */
export function readPemVariable(name: PemVariable, value: string): Buffer {
  const isText = value.trimStart().startsWith('-----BEGIN ');
  let pem: string;
  if (isText) {
    pem = value.replace(/\\n/g, '\n');
  } else {
    try {
      pem = fs.readFileSync(value, 'utf8');
    } catch (err) {
      throw new ConfigError(`${name}=${JSON.stringify(value)}: cannot read the file (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    }
  }
  const shown = isText ? '(PEM text)' : JSON.stringify(value);
  const kind = name === 'TEMPORAL_TLS_KEY' ? 'PRIVATE KEY' : 'CERTIFICATE';
  if (!new RegExp(`-----BEGIN [A-Z ]*${kind}-----`).test(pem)) throw new ConfigError(`${name}=${shown}: not a PEM ${kind.toLowerCase()}`);
  return Buffer.from(pem, 'utf8');
}

/** What is wrong with the Temporal TLS and API key settings taken together, one line each. */
function temporalTlsProblems(config: Config): string[] {
  const problems: string[] = [];
  const set = (['TEMPORAL_TLS_CERT', 'TEMPORAL_TLS_KEY', 'TEMPORAL_TLS_CA', 'TEMPORAL_TLS_SERVER_NAME', 'TEMPORAL_API_KEY'] as const).filter((n) => config[n] !== undefined);
  if ((config.TEMPORAL_TLS_CERT === undefined) !== (config.TEMPORAL_TLS_KEY === undefined)) {
    problems.push('TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY go together: set both for mTLS, or neither');
  }
  if (config.TEMPORAL_TLS === false && set.length > 0) {
    problems.push(`TEMPORAL_TLS=false (plaintext) cannot be combined with ${set.join(', ')}${config.TEMPORAL_API_KEY ? ': an API key must never travel unencrypted' : ''}`);
  }
  if (!config.TEMPORAL_ADDRESS && (set.length > 0 || config.TEMPORAL_TLS)) {
    problems.push(`${set.length > 0 ? set.join(', ') : 'TEMPORAL_TLS'} need TEMPORAL_ADDRESS: the embedded dev server speaks plaintext only`);
  }
  for (const name of ['TEMPORAL_TLS_CERT', 'TEMPORAL_TLS_KEY', 'TEMPORAL_TLS_CA'] as const) {
    const value = config[name];
    if (value === undefined) continue;
    try {
      readPemVariable(name, value);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      problems.push(err.message);
    }
  }
  return problems;
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
