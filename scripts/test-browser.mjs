#!/usr/bin/env node
// `npm run test:browser [-- --quick]`: the dashboard's journeys in headless Chromium (test/browser/).
// `--quick` (CI) runs the tenant journey at one width instead of two. `--screenshots` runs
// test/browser/screenshots.ts instead, which writes docs/screenshots/ (`npm run screenshots`).
// Other arguments go to jest.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const env = { ...process.env };
if (args.includes('--quick')) env.TALLY_BROWSER_QUICK = '1';
if (args.includes('--screenshots')) env.TALLY_SCREENSHOTS_DIR = path.join(root, 'docs', 'screenshots');
const rest = args.filter((a) => a !== '--quick' && a !== '--screenshots');
const jest = path.join(root, 'node_modules', 'jest', 'bin', 'jest.js');
const result = spawnSync(process.execPath, [jest, '--config', 'test/browser/jest.config.js', '--runInBand', ...rest], { cwd: root, stdio: 'inherit', env });
process.exit(result.status ?? 1);
