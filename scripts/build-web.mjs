#!/usr/bin/env node
// Bundles the dashboard (web/) with esbuild into .build/web/, which the API serves at /dashboard.
// Run by scripts/bootstrap.mjs before `npm start` and `npm test`; it rebuilds only when a source
// file, the lock file or this script changed since the last build (a digest of their contents).
// `--force` rebuilds anyway.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const webDir = path.join(root, 'web');
const outDir = path.join(root, '.build', 'web');
const stampFile = path.join(outDir, '.sources-digest');

function files(dir) {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? files(path.join(dir, e.name)) : [path.join(dir, e.name)]))
    .sort();
}

function sourcesDigest() {
  const hash = createHash('sha256');
  for (const file of [...files(webDir), path.join(root, 'package-lock.json'), fileURLToPath(import.meta.url)]) {
    hash.update(path.relative(root, file)).update('\0').update(fs.readFileSync(file)).update('\0');
  }
  return hash.digest('hex');
}

const digest = sourcesDigest();
const force = process.argv.includes('--force');
if (!force && fs.existsSync(stampFile) && fs.readFileSync(stampFile, 'utf8') === digest && fs.existsSync(path.join(outDir, 'index.html'))) {
  process.exit(0);
}

const esbuild = await import('esbuild');
const started = Date.now();
fs.rmSync(outDir, { recursive: true, force: true });
fs.mkdirSync(path.join(outDir, 'assets'), { recursive: true });
await esbuild.build({
  absWorkingDir: root,
  entryPoints: { app: path.join(webDir, 'src', 'main.tsx') },
  outdir: path.join(outDir, 'assets'),
  bundle: true,
  minify: true,
  sourcemap: true,
  format: 'iife',
  target: ['chrome110', 'firefox110', 'safari16'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  loader: { '.woff2': 'file', '.svg': 'file' },
  legalComments: 'linked',
  logLevel: 'warning',
});
fs.copyFileSync(path.join(webDir, 'index.html'), path.join(outDir, 'index.html'));
fs.writeFileSync(stampFile, digest);
console.log(`build-web: dashboard bundled into .build/web in ${Date.now() - started} ms`);
