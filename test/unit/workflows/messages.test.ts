import { MESSAGE_ARGUMENTS, argumentProblem, type CheckedMessage } from '../../../src/workflows/messages';

/**
 * The argument checks of the tenant workflow's messages: pure, so the update validators, the
 * `usageEstimate` query and the signal handlers share them. Every refusal names the expected shape.
 */
const valid: Record<CheckedMessage, unknown[]> = {
  recordUsage: [
    { events: 0, highest_seq: null },
    { events: 12, highest_seq: '9007199254740993' },
  ],
  alertRulesChanged: [{}, { upsert: [{ id: 'r1', subject: 'tokens', threshold: 50 }] }, { removed: ['r1'] }],
  authorize: [
    { id: 'a1', metric: 'tokens', quantity: 0 },
    { id: 'a1', metric: 'tokens', quantity: '12.5' },
  ],
  usageEstimate: [
    { metric: 'tokens', quantity: 60 },
    { metric: 'tokens', quantity: 0.000001 },
  ],
  closePeriod: [undefined, null, {}, { finalize: true }, { finalize: false }],
  cancelSubscription: [undefined, null],
  alertRulesStored: [undefined, null],
  entitlementsChanged: [undefined, null, {}, { granted: true }],
};

const invalid: Array<[CheckedMessage, unknown, string]> = [
  ['usageEstimate', undefined, 'got no argument'],
  ['usageEstimate', null, 'got null'],
  ['usageEstimate', 'tokens', 'got "tokens"'],
  ['usageEstimate', [], 'got []'],
  ['usageEstimate', { quantity: 1 }, 'metric is missing'],
  ['usageEstimate', { metric: '', quantity: 1 }, 'metric is ""'],
  ['usageEstimate', { metric: 'tokens' }, 'quantity is missing'],
  ['usageEstimate', { metric: 'tokens', quantity: -5 }, 'quantity -5 is negative'],
  ['usageEstimate', { metric: 'tokens', quantity: 'abc' }, 'quantity abc is not a decimal number'],
  ['usageEstimate', { metric: 'tokens', quantity: 1.1234567 }, 'quantity 1.1234567 has more than 6 decimal places'],
  ['usageEstimate', { metric: 'tokens', quantity: true }, 'quantity is true'],
  ['authorize', undefined, 'got no argument'],
  ['authorize', { metric: 'tokens', quantity: 5 }, 'id is missing'],
  ['authorize', { id: 'a1', metric: 'tokens', quantity: Number.POSITIVE_INFINITY }, 'quantity Infinity is not finite'],
  ['closePeriod', { finalize: 'yes' }, 'finalize is "yes"'],
  ['entitlementsChanged', { granted: 'yes' }, 'granted is "yes"'],
  ['closePeriod', true, 'got true'],
  ['cancelSubscription', { finalize: true }, 'got {"finalize":true}'],
  ['alertRulesStored', { upsert: [] }, 'got {"upsert":[]}'],
  ['recordUsage', undefined, 'got no argument'],
  ['recordUsage', { highest_seq: null }, 'events is missing'],
  ['recordUsage', { events: [{ id: 'e1' }], highest_seq: null }, 'events is [{"id":"e1"}]'],
  ['recordUsage', { events: 3, highest_seq: 7 }, 'highest_seq is 7'],
  ['alertRulesChanged', { upsert: [{ id: 'r1', subject: 'tokens' }] }, 'upsert[0] is {"id":"r1","subject":"tokens"}'],
  ['alertRulesChanged', { removed: 'r1' }, 'removed is "r1"'],
];

describe.each(Object.keys(valid) as CheckedMessage[])('%s', (message) => {
  test.each(valid[message].map((v) => [JSON.stringify(v) ?? 'undefined', v]))('accepts %s', (_shown, value) => {
    expect(argumentProblem(message, value)).toBeUndefined();
  });
});

test.each(invalid.map(([m, v, why]) => [m, JSON.stringify(v) ?? 'undefined', v, why] as const))(
  '%s refuses %s, naming what it expects and what was wrong',
  (message, _shown, value, why) => {
    expect(argumentProblem(message, value)).toBe(`${message} expects ${MESSAGE_ARGUMENTS[message]}; ${why}`);
  },
);

test('the usageEstimate error is the one the Temporal UI shows for the query without its argument', () => {
  expect(argumentProblem('usageEstimate', undefined)).toBe('usageEstimate expects { metric: string, quantity: number >= 0 }; got no argument');
});

test('long values are cut short in the message', () => {
  const problem = argumentProblem('usageEstimate', { metric: 'x'.repeat(500), quantity: 'y' });
  expect(problem).toBe(`usageEstimate expects ${MESSAGE_ARGUMENTS.usageEstimate}; quantity y is not a decimal number`);
  const long = argumentProblem('closePeriod', { finalize: 'z'.repeat(500) })!;
  expect(long.length).toBeLessThan(MESSAGE_ARGUMENTS.closePeriod.length + 100);
  expect(long.endsWith('...')).toBe(true);
});
