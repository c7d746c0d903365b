#!/usr/bin/env node
// Runs before `npm start` and `npm test` (pre-scripts), so the README's two commands work on a
// fresh clone: installs the locked dependencies (`npm ci`) when node_modules is missing or older
// than package-lock.json, then resolves the Temporal binaries (scripts/temporal-binaries.mjs) and
// bundles the dashboard (scripts/build-web.mjs).
// Plain Node, no dependencies: it must run before anything is installed.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const lock = path.join(root, 'package-lock.json');
const installed = path.join(root, 'node_modules', '.package-lock.json');

function run(command, args) {
  const result = spawnSync(command, args, { cwd: root, stdio: 'inherit' });
  if (result.status !== 0) process.exit(result.status ?? 1);
}

const stale = !fs.existsSync(installed) || fs.statSync(installed).mtimeMs < fs.statSync(lock).mtimeMs;
if (stale) {
  // `npm ci` installs exactly the lock file and never rewrites it, so the clone stays clean.
  console.log('bootstrap: installing the locked dependencies (npm ci)');
  run('npm', ['ci', '--no-audit', '--no-fund']);
}
run(process.execPath, [path.join(root, 'scripts', 'temporal-binaries.mjs')]);
// The dashboard's bundle (.build/web/), rebuilt only when web/ changed.
run(process.execPath, [path.join(root, 'scripts', 'build-web.mjs')]);
