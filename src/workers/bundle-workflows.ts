import { DefaultLogger, bundleWorkflowCode } from '@temporalio/worker';
import { WORKFLOWS_PATH } from './workflows-path';

/**
 * The child process of {@link bundleWorkflowsApart}: bundles the workflow code with webpack,
 * sends the bundle to its parent and exits, taking webpack's memory with it.
 */
async function main(): Promise<void> {
  const { code } = await bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, logger: new DefaultLogger('WARN') });
  await new Promise<void>((resolve, reject) => process.send!({ code }, (err: Error | null) => (err ? reject(err) : resolve())));
  process.disconnect();
}

void main().catch((err: unknown) => {
  process.stderr.write(`bundling the workflow code failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
