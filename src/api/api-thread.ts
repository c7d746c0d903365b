import { Worker } from 'node:worker_threads';
import type { ApiServiceSettings } from './serve';

/**
 * `npm start` serves the API from a thread of its own. The worker's activities, its counter and
 * the Temporal SDK's bookkeeping keep the process's main thread busy in bursts (a thousand
 * rollovers at once, a step of alerts); on its own thread the API parses, stores and answers on
 * the machine's other core meanwhile, and neither waits for the other's turn on one event loop.
 * The thread has its own pools and Temporal client, as an API process would (`npm run api`).
 */

/**
 * The API thread's young generation, where V8 puts every new object. A request allocates many
 * short-lived ones (its body, the parsed events, knex's query objects). With V8's default of
 * 48 MB the thread spent 13 % of its time collecting garbage in the fleet's profile; a larger
 * young generation is collected less often, and each collection copies only the objects still
 * alive. Measured (BENCHMARKS.md, session 12): about 10 % less CPU per event in both load shapes,
 * and 891 MB resident at 10,000 open tenants, under the 1,024 MB target. `npm run api` sets the
 * same size with `--max-semi-space-size=32` (V8 sizes the young generation at three semi-spaces).
 */
const API_YOUNG_GENERATION_MB = 96;

/** What the API thread tells the main thread. */
export type ApiThreadMessage = { kind: 'listening'; port: number } | { kind: 'stopped'; outcome: 'closed' | 'timeout' };
/** What the main thread tells the API thread. */
export type ApiThreadCommand = { kind: 'stop' };

/** The API serving from its thread. */
export interface ApiThread {
  port: number;
  /** Stops it gracefully (requests in flight finish), then ends the thread. */
  stop(): Promise<'closed' | 'timeout'>;
}

/**
 * Starts the API thread and resolves once it listens; rejects if it fails first. Afterwards an
 * error or an exit the main thread did not ask for is reported to `onFailure` (`npm start` then
 * stops everything, as it would if the API crashed in its own process).
 */
export function startApiThread(settings: ApiServiceSettings, onFailure: (err: unknown) => void): Promise<ApiThread> {
  const entry = require.resolve('./thread-main');
  // Run through tsx (`npm start`), the thread needs its TypeScript loader too: Node does not
  // hand a worker thread the parent's module hooks for its entry file.
  const code = entry.endsWith('.ts') ? `require('tsx/cjs'); require(${JSON.stringify(entry)});` : `require(${JSON.stringify(entry)});`;
  const worker = new Worker(code, { eval: true, workerData: settings, name: 'tally-api', resourceLimits: { maxYoungGenerationSizeMb: API_YOUNG_GENERATION_MB } });
  let stopping = false;
  return new Promise<ApiThread>((resolve, reject) => {
    let started = false;
    const fail = (err: unknown) => (started ? onFailure(err) : reject(err));
    worker.on('error', fail);
    worker.on('exit', (code) => {
      if (!stopping) fail(new Error(`the API thread exited (code ${code})`));
    });
    worker.once('message', (message: ApiThreadMessage) => {
      if (message.kind !== 'listening') return;
      started = true;
      resolve({
        port: message.port,
        stop: async () => {
          stopping = true;
          const stopped = new Promise<'closed' | 'timeout'>((done) => {
            worker.on('message', (m: ApiThreadMessage) => m.kind === 'stopped' && done(m.outcome));
            // Ended before it could say: nothing is left in flight either.
            worker.once('exit', () => done('closed'));
          });
          worker.postMessage({ kind: 'stop' } satisfies ApiThreadCommand);
          const outcome = await stopped;
          await worker.terminate();
          return outcome;
        },
      });
    });
  });
}
