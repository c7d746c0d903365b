import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { freePort } from './lib';

/** The answer the floor server sends: about the size of a `GET …/usage` answer with two metrics. */
const BODY_BYTES = 600;

/**
 * The floor under every `GET …/usage` latency the bench reports: a Node.js process of its own
 * that answers each request at once with a fixed JSON body, no PostgreSQL, no authentication, no
 * routing. The usage probe reads it beside each usage read, through the same keep-alive client,
 * so its latency is what a read costs on this machine under the load of the moment for the
 * crossings alone (client to server process and back, each waiting for a core). A usage read
 * also runs its statement (timed apart, `statement_p99_ms`) inside a process that has other
 * work; it cannot be faster than this.
 */
export async function startReadFloor(): Promise<{ url: string; stop: () => void }> {
  const port = await freePort();
  const code = `
    const body = JSON.stringify({ floor: 'x'.repeat(${BODY_BYTES}) });
    require('node:http').createServer((req, res) => {
      req.resume();
      req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end(body));
    }).listen(${port}, '127.0.0.1', () => process.stdout.write('listening\\n'));`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const stop = () => void child.kill('SIGKILL');
  process.once('exit', stop);
  await once(child.stdout!, 'data');
  return { url: `http://127.0.0.1:${port}`, stop };
}
