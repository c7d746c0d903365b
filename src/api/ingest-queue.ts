import type { IngestRequest, RequestOutcome } from '../db/ingest';

/**
 * Group commit for ingest: concurrent `POST /v1/events` requests share a PostgreSQL transaction.
 *
 * Why: a request's transaction costs a few round trips and a commit whatever its size, and for
 * small requests from many tenants those dominate (each round trip is a write and a wake-up on
 * both sides). Stored together, ten small requests cost what one does.
 *
 * How: at most `maxInFlight` transactions run at once. A request that finds a slot free is
 * stored at once, alone; requests that arrive while every slot is busy wait in order, and the
 * next free slot takes as many of them as fit in `maxEvents` (at least one). So an idle API adds
 * no delay, and a busy one stores more per commit.
 *
 * Invariants:
 * - A request is never split: it is in exactly one transaction, and its answer is that
 *   transaction's (`storeUsageRequests` judges each request on its own, so one refused request
 *   stores nothing of itself and does not change the others').
 * - Its promise settles after that transaction committed (a 202 still means durable), or with
 *   the transaction's error, which every request of the group gets (nothing of them is stored).
 * - Requests are taken in arrival order.
 */
export type StoreRequests = (requests: readonly IngestRequest[]) => Promise<RequestOutcome[]>;

export interface IngestQueueOptions {
  /** Transactions at once (the ingest pool's size: more would only wait for a connection). */
  maxInFlight: number;
  /** Events per transaction at most, unless one request alone has more. */
  maxEvents: number;
}

interface Waiting {
  request: IngestRequest;
  events: number;
  resolve: (outcome: RequestOutcome) => void;
  reject: (err: unknown) => void;
}

export class IngestQueue {
  private readonly waiting: Waiting[] = [];
  private inFlight = 0;

  constructor(
    private readonly store: StoreRequests,
    private readonly options: IngestQueueOptions,
  ) {}

  /** Stores the request with whatever else waits; resolves once its transaction committed. */
  submit(request: IngestRequest): Promise<RequestOutcome> {
    const events = [...request.batches.values()].reduce((n, b) => n + b.length, 0);
    return new Promise<RequestOutcome>((resolve, reject) => {
      this.waiting.push({ request, events, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    while (this.inFlight < this.options.maxInFlight && this.waiting.length > 0) {
      const group: Waiting[] = [this.waiting.shift()!];
      let events = group[0]!.events;
      while (this.waiting.length > 0 && events + this.waiting[0]!.events <= this.options.maxEvents) {
        const next = this.waiting.shift()!;
        events += next.events;
        group.push(next);
      }
      this.inFlight += 1;
      this.store(group.map((w) => w.request))
        .then(
          (outcomes) => group.forEach((w, i) => w.resolve(outcomes[i]!)),
          (err: unknown) => group.forEach((w) => w.reject(err)),
        )
        .finally(() => {
          this.inFlight -= 1;
          this.pump();
        });
    }
  }
}
