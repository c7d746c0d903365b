/**
 * The ingest coalescer with a fake signal function: the fake is the unit's dependency (Temporal's
 * signal call), recorded and controlled by hand so every interleaving is deterministic.
 */
import { IngestCoalescer, type SignalReport } from '../../../src/api/ingest-coalescer';
import type { UsageEventInput } from '../../../src/workflows/messages';

interface Sent {
  tenantId: string;
  events: UsageEventInput[];
  receivedAt: Date;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** A signal function whose calls stay pending until the test settles them. */
function fakeSignal() {
  const sent: Sent[] = [];
  const send = (tenantId: string, events: UsageEventInput[], receivedAt: Date) =>
    new Promise<void>((resolve, reject) => {
      sent.push({ tenantId, events, receivedAt, resolve, reject });
    });
  return { sent, send };
}

const T0 = Date.parse('2026-05-01T12:00:00.000Z');
function events(prefix: string, n: number, at = T0): UsageEventInput[] {
  return Array.from({ length: n }, (_, i) => ({ id: `${prefix}${i}`, metric: 'calls', quantity: 1, timestamp: new Date(at).toISOString() }));
}
const tick = () => new Promise((r) => setImmediate(r));
const settled = async (p: Promise<void>) => {
  let state = 'pending';
  p.then(
    () => (state = 'resolved'),
    () => (state = 'rejected'),
  );
  await tick();
  return state;
};

test('requests arriving while a signal is in flight share the next signal, in arrival order', async () => {
  const fake = fakeSignal();
  const c = new IngestCoalescer(fake.send, { windowMs: 0 });
  const first = c.submit('acme', events('a', 2), new Date(T0));
  expect(fake.sent).toHaveLength(1); // window 0: the first request goes out at once

  const later = [c.submit('acme', events('b', 3), new Date(T0 + 1)), c.submit('acme', events('c', 1), new Date(T0 + 2)), c.submit('acme', events('d', 2), new Date(T0 + 3))];
  await tick();
  expect(fake.sent).toHaveLength(1); // they wait for the signal in flight
  expect(await settled(first)).toBe('pending'); // not acknowledged yet: no 202

  fake.sent[0]!.resolve();
  expect(await settled(first)).toBe('resolved');
  expect(fake.sent).toHaveLength(2);
  expect(fake.sent[1]!.events.map((e) => e.id)).toEqual(['b0', 'b1', 'b2', 'c0', 'd0', 'd1']);
  for (const p of later) expect(await settled(p)).toBe('pending');

  fake.sent[1]!.resolve();
  for (const p of later) expect(await settled(p)).toBe('resolved');
  await c.drain();
  expect(c.activeTenants).toBe(0);
});

test('the first request of an idle tenant waits the window for company', async () => {
  jest.useFakeTimers();
  try {
    const fake = fakeSignal();
    const c = new IngestCoalescer(fake.send, { windowMs: 2 });
    const all = [c.submit('acme', events('a', 1), new Date(T0)), c.submit('acme', events('b', 1), new Date(T0)), c.submit('acme', events('c', 1), new Date(T0))];
    expect(fake.sent).toHaveLength(0);
    jest.advanceTimersByTime(2);
    expect(fake.sent).toHaveLength(1);
    expect(fake.sent[0]!.events.map((e) => e.id)).toEqual(['a0', 'b0', 'c0']);
    fake.sent[0]!.resolve();
    await Promise.all(all);
  } finally {
    jest.useRealTimers();
  }
});

test('tenants never share a signal and do not wait for each other', async () => {
  const fake = fakeSignal();
  const c = new IngestCoalescer(fake.send, { windowMs: 0 });
  const a = c.submit('acme', events('a', 1), new Date(T0));
  const b = c.submit('globex', events('b', 1), new Date(T0));
  expect(fake.sent.map((s) => s.tenantId)).toEqual(['acme', 'globex']);
  fake.sent[1]!.resolve();
  expect(await settled(b)).toBe('resolved');
  expect(await settled(a)).toBe('pending');
  fake.sent[0]!.resolve();
  await a;
});

test('a failed signal rejects every request it carried, and the next group still goes out', async () => {
  const fake = fakeSignal();
  const c = new IngestCoalescer(fake.send, { windowMs: 0 });
  const first = c.submit('acme', events('a', 1), new Date(T0));
  const second = c.submit('acme', events('b', 1), new Date(T0));
  const third = c.submit('acme', events('c', 1), new Date(T0));
  fake.sent[0]!.resolve();
  await first;
  await tick();
  fake.sent[1]!.reject(new Error('temporal unavailable'));
  await expect(second).rejects.toThrow('temporal unavailable');
  await expect(third).rejects.toThrow('temporal unavailable');

  const fourth = c.submit('acme', events('d', 1), new Date(T0));
  expect(fake.sent).toHaveLength(3);
  fake.sent[2]!.resolve();
  await fourth;
});

test('a signal function that throws synchronously fails its requests instead of the caller', async () => {
  const c = new IngestCoalescer(
    () => {
      throw new Error('boom');
    },
    { windowMs: 0 },
  );
  await expect(c.submit('acme', events('a', 1), new Date(T0))).rejects.toThrow('boom');
  await c.drain();
});

test('groups are capped in events; a request is never split, even one above the cap', async () => {
  const fake = fakeSignal();
  const c = new IngestCoalescer(fake.send, { windowMs: 0, maxEvents: 10 });
  void c.submit('acme', events('x', 1), new Date(T0)); // in flight
  const queued = [
    c.submit('acme', events('a', 6), new Date(T0)),
    c.submit('acme', events('b', 4), new Date(T0)), // a+b = 10: fits
    c.submit('acme', events('c', 5), new Date(T0)), // next group
    c.submit('acme', events('d', 12), new Date(T0)), // alone, above the cap
    c.submit('acme', events('e', 1), new Date(T0)),
  ];
  for (let i = 0; i < 5; i++) {
    fake.sent[i]!.resolve();
    await tick();
  }
  await Promise.all(queued);
  expect(fake.sent.map((s) => s.events.length)).toEqual([1, 10, 5, 12, 1]);
  expect(fake.sent[3]!.events.map((e) => e.id)).toEqual(events('d', 12).map((e) => e.id));
});

test('groups are capped in bytes', async () => {
  const fake = fakeSignal();
  const c = new IngestCoalescer(fake.send, { windowMs: 0, maxBytes: 2_000 });
  void c.submit('acme', events('x', 1), new Date(T0));
  const big = (p: string) => [{ id: p, metric: 'calls', quantity: 1, timestamp: new Date(T0).toISOString(), properties: { blob: 'z'.repeat(800) } }];
  const queued = [c.submit('acme', big('a'), new Date(T0)), c.submit('acme', big('b'), new Date(T0)), c.submit('acme', big('c'), new Date(T0))];
  for (let i = 0; i < 3; i++) {
    fake.sent[i]!.resolve();
    await tick();
  }
  await Promise.all(queued);
  expect(fake.sent.map((s) => s.events.map((e) => e.id))).toEqual([['x0'], ['a', 'b'], ['c']]);
});

test('a group carries its earliest receive time, and never so early that an accepted event becomes "future"', async () => {
  const fake = fakeSignal();
  const tolerance = 5 * 60_000;
  const c = new IngestCoalescer(fake.send, { windowMs: 0, futureToleranceMs: tolerance });
  void c.submit('acme', events('x', 1), new Date(T0)); // in flight
  // Received at T0+10s and T0+5s: one group, receive time T0+5s (the earliest).
  const p1 = c.submit('acme', events('a', 1, T0), new Date(T0 + 10_000));
  const p2 = c.submit('acme', events('b', 1, T0), new Date(T0 + 5_000));
  // Timestamped 4m59.5s after its own receipt (T0+6s), so fine for the API, but more than 5 min
  // after T0+5s: it must not join that group; it starts the next one.
  const p3 = c.submit('acme', events('c', 1, T0 + 6_000 + tolerance - 500), new Date(T0 + 6_000));
  for (let i = 0; i < 3; i++) {
    fake.sent[i]!.resolve();
    await tick();
  }
  await Promise.all([p1, p2, p3]);
  expect(fake.sent.map((s) => s.events.map((e) => e.id))).toEqual([['x0'], ['a0', 'b0'], ['c0']]);
  expect(fake.sent[1]!.receivedAt.toISOString()).toBe(new Date(T0 + 5_000).toISOString());
  for (const s of fake.sent) {
    for (const e of s.events) expect(Date.parse(e.timestamp)).toBeLessThanOrEqual(s.receivedAt.getTime() + tolerance);
  }
});

test('reports every signal with the requests and events it carried', async () => {
  const reports: SignalReport[] = [];
  const fake = fakeSignal();
  const c = new IngestCoalescer(fake.send, { windowMs: 0, onSignal: (r) => reports.push(r) });
  const all = [c.submit('acme', events('a', 2), new Date(T0)), c.submit('acme', events('b', 3), new Date(T0)), c.submit('acme', events('c', 4), new Date(T0))];
  fake.sent[0]!.resolve();
  await tick();
  fake.sent[1]!.reject(new Error('nope'));
  await Promise.allSettled(all);
  expect(reports.map(({ tenantId, requests, events: n, ok }) => ({ tenantId, requests, events: n, ok }))).toEqual([
    { tenantId: 'acme', requests: 1, events: 2, ok: true },
    { tenantId: 'acme', requests: 2, events: 7, ok: false },
  ]);
});

test('many concurrent requests: every event is sent exactly once, in per-request order, in few signals', async () => {
  const sent: UsageEventInput[][] = [];
  const c = new IngestCoalescer(
    async (_t, evs) => {
      sent.push(evs);
      await new Promise((r) => setTimeout(r, 5));
    },
    { windowMs: 1 },
  );
  const requests = Array.from({ length: 200 }, (_, i) => events(`r${i}-`, 1 + (i % 7)));
  await Promise.all(requests.map((evs) => c.submit('acme', evs, new Date(T0))));
  const flat = sent.flat().map((e) => e.id);
  expect(flat.sort()).toEqual(requests.flat().map((e) => e.id).sort());
  expect(new Set(flat).size).toBe(flat.length);
  for (const evs of requests) {
    const positions = evs.map((e) => sent.flat().findIndex((s) => s.id === e.id));
    expect(positions).toEqual([...positions].sort((a, b) => a - b));
  }
  expect(sent.length).toBeLessThan(20);
  for (const s of sent) expect(s.length).toBeLessThanOrEqual(1_000);
});
