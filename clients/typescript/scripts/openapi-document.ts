/**
 * Prints the API's OpenAPI document (`GET /openapi.json`) as JSON on stdout, built from the
 * repository's own app without a running server: the app over a PostgreSQL and a Temporal that
 * are never reached (test/unit/api/offline-app.ts), whose router `buildOpenApiDocument` reads.
 * Run with the repository's tsx by `scripts/generate-types.mjs`; it is not part of the package.
 */
import { buildOpenApiDocument } from '../../../src/api/openapi';
import { offlineApp } from '../../../test/unit/api/offline-app';

async function main(): Promise<void> {
  const { app, close } = offlineApp();
  try {
    process.stdout.write(`${JSON.stringify(buildOpenApiDocument(app), null, 2)}\n`);
  } finally {
    await close();
  }
}

void main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
