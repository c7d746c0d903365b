/** Where the workflow bundle's entry point is (webpack bundles it when a worker starts). */
export const WORKFLOWS_PATH = require.resolve('../workflows');
