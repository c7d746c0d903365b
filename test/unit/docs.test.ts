import fs from 'node:fs';
import path from 'node:path';
import { CONFIG_VARIABLES, loadConfig } from '../../src/config';
import { FUTURE_TOLERANCE_MS } from '../../src/domain/placement';
import { MAX_BODY_DEPTH } from '../../src/api/body-guard';
import { RUN_ANSWER_DEADLINE_MS } from '../../src/api/billing-gateway';
import { CLAIM_LIMIT } from '../../src/activities/ledger';
import { KEPT_AUTHORIZATIONS } from '../../src/workflows/tenant-ledger';
import { MAX_ALERT_RULES_PER_TENANT } from '../../src/db/alerts';
import { TENANT_BILLING_PATCHES } from '../../src/workflows/patches';

/**
 * The documents state what the code does; these checks keep the cheap-to-check statements true.
 * A change on either side (a new variable, a new error code, a renamed test or file) fails here
 * until the document says the same as the code.
 */
const ROOT = path.resolve(__dirname, '../..');
const read = (file: string) => fs.readFileSync(path.join(ROOT, file), 'utf8');

/** The documents these checks hold to the code. */
const DOCS = ['README.md', 'SECURITY.md', 'docs/api.md', 'docs/billing.md', 'docs/architecture.md', 'docs/webhooks.md', 'docs/design/core-v2.md'];

/** The text of a markdown section: from its heading to the next heading of the same or a higher level. */
function section(doc: string, heading: string): string {
  const lines = doc.split('\n');
  const start = lines.findIndex((l) => l.trim() === heading);
  if (start < 0) throw new Error(`no heading "${heading}"`);
  const level = heading.indexOf(' ');
  const end = lines.findIndex((l, i) => i > start && /^#+ /.test(l) && l.indexOf(' ') <= level);
  return lines.slice(start + 1, end < 0 ? undefined : end).join('\n');
}

/** The body rows of the first markdown table in `text`, as trimmed cells. */
function firstTable(text: string): string[][] {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => l.startsWith('|'));
  const rows: string[][] = [];
  for (let i = start + 2; i < lines.length && lines[i]!.startsWith('|'); i += 1) {
    rows.push(lines[i]!.slice(1, -1).split(' | ').map((c) => c.trim()));
  }
  return rows;
}

/** The `code spans` of a markdown cell. */
function spans(cell: string): string[] {
  return [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
}

/** The `.ts` files under a directory, recursively. */
function sources(dir: string): string[] {
  return fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true }).flatMap((e) => {
    const rel = path.join(dir, e.name);
    if (e.isDirectory()) return sources(rel);
    return e.name.endsWith('.ts') ? [rel] : [];
  });
}

