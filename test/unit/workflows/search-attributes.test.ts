import fs from 'node:fs';
import path from 'node:path';
import { SEARCH_ATTRIBUTES, invoiceSearchAttributes } from '../../../src/workflows/search-attributes';

/**
 * Every place that registers tally's search attributes registers the ones the workflows use,
 * with the same types: a workflow that sets an unregistered attribute fails its task (or its
 * start), and only on the servers where the lists drifted apart.
 */
const ROOT = path.resolve(__dirname, '../../..');
const TYPE_NAMES: Record<string, string> = { KEYWORD: 'Keyword', DATETIME: 'Datetime', TEXT: 'Text', INT: 'Int', DOUBLE: 'Double', BOOL: 'Bool' };

/** `Name:Type`, sorted: what the code defines. */
const defined = Object.values(SEARCH_ATTRIBUTES)
  .map((key) => `${key.name}:${TYPE_NAMES[key.type]}`)
  .sort();

test('the code defines the five attributes of API.md', () => {
  expect(defined).toEqual(['AlertLevel:Keyword', 'BillingPeriodEnd:Datetime', 'BillingPeriodStart:Datetime', 'PlanId:Keyword', 'TenantId:Keyword']);
});

test("docker-compose's temporal-init registers exactly those", () => {
  const compose = fs.readFileSync(path.join(ROOT, 'docker-compose.yml'), 'utf8');
  const registered = [...compose.matchAll(/register --name (\w+) --type (\w+)/g)].map((m) => `${m[1]}:${m[2]}`).sort();
  expect(registered).toEqual(defined);
});

test('the chaos stack registers exactly those', () => {
  const stack = fs.readFileSync(path.join(ROOT, 'chaos/stack.ts'), 'utf8');
  const list = /const SEARCH_ATTRIBUTES = \[([^\]]*)\]/.exec(stack);
  expect(list).not.toBeNull();
  const registered = [...list![1]!.matchAll(/'(\w+)=(\w+)'/g)].map((m) => `${m[1]}:${m[2]}`).sort();
  expect(registered).toEqual(defined);
});

test('the embedded dev server registers them from the same definition', () => {
  const server = fs.readFileSync(path.join(ROOT, 'src/platform/temporal-server.ts'), 'utf8');
  expect(server).toMatch(/searchAttributes: Object\.values\(SEARCH_ATTRIBUTES\)/);
  expect(server).toMatch(/from '\.\.\/workflows\/search-attributes'/);
});

test('invoice workflows carry TenantId and BillingPeriodStart, both registered', () => {
  const pairs = invoiceSearchAttributes('acme', '2026-03-15T00:00:00.000Z');
  expect(pairs.map((p) => p.key.name)).toEqual(['TenantId', 'BillingPeriodStart']);
  expect(pairs.map((p) => p.value)).toEqual(['acme', new Date('2026-03-15T00:00:00.000Z')]);
  for (const pair of pairs) expect(Object.values(SEARCH_ATTRIBUTES)).toContain(pair.key);
});
