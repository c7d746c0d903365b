/**
 * Jest runs TypeScript through SWC; `npm run typecheck` is the type gate.
 * Two projects: `unit` (no PostgreSQL, no Temporal, no downloads: seconds) and `integration`
 * (real Temporal and PostgreSQL, started once per run by the global set-up, plus the tests that
 * run `npm start` or the binaries script).
 */
const transform = { '^.+\\.(t|j)s$': ['@swc/jest', { jsc: { target: 'es2022' } }] };

/** @type {import('jest').Config} */
module.exports = {
  testTimeout: 120_000,
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
      globalSetup: '<rootDir>/test/support/global-setup.ts',
      globalTeardown: '<rootDir>/test/support/global-teardown.ts',
    },
  ],
};
