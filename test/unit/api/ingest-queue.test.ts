import type { IngestRequest, RequestOutcome } from '../../../src/db/ingest';
import { IngestQueue } from '../../../src/api/ingest-queue';

/**
 * The group commit's queue in process: which requests share a transaction. The store here is a
 * recorder the test settles by hand (the transactions themselves are PostgreSQL's, tested in
 * test/integration/ingest-group.test.ts).
 */
function request(id: string, events: number): IngestRequest {
  return { batches: new Map([['t', Array.from({ length: events }, (_, i) => ({ id: `${id}-${i}`, metric: 'm', quantity: '1', timestamp: null }))]]), receivedAt: new Date(0), batchId: id };
}

function recorder() {
  const calls: Array<{ ids: string[]; settle: (err?: unknown) => void }> = [];
  const store = (requests: readonly IngestRequest[]) =>
    new Promise<RequestOutcome[]>((resolve, reject) => {
      calls.push({
        ids: requests.map((r) => r.batchId),
        settle: (err) => (err ? reject(err) : resolve(requests.map(() => ({ kind: 'judged', outcomes: new Map() })))),
      });
    });
  return { calls, store };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

test('an idle queue stores a request at once and alone; requests that wait share the next free transaction, in order, up to maxEvents', async () => {
  const { calls, store } = recorder();
  const queue = new IngestQueue(store, { maxInFlight: 1, maxEvents: 10 });
  const first = queue.submit(request('a', 4));
  await tick();
  expect(calls.map((c) => c.ids)).toEqual([['a']]);
  const waiting = ['b', 'c', 'd', 'e'].map((id) => queue.submit(request(id, 4)));
  await tick();
  expect(calls).toHaveLength(1); // the only slot is busy
  calls[0]!.settle();
  await first;
  await tick();
  expect(calls.map((c) => c.ids)).toEqual([['a'], ['b', 'c']]); // 8 events; d would make 12
  calls[1]!.settle();
  await tick();
  expect(calls.map((c) => c.ids)).toEqual([['a'], ['b', 'c'], ['d', 'e']]);
  calls[2]!.settle();
  await Promise.all(waiting);
});

test('a request larger than maxEvents goes alone; a failed transaction fails its own requests only', async () => {
  const { calls, store } = recorder();
  const queue = new IngestQueue(store, { maxInFlight: 2, maxEvents: 10 });
  const big = queue.submit(request('big', 25));
  const small = queue.submit(request('small', 1));
  await tick();
  expect(calls.map((c) => c.ids)).toEqual([['big'], ['small']]);
  calls[0]!.settle(new Error('connection lost'));
  calls[1]!.settle();
  await expect(big).rejects.toThrow('connection lost');
  await expect(small).resolves.toEqual({ kind: 'judged', outcomes: new Map() });
});
