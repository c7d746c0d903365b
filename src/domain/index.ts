/**
 * The pure billing domain: exact decimals, plans, periods, counters, rating and alert
 * thresholds. No I/O, no wall clock, no randomness, so Temporal workflow code and
 * activities can both import it and always agree.
 */
export * from './decimal';
export * from './plan';
export * from './periods';
export * from './aggregation';
export * from './rating';
export * from './thresholds';
export * from './forecast';
