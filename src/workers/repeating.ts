/**
 * Runs `round` every `intervalMs`, one round at a time (a round that outlasts the interval delays
 * the next rather than overlapping it), reporting a failed round to `onError` and going on. The
 * returned function stops it and waits for a round in progress; `round` reads `stopping()` to end
 * early. The timer never keeps the process alive.
 */
export function repeatEvery(
  intervalMs: number,
  round: (stopping: () => boolean) => Promise<void>,
  onError: (err: unknown) => void,
): () => Promise<void> {
  let stopped = false;
  let busy = false;
  let running: Promise<void> = Promise.resolve();
  const timer = setInterval(() => {
    // A tick during a round is dropped, not queued: rounds never pile up behind a slow one.
    if (busy) return;
    busy = true;
    running = round(() => stopped)
      .catch(onError)
      .finally(() => {
        busy = false;
      });
  }, intervalMs);
  timer.unref();
  return async () => {
    stopped = true;
    clearInterval(timer);
    await running;
  };
}
