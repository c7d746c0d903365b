/** src/generated/openapi.ts is what openapi-typescript makes of the repository's API document today. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';

test('the generated types are up to date with the API (npm run generate rewrites them)', () => {
  const packageRoot = path.resolve(__dirname, '../..');
  const result = spawnSync(process.execPath, [path.join(packageRoot, 'scripts/generate-types.mjs'), '--check'], { cwd: packageRoot, encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  assert.match(result.stdout, /up to date/);
});
