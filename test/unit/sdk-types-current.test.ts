/**
 * The TypeScript SDK's types (clients/typescript/src/generated/openapi.ts) were generated from the
 * OpenAPI document the API serves today. openapi-typescript lives only in the SDK's own install,
 * so this cannot regenerate and compare the types; the generator writes the SHA-256 of the
 * document it read into the file's header (`// openapi-sha256: <hex>`, over the document as
 * `GET /openapi.json` serves it), and this compares that with the document the app serves now.
 * Any change to a route, schema or description makes it fail until the types are regenerated.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { serveOffline } from './api/offline-app';

const GENERATED_TYPES = path.resolve(__dirname, '../../clients/typescript/src/generated/openapi.ts');

async function servedDocumentSha256(): Promise<string> {
  const served = await serveOffline();
  try {
    const res = await fetch(`${served.url}/openapi.json`);
    if (res.status !== 200) throw new Error(`GET /openapi.json answered ${res.status}`);
    return createHash('sha256').update(Buffer.from(await res.arrayBuffer())).digest('hex');
  } finally {
    await served.close();
  }
}

test("the SDK's generated types name the SHA-256 of the OpenAPI document the API serves", async () => {
  const served = await servedDocumentSha256();
  const recorded = /^\/\/ openapi-sha256: ([0-9a-f]{64})$/m.exec(fs.readFileSync(GENERATED_TYPES, 'utf8'))?.[1];
  if (recorded !== served) {
    throw new Error(
      `clients/typescript/src/generated/openapi.ts was generated from ${recorded ? `an OpenAPI document with SHA-256 ${recorded}` : 'a document it does not name (no "// openapi-sha256:" line)'}, ` +
        `but the API serves one with SHA-256 ${served}: run \`cd clients/typescript && npm run generate\``,
    );
  }
});
