import vm from 'node:vm';
import { bundleWorkflowsApart } from '../../../src/workers/worker';
import * as workflows from '../../../src/workflows';

describe('bundleWorkflowsApart', () => {
  test('a child process bundles the workflow code: the bundle loads and exports every workflow type', async () => {
    const { code } = await bundleWorkflowsApart();
    // Loaded as the SDK loads it (a context with a module cache), the bundle publishes its
    // workflows on globalThis.__TEMPORAL__; loading runs none of them.
    const context = vm.createContext({ __webpack_module_cache__: {} });
    vm.runInContext(code, context);
    const exported = Object.keys(context.__TEMPORAL__.importWorkflows()).sort();
    const registered = Object.entries(workflows)
      .filter(([, value]) => typeof value === 'function')
      .map(([name]) => name)
      .sort();
    expect(registered).toEqual(expect.arrayContaining(['alertDelivery', 'periodInvoice', 'tenantBilling']));
    expect(exported).toEqual(expect.arrayContaining(registered));
  }, 60_000);
});
