/**
 * The browser suite (`npm run test:browser`, scripts/test-browser.mjs): the dashboard in headless
 * Chromium against the real system, on the same test stack as the integration tests (a real
 * PostgreSQL and Temporal dev server, started once by the global set-up). `npm run screenshots`
 * runs screenshots.ts instead, which writes docs/screenshots/.
 */
const transform = { '^.+\\.(t|j)s$': ['@swc/jest', { jsc: { target: 'es2022' } }] };

/** @type {import('jest').Config} */
module.exports = {
  rootDir: '../..',
  displayName: 'browser',
  testEnvironment: 'node',
  testTimeout: 180_000,
  transform,
  testMatch: process.env.TALLY_SCREENSHOTS_DIR ? ['<rootDir>/test/browser/screenshots.ts'] : ['<rootDir>/test/browser/**/*.test.ts'],
  globalSetup: '<rootDir>/test/support/global-setup.ts',
  globalTeardown: '<rootDir>/test/support/global-teardown.ts',
};
