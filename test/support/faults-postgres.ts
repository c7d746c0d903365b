import type { BillingActivities } from '../../src/activities';
import { eventually } from './api-harness';

/**
 * PostgreSQL taken away from chosen activities while the test runs: each activity of the worker
 * runs either on the real pool or on an unreachable one (`unreachableDb()`), switched per
 * activity at any moment. A cut activity's attempts fail the way they fail in production
 * (ECONNREFUSED from the pool), so Temporal's own retry policy is what is tested.
 *
 * It can also lose an answer: the next attempt runs for real (it commits) and then throws, as a
 * connection reset after the commit would. Every real answer is kept, so a test can compare what
 * a retry answered with what the lost attempt had written.
 */
export type ActivityName = keyof BillingActivities;

type AnyActivity = (...args: unknown[]) => Promise<unknown>;

export const LOST_ANSWER = 'connection reset after commit (injected): the answer is lost';

export class PostgresFaults {
  private readonly cut = new Set<ActivityName>();
  private readonly losing = new Map<ActivityName, { times: number; beforeLosing?: (answer: unknown) => Promise<void> }>();
  private readonly afterCommit = new Map<ActivityName, { when: (answer: unknown) => boolean; hook: (answer: unknown) => Promise<void> }>();
  /** Attempts per activity, in order: where each ran and how it ended. */
  readonly attempts = new Map<ActivityName, Array<{ on: 'down' | 'up'; error?: string }>>();
  /** Every answer a real attempt produced, per activity, and whether it was lost. */
  readonly answers = new Map<ActivityName, Array<{ answer: unknown; lost: boolean }>>();

  constructor(
    private readonly real: BillingActivities,
    private readonly dead: BillingActivities,
  ) {}

  /** The activities to register: cut ones run on the unreachable pool. */
  activities(): BillingActivities {
    const wrapped: Record<string, AnyActivity> = {};
    for (const name of Object.keys(this.real) as ActivityName[]) {
      const real = this.real[name] as unknown as AnyActivity;
      const dead = this.dead[name] as unknown as AnyActivity;
      wrapped[name] = async (...args: unknown[]) => {
        const log = this.attempts.get(name) ?? [];
        this.attempts.set(name, log);
        const attempt: { on: 'down' | 'up'; error?: string } = { on: this.cut.has(name) ? 'down' : 'up' };
        log.push(attempt);
        try {
          if (attempt.on === 'down') return await dead(...args);
          const answer = await real(...args);
          const after = this.afterCommit.get(name);
          if (after?.when(answer)) {
            this.afterCommit.delete(name);
            await after.hook(answer);
          }
          const lose = this.losing.get(name);
          const lost = lose !== undefined && lose.times > 0;
          this.answers.set(name, [...(this.answers.get(name) ?? []), { answer, lost }]);
          if (lost) {
            lose.times -= 1;
            await lose.beforeLosing?.(answer);
            throw new Error(LOST_ANSWER);
          }
          return answer;
        } catch (err) {
          attempt.error = err instanceof Error ? err.message : String(err);
          throw err;
        }
      };
    }
    return wrapped as unknown as BillingActivities;
  }

  /** PostgreSQL goes away for these activities: their next attempts fail to connect. */
  down(...names: ActivityName[]): void {
    for (const name of names) this.cut.add(name);
  }

  /** PostgreSQL is back for these activities. */
  up(...names: ActivityName[]): void {
    for (const name of names) this.cut.delete(name);
  }

  /**
   * The next `times` real attempts of the activity commit, then lose their answer (after
   * `beforeLosing`, which lets a test hold the lost attempt until something else has happened).
   */
  loseNextAnswers(name: ActivityName, times = 1, beforeLosing?: (answer: unknown) => Promise<void>): void {
    this.losing.set(name, { times, beforeLosing });
  }

  /**
   * Runs `hook` once, after the next real attempt of the activity whose answer passes `when`
   * committed, and before that attempt answers.
   */
  onceAfterCommit(name: ActivityName, hook: (answer: unknown) => Promise<void>, when: (answer: unknown) => boolean = () => true): void {
    this.afterCommit.set(name, { when, hook });
  }

  /** Each lost answer of the activity with the answer of the attempt that followed it (its retry). */
  lostAndRetried(name: ActivityName): Array<[lost: unknown, retried: unknown]> {
    const answers = this.answers.get(name) ?? [];
    const pairs: Array<[unknown, unknown]> = [];
    answers.forEach((a, i) => {
      if (a.lost && i + 1 < answers.length) pairs.push([a.answer, answers[i + 1]!.answer]);
    });
    return pairs;
  }

  /** Attempts of the activity that failed because PostgreSQL was unreachable. */
  refused(name: ActivityName): number {
    return (this.attempts.get(name) ?? []).filter((a) => a.on === 'down' && a.error !== undefined).length;
  }

  /** Every attempt made while cut failed, and failed on the connection (not on anything else). */
  refusalsAreConnectionErrors(name: ActivityName): boolean {
    const down = (this.attempts.get(name) ?? []).filter((a) => a.on === 'down');
    return down.length > 0 && down.every((a) => /ECONNREFUSED/.test(a.error ?? ''));
  }

  /** Waits until the activity has been refused `n` times: Temporal is retrying it. */
  async untilRefused(name: ActivityName, n: number, timeoutMs = 20_000): Promise<void> {
    await eventually(async () => (this.refused(name) >= n ? true : undefined), timeoutMs, `${n} refused attempts of ${name}`);
  }
}
