import fs from 'node:fs';
import path from 'node:path';
import * as messages from '../../../src/workflows/messages';
import { MESSAGE_ARGUMENTS, argumentProblem } from '../../../src/workflows/messages';
import { SEARCH_ATTRIBUTES, invoiceSearchAttributes } from '../../../src/workflows/search-attributes';
import * as S from '../../../src/workflows/summaries';

/**
 * docs/operations.md quotes what the Temporal UI shows. This test rebuilds every quoted example
 * from the code, for the doc's sample tenant, so the page cannot drift from what the workflows
 * emit: a summary changed in code fails here until the doc says the same, and the other way round.
 */
const DOC = fs.readFileSync(path.resolve(__dirname, '../../../docs/operations.md'), 'utf8');

/** The text between `<!-- name -->` and `<!-- /name -->`. */
function block(name: string): string {
  const match = new RegExp(`<!-- ${name} -->\\n([\\s\\S]*?)<!-- /${name} -->`).exec(DOC);
  if (!match) throw new Error(`docs/operations.md has no <!-- ${name} --> block`);
  return match[1]!;
}

/** The cells of a markdown table's body rows (header and separator dropped). */
function rows(table: string): string[][] {
  return table
    .split('\n')
    .filter((line) => line.startsWith('|'))
    .slice(2)
    .map((line) => line.slice(1, -1).split(' | ').map((cell) => cell.trim()));
}

/** The `code spans` of a cell. */
function spans(cell: string): string[] {
  return [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
}

// The doc's sample tenant.
const tenant = { id: 'acme', name: 'Acme Corp' };
const plan = { id: 'growth', version: 3, interval: 'month' as const };
const anchor = '2026-01-15T00:00:00.000Z';
const period = { start: '2026-03-15T00:00:00.000Z', end: '2026-04-15T00:00:00.000Z' };
const previous = { start: '2026-02-15T00:00:00.000Z', grace_ends_at: '2026-03-15T01:00:00.000Z' };
const graceEndsAt = '2026-04-15T01:00:00.000Z';
const invoice = { tenant_id: tenant.id, period_start: period.start, period_end: period.end, grace_ends_at: graceEndsAt, version: 1 };

test('the summaries table quotes exactly what the code emits, in order', () => {
  const expected = [
    S.tenantRunSummary(tenant.id, tenant.name),
    S.tenantRunDetails(plan, anchor, 'UTC'),
    S.restoreSummary(),
    S.claimSummary(),
    S.consumeSummary({ id: 'r1', metric: 'tokens', quantity: '10' }),
    S.alertRulesSummary(),
    S.recordAlertsSummary([{ subject: 'tokens', threshold: 90, status: 'notified' }]),
    S.recordAlertsSummary([
      { subject: 'tokens', threshold: 80, status: 'superseded' },
      { subject: 'tokens', threshold: 90, status: 'notified' },
    ]),
    S.recordAlertsSummary([{ subject: 'tokens', threshold: 100, status: 'notified' }], previous.start),
    S.alertDeliverySummary(tenant.id, 'tokens', 90),
    S.notifyAlertSummary('tokens', 90),
    S.notifyAlertSummary('$cost', 100),
    S.recordAndNotifySummary(
      [
        { subject: 'tokens', threshold: 80, status: 'superseded' },
        { subject: 'tokens', threshold: 90, status: 'notified' },
      ],
      { subject: 'tokens', threshold: 90 },
    ),
    S.rolloverSummary(period.start, period.end, false),
    S.rolloverSummary(period.start, period.end, true),
    S.periodEndTimerSummary(period.end),
    S.graceEndTimerSummary(previous.grace_ends_at),
    S.invoiceRunSummary(invoice),
    S.graceEndTimerSummary(graceEndsAt),
    S.FINALIZE_INVOICE_SUMMARY,
    S.invoiceWebhookSummary('invoice.finalized'),
    S.rerunInvoiceSummary({ version: 2, plan: { id: 'growth', version: 4 } }),
    S.invoiceWebhookSummary('invoice.voided'),
    S.invoiceWebhookSummary('invoice.finalized'),
  ];
  const quoted = rows(block('summaries')).flatMap((cells) => spans(cells[1]!));
  expect(quoted).toEqual(expected);
});

test('the current details sample is what a run publishes', () => {
  const sample = /```markdown\n([\s\S]*?)\n```/.exec(block('current-details'));
  expect(sample).not.toBeNull();
  expect(sample![1]).toBe(
    S.tenantCurrentDetails({
      tenantId: tenant.id,
      tenantName: tenant.name,
      plan,
      billingAnchor: anchor,
      timezone: 'UTC',
      period,
      meters: [
        { metric: 'tokens', used: '950', limit: 1000 },
        { metric: 'storage_gb', used: '12.5' },
      ],
      alertLevel: 'critical',
      closing: [previous],
    }),
  );
});

test('the prose quotes the static summary and details, and the error of usageEstimate without its argument', () => {
  expect(DOC).toContain(`summary "${S.tenantRunSummary(tenant.id, tenant.name)}"`);
  expect(DOC.replace(/\s+/g, ' ')).toContain(`details "${S.tenantRunDetails(plan, anchor, 'UTC')}"`);
  expect(DOC).toContain(`\`${argumentProblem('usageEstimate', undefined)}\``);
  expect(DOC).toContain(`\`${S.tenantRunSummary(tenant.id)}\``);
});

test('the messages table lists every signal, query and update, with the argument each checks', () => {
  const defined = Object.values(messages as Record<string, unknown>)
    .filter((v): v is { type: string; name: string } => typeof v === 'object' && v !== null && 'type' in v && 'name' in v)
    .filter((v) => ['signal', 'query', 'update'].includes(v.type));
  const documented = rows(block('messages')).map(([name, kind, argument]) => ({
    name: spans(name!)[0]!,
    kind: kind!.split(' ')[0],
    argument: spans(argument!)[0] ?? argument,
  }));
  expect(documented.map((d) => d.name).sort()).toEqual(defined.map((d) => d.name).sort());
  for (const doc of documented) {
    expect(doc.kind).toBe(defined.find((d) => d.name === doc.name)!.type);
    const expects = (MESSAGE_ARGUMENTS as Record<string, string>)[doc.name];
    expect(doc.argument).toBe(expects ?? 'none');
  }
});

test('the search attributes table lists the registered attributes and what invoice workflows carry', () => {
  const documented = rows(block('search-attributes')).map(([name, type, , onInvoices]) => ({
    name: spans(name!)[0]!,
    type: type!,
    onInvoices: onInvoices!.startsWith('yes'),
  }));
  const typeNames: Record<string, string> = { KEYWORD: 'Keyword', DATETIME: 'Datetime' };
  expect(documented.map((d) => `${d.name}:${d.type}`).sort()).toEqual(
    Object.values(SEARCH_ATTRIBUTES)
      .map((k) => `${k.name}:${typeNames[k.type]}`)
      .sort(),
  );
  const onInvoices = invoiceSearchAttributes('acme', period.start).map((p) => p.key.name);
  expect(documented.filter((d) => d.onInvoices).map((d) => d.name)).toEqual(onInvoices);
});
