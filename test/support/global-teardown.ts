/** Stops what the global set-up started, leaving no process behind. */
export default async function globalTeardown(): Promise<void> {
  await globalThis.__TALLY_STACK_STOP__?.();
}
