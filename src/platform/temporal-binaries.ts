/**
 * Where the local Temporal binaries are: reads `.temporal/binaries.json`, written by
 * `scripts/temporal-binaries.mjs` (`npm run temporal:binaries`, also run before `npm start` and
 * `npm test`), and turns each entry into the executable config `@temporalio/testing` expects.
 *
 * `TEMPORAL_CLI_PATH` / `TEMPORAL_TEST_SERVER_PATH` are re-checked on every call and win over the
 * manifest, so changing them does not require re-running the script.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { EphemeralServerExecutable } from '@temporalio/testing';

export type TemporalBinarySource = 'env' | 'cache' | 'pip' | 'sdk-download';

export interface TemporalBinary {
  /** Absolute path of the executable; null when the SDK is to download it (`source: 'sdk-download'`). */
  path: string | null;
  source: TemporalBinarySource;
  version?: string;
}

export interface TemporalBinaries {
  /** The Temporal CLI (`temporal server start-dev`): the embedded dev server with its Web UI. */
  cli: TemporalBinary;
  /** The time-skipping test server. */
  testServer: TemporalBinary;
}

type BinaryKey = keyof TemporalBinaries;

export const TEMPORAL_BINARY_ENV: Readonly<Record<BinaryKey, string>> = {
  cli: 'TEMPORAL_CLI_PATH',
  testServer: 'TEMPORAL_TEST_SERVER_PATH',
};

const SOURCES: readonly TemporalBinarySource[] = ['env', 'cache', 'pip', 'sdk-download'];
const RERUN = 'run `npm run temporal:binaries`';

/** The repository root (this file lives in src/platform). */
export const PROJECT_ROOT = path.resolve(__dirname, '..', '..');

export function temporalBinariesManifestPath(projectRoot: string = PROJECT_ROOT): string {
  return path.join(projectRoot, '.temporal', 'binaries.json');
}

/** Null when `p` is an executable regular file, else why it is not. */
function executableProblem(p: string): string | null {
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch {
    return 'does not exist';
  }
  if (!st.isFile()) return 'is not a regular file';
  if (process.platform !== 'win32') {
    try {
      fs.accessSync(p, fs.constants.X_OK);
    } catch {
      return 'is not executable';
    }
  }
  return null;
}

function fromEnv(key: BinaryKey): TemporalBinary | null {
  const name = TEMPORAL_BINARY_ENV[key];
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return null;
  const p = path.resolve(raw);
  const problem = executableProblem(p);
  if (problem) throw new Error(`${name}=${raw}: ${p} ${problem}. Point ${name} at the executable, or unset it.`);
  return { path: p, source: 'env' };
}

function parseEntry(value: unknown, key: BinaryKey, file: string): TemporalBinary {
  const bad = (why: string): Error => new Error(`${file}: "${key}" ${why}; ${RERUN}.`);
  if (typeof value !== 'object' || value === null) throw bad('is missing');
  const { path: p, source, version } = value as Record<string, unknown>;
  if (typeof source !== 'string' || !SOURCES.includes(source as TemporalBinarySource)) throw bad(`has an unknown source ${JSON.stringify(source)}`);
  if (source === 'sdk-download') {
    if (p !== null) throw bad('has source "sdk-download" but a path');
  } else if (typeof p !== 'string' || p === '') {
    throw bad('has no path');
  } else {
    const problem = executableProblem(p);
    if (problem) throw bad(`points at ${p}, which ${problem}`);
  }
  const entry: TemporalBinary = { path: p as string | null, source: source as TemporalBinarySource };
  if (typeof version === 'string') entry.version = version;
  return entry;
}

/**
 * The resolved binaries. Environment overrides are validated first (an unusable override throws,
 * naming the variable); otherwise the manifest entry is used after checking its path still runs.
 * Throws telling the user to run `npm run temporal:binaries` when the manifest is missing or stale.
 */
export function readTemporalBinaries(projectRoot: string = PROJECT_ROOT): TemporalBinaries {
  const overrides = { cli: fromEnv('cli'), testServer: fromEnv('testServer') };
  if (overrides.cli && overrides.testServer) return { cli: overrides.cli, testServer: overrides.testServer };

  const file = temporalBinariesManifestPath(projectRoot);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error(`The Temporal binaries have not been resolved yet (${file} is missing): ${RERUN}, or set TEMPORAL_CLI_PATH and TEMPORAL_TEST_SERVER_PATH.`);
    }
    throw err;
  }
  let manifest: Record<string, unknown>;
  try {
    manifest = JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw new Error(`${file} is not valid JSON; ${RERUN}.`);
  }
  return {
    cli: overrides.cli ?? parseEntry(manifest.cli, 'cli', file),
    testServer: overrides.testServer ?? parseEntry(manifest.testServer, 'testServer', file),
  };
}

/** The `@temporalio/testing` executable config for one resolved binary. */
export function toExecutable(binary: TemporalBinary): EphemeralServerExecutable {
  return binary.path !== null ? { type: 'existing-path', path: binary.path } : { type: 'cached-download' };
}

/** For `TestWorkflowEnvironment.createLocal({ server: { executable } })` and the embedded dev server. */
export function cliExecutable(projectRoot?: string): EphemeralServerExecutable {
  return toExecutable(readTemporalBinaries(projectRoot).cli);
}

/** For `TestWorkflowEnvironment.createTimeSkipping({ server: { executable } })`. */
export function testServerExecutable(projectRoot?: string): EphemeralServerExecutable {
  return toExecutable(readTemporalBinaries(projectRoot).testServer);
}
