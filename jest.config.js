/**
 * Jest runs TypeScript through SWC; `npm run typecheck` is the type gate.
 * Three projects:
 * - `unit`: no PostgreSQL, no Temporal, no downloads: seconds.
 * - `integration`: real Temporal and PostgreSQL, started once per run by the global set-up, plus
 *   the tests that run `npm start` or the binaries script. Each file makes its own tenants and its
 *   own task queue, so two files run at once: most of their time is spent waiting on timers,
 *   retries and round trips, not on the CPU.
 * - `serial`: the integration files that need the stack to themselves. `npm test` runs them after
 *   the others, one at a time (`--runInBand`).
 */
const transform = { '^.+\\.(t|j)s$': ['@swc/jest', { jsc: { target: 'es2022' } }] };

/** Integration files that must run alone, and why. */
const SERIAL = [
  // Compares row counts and digests of whole tables before and after refused requests.
  'test/integration/fuzz.test.ts',
  // Drives one tenant as hard as the API accepts and asserts promptness: it needs both cores.
  'test/integration/hot-tenant.test.ts',
  // Walks summaries and open alerts across every tenant, page by page: the listing must hold still.
  'test/integration/insight.test.ts',
];

/** @type {import('jest').Config} */
module.exports = {
  testTimeout: 120_000,
  maxWorkers: 2,
  projects: [
    {
      displayName: 'unit',
      testEnvironment: 'node',
      transform,
      testMatch: ['<rootDir>/test/unit/**/*.test.ts'],
    },
    {
      displayName: 'integration',
      testEnvironment: 'node',
      transform,
      testMatch: ['<rootDir>/test/integration/**/*.test.ts'],
      testPathIgnorePatterns: SERIAL,
      globalSetup: '<rootDir>/test/support/global-setup.ts',
      globalTeardown: '<rootDir>/test/support/global-teardown.ts',
    },
    {
      displayName: 'serial',
      testEnvironment: 'node',
      transform,
      testMatch: SERIAL.map((file) => `<rootDir>/${file}`),
      globalSetup: '<rootDir>/test/support/global-setup.ts',
      globalTeardown: '<rootDir>/test/support/global-teardown.ts',
    },
  ],
};
