/**
 * `npm run bench:profile [-- --cpu-prof]`: where the CPU goes under ingest load. Starts the stack,
 * creates its tenants and waits until the worker has started their first runs, then drives 10 s of 32 concurrent 100-event batches round-robin over 100 tenants (`--tenants N`,
 * `--batch N` for other shapes: `--tenants 1000 --batch 10` is the fleet's), waits until every acknowledged event is
 * counted, and prints each process's share of a core and CPU milliseconds per 1,000 events
 * (stack node process, Temporal dev server, PostgreSQL, the load generator): the cost of an
 * event, which divided into the machine's cores gives the rate it could carry at best. With --cpu-prof the
 * stack's node process writes V8 CPU profiles to bench/results/profiles/ (open them in Chrome
 * DevTools, or summarise them with any .cpuprofile reader).
 */
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { HttpClient } from './http';
import { waitCounted } from './read-model';
import { ROOT, cpuMsBetween, cpuTicks, eventsCpuCost, runLoops, sleep, startStack, waitSettled } from './lib';

const flag = (name: string, fallback: number) => {
  const at = process.argv.indexOf(name);
  return at >= 0 ? Number(process.argv[at + 1]) : fallback;
};
const TENANTS = flag('--tenants', 100);
const BATCH = flag('--batch', 100);

async function main(): Promise<void> {
  const profileDir = path.join(ROOT, 'bench/results/profiles');
  const cpuProf = process.argv.includes('--cpu-prof');
  if (cpuProf) fs.mkdirSync(profileDir, { recursive: true });
  const stack = await startStack({}, cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []);
  const api = new HttpClient(stack.apiUrl, stack.adminKey);
  try {
    await api.request('POST', '/v1/plans', {
      id: 'profile', name: 'profile', currency: 'USD', interval: 'month', base_fee: '0', grace_period_seconds: 0,
      meters: [{ metric: 'tokens', aggregation: 'sum', pricing: { model: 'per_unit', unit_price: '0.001' } }],
    });
    const tenants = Array.from({ length: TENANTS }, (_, i) => `profile_${i}`);
    for (const id of tenants) await api.request('POST', '/v1/tenants', { id, name: 'profile', plan_id: 'profile' });
    // Their first runs start before the load, not during it.
    await waitSettled(stack.apiUrl);
    let seq = 0;
    let acked = 0;
    let cursor = 0;
    const before = cpuTicks(stack.pid);
    const started = Date.now();
    const stopAt = started + 10_000;
    await runLoops(32, () => Date.now() < stopAt, async () => {
      const tenant = `profile_${cursor++ % TENANTS}`;
      const events = Array.from({ length: BATCH }, () => ({ id: `e${++seq}`, tenant_id: tenant, metric: 'tokens', quantity: 1 }));
      if ((await api.request('POST', '/v1/events', { events })).status === 202) acked += BATCH;
    });
    const loadSeconds = (Date.now() - started) / 1000;
    // Until every acknowledged event is counted: counting's CPU belongs to the events too.
    const db = new pg.Pool({ connectionString: stack.databaseUrl, max: 2 });
    try {
      await waitCounted(db, tenants, acked);
    } finally {
      await db.end();
    }
    const seconds = (Date.now() - started) / 1000;
    const after = cpuTicks(stack.pid);
    process.stdout.write(`acknowledged ${Math.round(acked / loadSeconds)} events/s over ${loadSeconds.toFixed(1)} s; all counted ${(seconds - loadSeconds).toFixed(1)} s after\n`);
    process.stdout.write(`${'process'.padEnd(28)} share of a core   CPU ms per 1,000 events\n`);
    const cost = eventsCpuCost(cpuMsBetween(before, after), acked, seconds * 1000);
    const share = (msPerThousand: number) => `${((msPerThousand * acked) / 1000 / 10 / seconds).toFixed(0)}%`;
    for (const [name, ms] of Object.entries(cost.ms_per_1000_events)) process.stdout.write(`${name.padEnd(28)} ${share(ms).padStart(8)}   ${ms.toFixed(0).padStart(10)}\n`);
    process.stdout.write(
      `${'all'.padEnd(28)} ${share(cost.total_ms_per_1000_events).padStart(8)}   ${cost.total_ms_per_1000_events.toFixed(0).padStart(10)}  (ceiling at this cost: ${cost.ceiling_events_per_s} events/s)\n`,
    );
    await sleep(500);
  } finally {
    api.close();
    await stack.stop();
  }
  if (cpuProf) process.stdout.write(`profiles: ${profileDir}\n`);
}

void main();
