/** A round repeating on a timer: stop it, or ask for a round now. */
export interface Repeating {
  /** Stops the timer and waits for a round in progress. */
  stop(): Promise<void>;
  /**
   * Runs a round as soon as possible: now when none runs, else right after the one running.
   * Several wakes while a round runs make one more round, not several.
   */
  wake(): void;
}

/**
 * Runs `round` every `intervalMs`, one round at a time (a round that outlasts the interval delays
 * the next rather than overlapping it), reporting a failed round to `onError` and going on.
 * `round` reads `stopping()` to end early. The timer never keeps the process alive.
 */
export function repeatEvery(intervalMs: number, round: (stopping: () => boolean) => Promise<void>, onError: (err: unknown) => void): Repeating {
  let stopped = false;
  let busy = false;
  let wanted = false;
  let running: Promise<void> = Promise.resolve();
  const start = () => {
    busy = true;
    wanted = false;
    running = round(() => stopped)
      .catch(onError)
      .finally(() => {
        busy = false;
        if (wanted && !stopped) start();
      });
  };
  // A tick during a round is dropped, not queued: rounds never pile up behind a slow one.
  const timer = setInterval(() => {
    if (!busy) start();
  }, intervalMs);
  timer.unref();
  return {
    stop: async () => {
      stopped = true;
      clearInterval(timer);
      // A round started right after the awaited one is awaited too.
      while (busy) await running;
    },
    wake: () => {
      if (stopped) return;
      if (busy) wanted = true;
      else start();
    },
  };
}
