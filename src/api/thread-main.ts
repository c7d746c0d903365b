import { parentPort, workerData } from 'node:worker_threads';
import { loadConfig } from '../config';
import { serveApi, type ApiServiceSettings } from './serve';
import type { ApiThreadMessage, ApiThreadCommand } from './api-thread';

/**
 * The API thread of `npm start` (api-thread.ts starts it): serves the API with the settings the
 * main thread passed, says where it listens, and on `stop` stops gracefully and says how it went.
 * The configuration is the process's, already checked by the main thread.
 */
async function main(): Promise<void> {
  const port = parentPort!;
  const api = await serveApi(loadConfig(), workerData as ApiServiceSettings);
  port.postMessage({ kind: 'listening', port: api.port } satisfies ApiThreadMessage);
  port.on('message', (command: ApiThreadCommand) => {
    if (command.kind !== 'stop') return;
    void api.stop().then((outcome) => port.postMessage({ kind: 'stopped', outcome } satisfies ApiThreadMessage));
  });
}

// A failure (a port in use) is an unhandled rejection in this thread, which the main thread
// receives as the worker's 'error' event.
void main();
