import {
  alertSubjectLabel,
  consumeSummary,
  graceEndTimerSummary,
  intervalAdverb,
  periodEndTimerSummary,
  plural,
  recordAlertsSummary,
  rolloverSummary,
  tenantCurrentDetails,
  tenantRunSummary,
} from '../../../src/workflows/summaries';

describe('plural', () => {
  test.each([
    [0, 'event', '0 events'],
    [1, 'event', '1 event'],
    [2, 'event', '2 events'],
    [1_000, 'event', '1000 events'],
    [1, 'alert', '1 alert'],
    [3, 'alert', '3 alerts'],
  ])('%i %s → %s', (count, noun, expected) => {
    expect(plural(count, noun)).toBe(expected);
  });

  test('takes an irregular plural', () => {
    expect(plural(2, 'entry', 'entries')).toBe('2 entries');
    expect(plural(1, 'entry', 'entries')).toBe('1 entry');
  });
});

test('summaries count in plain English', () => {
  expect(consumeSummary({ id: 'r1', metric: 'tokens', quantity: '1.5' })).toBe('consume 1.5 tokens (authorize r1)');
  expect(recordAlertsSummary([{ subject: 'tokens', threshold: 90, status: 'notified' }])).toBe('record 1 alert: tokens 90%');
  expect(
    recordAlertsSummary([
      { subject: '$cost', threshold: 80, status: 'superseded' },
      { subject: '$cost', threshold: 100, status: 'notified' },
    ]),
  ).toBe('record 2 alerts: cost limit 80% (superseded), cost limit 100%');
});

test('periods recur daily, monthly or yearly', () => {
  expect(intervalAdverb('day')).toBe('daily');
  expect(intervalAdverb('month')).toBe('monthly');
  expect(intervalAdverb('year')).toBe('yearly');
});

test('the cost subject reads as the cost limit; metrics keep their names', () => {
  expect(alertSubjectLabel('$cost')).toBe('cost limit');
  expect(alertSubjectLabel('api_calls')).toBe('api_calls');
});

test('a tenant without a known name is summarized by its id', () => {
  expect(tenantRunSummary('acme', 'Acme')).toBe('Billing for Acme (acme)');
  expect(tenantRunSummary('acme')).toBe('Billing for acme');
});

test('timers name the instant they wait for; a rollover names the period it closes', () => {
  expect(periodEndTimerSummary('2026-04-01T00:00:00.000Z')).toBe('period end 2026-04-01T00:00:00.000Z');
  expect(graceEndTimerSummary('2026-04-01T01:00:00.000Z')).toBe('grace end 2026-04-01T01:00:00.000Z');
  expect(rolloverSummary('2026-03-01T00:00:00.000Z', '2026-03-20T10:00:00.000Z', false)).toBe(
    'roll over: close 2026-03-01T00:00:00.000Z → 2026-03-20T10:00:00.000Z, open the next period',
  );
  expect(rolloverSummary('2026-03-01T00:00:00.000Z', '2026-03-20T10:00:00.000Z', true)).toBe('cancel: close the final period 2026-03-01T00:00:00.000Z → 2026-03-20T10:00:00.000Z');
});

test('current details start with the run summary and list every meter, limit or not', () => {
  const details = tenantCurrentDetails({
    tenantId: 'acme',
    tenantName: 'Acme',
    plan: { id: 'p', version: 1, interval: 'day' },
    billingAnchor: '2026-01-01T00:00:00.000Z',
    timezone: 'Europe/Paris',
    period: { start: '2026-01-02T00:00:00.000Z', end: '2026-01-03T00:00:00.000Z' },
    meters: [
      { metric: 'a', used: '0', limit: 10 },
      { metric: 'b', used: '1.5' },
    ],
    alertLevel: 'none',
    closing: [],
  });
  expect(details.split('\n\n')).toEqual([
    '**Billing for Acme (acme)**',
    'Plan p v1, daily periods from 2026-01-01T00:00:00.000Z (Europe/Paris).',
    '**Period** 2026-01-02T00:00:00.000Z → 2026-01-03T00:00:00.000Z (plan p v1)',
    'a: 0 / 10',
    'b: 1.5',
    'alert level: none',
  ]);
});
