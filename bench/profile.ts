/**
 * `npm run bench:profile [-- --cpu-prof]`: where the CPU goes under ingest load. Starts the stack,
 * drives 10 s of 32 concurrent 100-event batches, and prints each process's share of a core
 * (stack node process, Temporal dev server, PostgreSQL, the load generator). With --cpu-prof the
 * stack's node process writes V8 CPU profiles to bench/results/profiles/ (open them in Chrome
 * DevTools, or summarise them with any .cpuprofile reader).
 */
import fs from 'node:fs';
import path from 'node:path';
import { HttpClient } from './http';
import { ROOT, runLoops, sleep, startStack } from './lib';

/** CPU ticks per process name since boot (the stack's node process is told apart from ours). */
function cpuTicks(stackPid: number): Map<string, number> {
  const ticks = new Map<string, number>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // the process ended meanwhile
    }
    const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const pid = Number(entry);
    const name = pid === stackPid ? 'tally (API + worker)' : pid === process.pid ? 'load generator' : comm;
    ticks.set(name, (ticks.get(name) ?? 0) + Number(fields[11]) + Number(fields[12]));
  }
  return ticks;
}

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
    for (let i = 0; i < 100; i++) await api.request('POST', '/v1/tenants', { id: `profile_${i}`, name: 'profile', plan_id: 'profile' });
    let seq = 0;
    let acked = 0;
    let cursor = 0;
    const before = cpuTicks(stack.pid);
    const started = Date.now();
    const stopAt = started + 10_000;
    await runLoops(32, () => Date.now() < stopAt, async () => {
      const tenant = `profile_${cursor++ % 100}`;
      const events = Array.from({ length: 100 }, () => ({ id: `e${++seq}`, tenant_id: tenant, metric: 'tokens', quantity: 1 }));
      if ((await api.request('POST', '/v1/events', { events })).status === 202) acked += 100;
    });
    const seconds = (Date.now() - started) / 1000;
    const after = cpuTicks(stack.pid);
    process.stdout.write(`acknowledged ${Math.round(acked / seconds)} events/s\n`);
    const shares = [...after].map(([name, t]) => [name, (t - (before.get(name) ?? 0)) / 100 / seconds] as const);
    for (const [name, share] of shares.filter(([, s]) => s > 0.02).sort((a, b) => b[1] - a[1])) {
      process.stdout.write(`${name.padEnd(28)} ${(share * 100).toFixed(0).padStart(4)}% of a core\n`);
    }
    await sleep(500);
  } finally {
    api.close();
    await stack.stop();
  }
  if (cpuProf) process.stdout.write(`profiles: ${profileDir}\n`);
}

void main();
