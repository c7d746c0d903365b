/**
 * Jest runs TypeScript through SWC; `npm run typecheck` is the type gate.
 * Three projects:
 * - `unit`: no PostgreSQL, no Temporal, no downloads: seconds.
 * - `integration`: real Temporal and PostgreSQL, started once per run by the global set-up, plus
 *   the tests that run `npm start` or the binaries script. Each file makes its own tenants and its
 *   own task queue, so three files run at once on two cores: most of their time is spent waiting
 *   on timers, retries and round trips (the machine's CPU stays about a quarter idle).
 * - `serial`: the integration files that need the stack to themselves. `npm test` runs them after
 *   the others, one at a time (`--runInBand`).
 */
const transform = { '^.+\\.(t|j)s$': ['@swc/jest', { jsc: { target: 'es2022' } }] };

/**
 * Integration files that must run alone, and why. (A file that reads whole tables, such as the
 * fuzz's digests or insight's listings across every tenant, runs on a database of its own instead:
 * `startApiHarness({ ownDatabase: true })`.)
 */
const SERIAL = [
  // Drives one tenant as hard as the API accepts and asserts promptness: it needs both cores.
  'test/integration/hot-tenant.test.ts',
];

/** @type {import('jest').Config} */
module.exports = {
  testTimeout: 120_000,
  maxWorkers: 3,
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