describe('README.md', () => {
  const readme = read('README.md');

  test('the quick start is exactly two commands: npm start and npm test', () => {
    const block = /```sh\n([\s\S]*?)```/.exec(section(readme, '## Quick start'))![1]!;
    const commands = block.split('\n').filter((l) => l.trim() !== '').map((l) => l.replace(/#.*$/, '').trim());
    expect(commands).toEqual(['npm start', 'npm test']);
  });

  test('the configuration table lists exactly the variables src/config.ts reads, with their defaults', () => {
    const rows = firstTable(section(readme, '## Configuration'));
    const documented = new Map<string, string>();
    for (const [names, defaults] of rows) {
      const variables = spans(names!);
      const values = spans(defaults!);
      variables.forEach((name, i) => documented.set(name, defaults === 'unset' ? 'unset' : values[i] ?? '?'));
    }
    expect([...documented.keys()].sort()).toEqual([...CONFIG_VARIABLES].sort());
    const defaults = loadConfig({}) as unknown as Record<string, unknown>;
    for (const name of CONFIG_VARIABLES) {
      const expected = defaults[name] === undefined ? 'unset' : String(defaults[name]);
      expect({ name, default: documented.get(name) }).toEqual({ name, default: expected });
    }
  });

  test('every environment variable the tests read is documented', () => {
    const files = sources('test').map(read);
    const setByTests = new Set(files.flatMap((text) => [...text.matchAll(/process\.env\.([A-Z_]+)\s*=[^=]/g)].map((m) => m[1]!)));
    const readByTests = new Set(files.flatMap((text) => [...text.matchAll(/process\.env\.([A-Z_]+)/g)].map((m) => m[1]!)));
    const undocumented = [...readByTests].filter((name) => !setByTests.has(name) && !readme.includes(`\`${name}`));
    expect(undocumented).toEqual([]);
  });

  test('the test layout names every integration test file, and every test file it names exists', () => {
    const development = section(readme, '## Development');
    const files = fs.readdirSync(path.join(ROOT, 'test/integration')).filter((f) => f.endsWith('.test.ts'));
    expect(files.filter((f) => !development.includes(`\`${f}\``))).toEqual([]);
    const named = [...development.matchAll(/`([\w.-]+\.test\.ts)`/g)].map((m) => m[1]!);
    const exists = (f: string) => ['test/integration', 'test/unit', ...fs.readdirSync(path.join(ROOT, 'test/unit')).map((d) => `test/unit/${d}`)].some((dir) => fs.existsSync(path.join(ROOT, dir, f)));
    expect(named.filter((f) => !exists(f))).toEqual([]);
  });
});

describe('docs/api.md', () => {
  const api = read('docs/api.md');
  const table = firstTable(section(api, '## Errors')).map(([code, status]) => ({ code: spans(code!)[0]!, status: Number(status) }));

  test('the error table has exactly the problem codes of src/api/errors.ts', () => {
    const union = /export type ProblemCode =([\s\S]*?);/.exec(read('src/api/errors.ts'))![1]!;
    const codes = [...union.matchAll(/'([a-z_]+)'/g)].map((m) => m[1]!);
    expect([...new Set(table.map((r) => r.code))].sort()).toEqual([...codes].sort());
  });

  test('every status a code is answered with in src/api is in the error table', () => {
    const pairs = new Set<string>();
    for (const file of sources('src/api')) {
      for (const m of read(file).matchAll(/new ApiError\(\s*(\d{3}),\s*'([a-z_]+)'/g)) pairs.add(`${m[1]} ${m[2]}`);
    }
    // Refused events keep the code placement gave them; subscription_cancelled is the 409 among them.
    expect(read('src/api/routes/usage.ts')).toContain("code === 'subscription_cancelled' ? 409 : 422");
    for (const code of ['late_event', 'future_event', 'unknown_metric']) pairs.add(`422 ${code}`);
    pairs.add('409 subscription_cancelled');
    const documented = new Set(table.map((r) => `${r.status} ${r.code}`));
    expect([...pairs].filter((p) => !documented.has(p)).sort()).toEqual([]);
  });

  test('the PDF font statement names the fonts the renderer embeds', () => {
    expect(read('src/invoices/pdf.ts')).toContain("regular: 'DejaVuSans.ttf'");
    expect(api).toContain(
      'Invoice PDFs set all text in embedded DejaVu Sans, so names, plan names and\n  descriptions in Latin, Greek, Cyrillic, Armenian, Georgian and Hebrew print as text, while\n  Chinese, Japanese and Korean characters, which DejaVu Sans lacks, print as empty boxes and\n  cannot be copied from the PDF.',
    );
  });

  test('the figures the docs quote are the ones in the code', () => {
    const billing = read('docs/billing.md');
    const architecture = read('docs/architecture.md');
    expect(FUTURE_TOLERANCE_MS).toBe(5 * 60_000);
    expect(api).toContain('more than 5 minutes after');
    expect(billing).toContain('more than 5 minutes after the receive time');
    expect(RUN_ANSWER_DEADLINE_MS).toBe(10_000);
    expect(api).toContain('within 10 seconds');
    expect(api).toContain(`nests more than ${MAX_BODY_DEPTH} levels deep`);
    expect(api).toContain(`latest ${KEPT_AUTHORIZATIONS.toLocaleString('en-US')} answers`);
    expect(billing).toContain(`up to ${CLAIM_LIMIT.toLocaleString('en-US')} events`);
    expect(architecture).toContain(`adds up to ${CLAIM_LIMIT.toLocaleString('en-US')} events between the watermark and the barrier`);
    expect(api).toContain(`A tenant holds at most ${MAX_ALERT_RULES_PER_TENANT} rules at once`);
    expect(read('SECURITY.md')).toContain(`A tenant holds at most ${MAX_ALERT_RULES_PER_TENANT} alert rules`);
  });
});

describe('docs/architecture.md', () => {
  test('the patch table lists exactly the registered patches, oldest first', () => {
    const table = firstTable(section(read('docs/architecture.md'), '## Changing workflow code'));
    expect(table.map((row) => spans(row[0]!)[0])).toEqual(Object.values(TENANT_BILLING_PATCHES));
  });
});

describe('SECURITY.md', () => {
  test('every test it cites exists under that name', () => {
    const doc = read('SECURITY.md');
    const missing: string[] = [];
    let cited = 0;
    // A citation is `file` › "name" (more names may follow, separated by commas or "and"), up to
    // the next cited file or the end of the table cell. "…" marks a shortened name.
    for (const m of doc.matchAll(/`([\w./-]+\.test\.ts)` › ((?:[^`|\\]|\\.)*)/g)) {
      const file = m[1]!.includes('/') ? m[1]! : ['test/integration', 'test/unit'].map((d) => `${d}/${m[1]}`).find((f) => fs.existsSync(path.join(ROOT, f)));
      if (!file || !fs.existsSync(path.join(ROOT, file))) {
        missing.push(`${m[1]} (no such file)`);
        continue;
      }
      const source = read(file);
      for (const q of m[2]!.matchAll(/"((?:[^"\\]|\\.)+)"/g)) {
        const name = q[1]!.replace(/\\"/g, '"');
        const parts = name.split('…').filter((p) => p.length > 0);
        cited += 1;
        if (!parts.every((p) => source.includes(p))) missing.push(`${m[1]} › "${name}"`);
      }
    }
    expect(cited).toBeGreaterThan(30);
    expect(missing).toEqual([]);
  });
});

describe('every document', () => {
  test('names only repository paths that exist', () => {
    const missing: string[] = [];
    for (const doc of DOCS) {
      for (const m of read(doc).matchAll(/`((?:src|test|docs|scripts|migrations|chaos|bench)\/[^`\s*<>…]+)`/g)) {
        if (!fs.existsSync(path.join(ROOT, m[1]!))) missing.push(`${doc}: ${m[1]}`);
      }
    }
    expect(missing).toEqual([]);
  });

  test('relative links point to files and headings that exist', () => {
    const broken: string[] = [];
    for (const doc of DOCS) {
      for (const m of read(doc).matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1]!;
        if (/^[a-z]+:/.test(target)) continue;
        const [file, anchor] = target.split('#') as [string, string | undefined];
        const resolved = file === '' ? doc : path.join(path.dirname(doc), file);
        if (!fs.existsSync(path.join(ROOT, resolved))) {
          broken.push(`${doc}: ${target}`);
          continue;
        }
        if (anchor !== undefined && !anchors(read(resolved)).has(anchor)) broken.push(`${doc}: ${target}`);
      }
    }
    expect(broken).toEqual([]);
  });
});

/** The anchors GitHub gives a markdown file's headings. */
function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const result = new Set<string>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    const heading = !fenced && /^#{1,6} (.*)$/.exec(line);
    if (!heading) continue;
    const slug = heading[1]!
      .trim()
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    result.add(n === 0 ? slug : `${slug}-${n}`);
  }
  return result;
}
