/** The published shape: what `require('@tally/client')` and its types resolve to is the built dist/. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { test } from 'node:test';

const packageRoot = path.resolve(__dirname, '../..');
const manifest = JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as {
  main: string;
  types: string;
  exports: { '.': { types: string; default: string } };
  files: string[];
  dependencies?: Record<string, string>;
};

test('main, types and exports point at the built files, which export the client; no runtime dependencies', () => {
  for (const file of [manifest.main, manifest.types, manifest.exports['.'].types, manifest.exports['.'].default]) {
    assert.ok(file.startsWith('./dist/'), `${file} is inside dist/, which "files" publishes`);
    assert.ok(fs.existsSync(path.join(packageRoot, file)), `${file} exists (npm run build)`);
  }
  assert.deepEqual(manifest.files.sort(), ['README.md', 'dist/']);
  assert.equal(manifest.dependencies, undefined);
  // Resolved the way a consumer's require() resolves the package directory.
  const published = createRequire(__filename)(packageRoot) as typeof import('../src');
  assert.equal(typeof published.TallyClient, 'function');
  assert.equal(typeof published.TallyApiError, 'function');
  assert.equal(typeof published.BufferFullError, 'function');
  const types = fs.readFileSync(path.join(packageRoot, manifest.types), 'utf8');
  assert.match(types, /TallyClient/);
});
