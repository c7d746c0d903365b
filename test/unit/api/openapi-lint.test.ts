/**
 * Redocly's `recommended` ruleset on the app's OpenAPI document: no errors, no warnings. Runs the
 * pinned devDependency (@redocly/cli) offline: telemetry is off by environment and by config, and
 * the CLI process runs with sockets and DNS disabled, so any attempt to reach the network fails
 * the test instead of waiting on it.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { buildOpenApiDocument } from '../../../src/api/openapi';
import { offlineApp } from './offline-app';

const run = promisify(execFile);
const CLI = path.join(path.dirname(require.resolve('@redocly/cli/package.json')), 'bin/cli.js');

/** Preloaded into the CLI: reports and refuses every outgoing connection and name lookup. */
const OFFLINE_GUARD = `
const dns = require('node:dns');
const net = require('node:net');
const refuse = (what) => function () {
  process.stderr.write('NETWORK ATTEMPT: ' + what + '\\n');
  throw new Error('offline: ' + what);
};
net.Socket.prototype.connect = refuse('connect');
dns.lookup = refuse('dns.lookup');
dns.promises.lookup = refuse('dns.promises.lookup');
`;

interface LintReport {
  totals: { errors: number; warnings: number; ignored: number };
  problems: Array<{ ruleId: string; severity: string; message: string; location: Array<{ pointer?: string }> }>;
}

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-openapi-lint-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

test('redocly lint (recommended): 0 errors, 0 warnings', async () => {
  const { app, close } = offlineApp();
  try {
    fs.writeFileSync(path.join(dir, 'openapi.json'), JSON.stringify(buildOpenApiDocument(app), null, 2));
  } finally {
    await close();
  }
  fs.writeFileSync(path.join(dir, 'redocly.yaml'), 'extends:\n  - recommended\ntelemetry: off\n');
  fs.writeFileSync(path.join(dir, 'offline.cjs'), OFFLINE_GUARD);

  // Exit code 1 means errors were found; the JSON report on stdout says which either way.
  const result = await run(process.execPath, ['--require', './offline.cjs', CLI, 'lint', '--format=json', '--config=redocly.yaml', 'openapi.json'], {
    cwd: dir,
    env: { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true', NO_COLOR: '1' },
    maxBuffer: 64 * 1024 * 1024,
  }).catch((err: { stdout?: string; stderr?: string }) => ({ stdout: err.stdout ?? '', stderr: err.stderr ?? '' }));

  expect(result.stderr).not.toContain('NETWORK ATTEMPT');
  let report: LintReport;
  try {
    report = JSON.parse(result.stdout) as LintReport;
  } catch {
    throw new Error(`redocly printed no JSON report:\n${result.stdout}\n${result.stderr}`);
  }
  const problems = report.problems.map((p) => `${p.severity} ${p.ruleId} at ${p.location.map((l) => l.pointer).join(', ')}: ${p.message}`);
  expect({ totals: report.totals, problems }).toEqual({ totals: { errors: 0, warnings: 0, ignored: 0 }, problems: [] });
});
