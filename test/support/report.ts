/**
 * A green `npm test` prints jest's summary and little else. TEST_VERBOSE=1 brings back what a
 * run can tell beyond pass or fail: the figures tests measure (start and stop times, coalescing,
 * request counts) and the Temporal SDK's warnings about activity failures that tests inject.
 */
export const VERBOSE = process.env.TEST_VERBOSE === '1';

/** Prints a figure a test measured, under TEST_VERBOSE=1 only. */
export function report(line: string): void {
  if (VERBOSE) console.log(line);
}
