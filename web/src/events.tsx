import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiProblem, enc, query, type Page } from './api';
import { dayRange, formatCost, formatDateTime, formatQuantity } from './format';
import type { UsageEvent } from './types';
import { ErrorNote, Pager, SkeletonRows, TableHead, TableWrap } from './ui';

export const EVENTS_PAGE_SIZE = 25;

/** The filters of the events table; each active one shows as a removable chip. */
interface Filters {
  from: string;
  to: string;
  metric: string;
  /** Property filters, `key=value`. */
  properties: Array<{ key: string; value: string }>;
}

const NO_FILTERS: Filters = { from: '', to: '', metric: '', properties: [] };

function filterQuery(f: Filters): Record<string, string | undefined> {
  const q: Record<string, string | undefined> = { metric: f.metric || undefined, ...dayRange(f.from, f.to) };
  for (const p of f.properties) q[`property.${p.key}`] = p.value;
  return q;
}

/**
 * The usage-events table: filters, 25 rows a page, a ±2 pager. The API pages by cursor
 * (`starting_after`), so the table remembers the cursor of every page it has seen, and a jump
 * further ahead walks there in pages of 100.
 */
export function EventsTable({ tenantId, metrics }: { tenantId: string; metrics: string[] }) {
  const [filters, setFilters] = useState<Filters>(NO_FILTERS);
  const [draft, setDraft] = useState<Filters>(NO_FILTERS);
  const [propKey, setPropKey] = useState('');
  const [propValue, setPropValue] = useState('');
  const [page, setPage] = useState(1);
  const [rows, setRows] = useState<UsageEvent[] | undefined>(undefined);
  const [total, setTotal] = useState(0);
  const [error, setError] = useState<Error | undefined>(undefined);
  const [loading, setLoading] = useState(true);
  /** Which filters and page the rows shown are for: until the effect below starts loading a new page, the old rows are not it. */
  const [shownFor, setShownFor] = useState<string | undefined>(undefined);
  const showing = JSON.stringify([filters, page, tenantId]);
  const busy = loading || shownFor !== showing;
  const cursors = useRef<Map<number, string | undefined>>(new Map([[1, undefined]]));
  const base = `/v1/tenants/${enc(tenantId)}/events`;

  useEffect(() => {
    cursors.current = new Map([[1, undefined]]);
  }, [filters, tenantId]);

  useEffect(() => {
    let live = true;
    setLoading(true);
    (async () => {
      const q = filterQuery(filters);
      let known = Math.max(...[...cursors.current.keys()].filter((p) => p <= page));
      while (known < page) {
        const want = Math.min(100, (page - known) * EVENTS_PAGE_SIZE);
        const chunk = await api.get<Page<UsageEvent>>(`${base}${query({ ...q, limit: want, starting_after: cursors.current.get(known) })}`);
        const whole = Math.floor(chunk.data.length / EVENTS_PAGE_SIZE);
        for (let j = 1; j <= whole; j += 1) cursors.current.set(known + j, chunk.data[j * EVENTS_PAGE_SIZE - 1]!.id);
        if (whole === 0 || !chunk.has_more) break;
        known += whole;
      }
      const landed = Math.min(page, Math.max(...cursors.current.keys()));
      const result = await api.get<Page<UsageEvent>>(`${base}${query({ ...q, limit: EVENTS_PAGE_SIZE, starting_after: cursors.current.get(landed) })}`);
      if (!live) return;
      if (landed !== page) setPage(landed);
      else setShownFor(showing);
      setRows(result.data);
      setTotal(result.total_count);
      setError(undefined);
      setLoading(false);
    })().catch((err: Error) => {
      if (!live) return;
      setError(err instanceof ApiProblem && err.errors.some((e) => e.path.startsWith('property.')) ? new Error('This API does not filter events by property yet.') : err);
      setShownFor(showing);
      setRows([]);
      setTotal(0);
      setLoading(false);
    });
    return () => {
      live = false;
    };
  }, [filters, page, tenantId]);

  const apply = (next: Filters) => {
    setFilters(next);
    setDraft(next);
    setPage(1);
  };
  const showCost = rows?.some((r) => r.cost !== undefined) ?? false;
  const chips: Array<{ label: string; remove: Filters }> = [];
  if (filters.from) chips.push({ label: `From ${filters.from}`, remove: { ...filters, from: '' } });
  if (filters.to) chips.push({ label: `To ${filters.to}`, remove: { ...filters, to: '' } });
  if (filters.metric) chips.push({ label: `Metric: ${filters.metric}`, remove: { ...filters, metric: '' } });
  filters.properties.forEach((p, i) => chips.push({ label: `${p.key} = ${p.value}`, remove: { ...filters, properties: filters.properties.filter((_, j) => j !== i) } }));

  return (
    <section class="card events" aria-labelledby="events-heading">
      <h2 id="events-heading">Usage events</h2>
      <form
        class="filters"
        aria-label="Filter usage events"
        onSubmit={(e) => {
          e.preventDefault();
          const properties = propKey.trim() && propValue.trim() ? [...draft.properties, { key: propKey.trim(), value: propValue.trim() }] : draft.properties;
          setPropKey('');
          setPropValue('');
          apply({ ...draft, properties });
        }}
      >
        <label>
          From
          <input type="date" name="from" value={draft.from} onInput={(e) => setDraft({ ...draft, from: e.currentTarget.value })} />
        </label>
        <label>
          To
          <input type="date" name="to" value={draft.to} onInput={(e) => setDraft({ ...draft, to: e.currentTarget.value })} />
        </label>
        <div class="field">
          {/* Labelled by `for`, so its name is "Metric" and not the option shown inside it. */}
          <label for="filter-metric">Metric</label>
          <select id="filter-metric" name="metric" value={draft.metric} onChange={(e) => setDraft({ ...draft, metric: e.currentTarget.value })}>
            <option value="">All metrics</option>
            {metrics.map((m) => (
              <option key={m} value={m}>
                {m}
              </option>
            ))}
          </select>
        </div>
        <label>
          Property
          <input type="text" name="property-key" placeholder="e.g. model" value={propKey} onInput={(e) => setPropKey(e.currentTarget.value)} />
        </label>
        <label>
          Value
          <input type="text" name="property-value" placeholder="e.g. gpt-4o" value={propValue} onInput={(e) => setPropValue(e.currentTarget.value)} />
        </label>
        <button type="submit">Apply filters</button>
      </form>
      {chips.length > 0 ? (
        <ul class="chips" aria-label="Active filters">
          {chips.map((c) => (
            <li key={c.label} class="chip">
              {c.label}
              <button type="button" aria-label={`Remove filter ${c.label}`} onClick={() => apply(c.remove)}>
                ×
              </button>
            </li>
          ))}
          <li>
            <button type="button" class="link" onClick={() => apply(NO_FILTERS)}>
              Clear all
            </button>
          </li>
        </ul>
      ) : null}
      <ErrorNote error={error} />
      <TableWrap label="Usage events">
        <table aria-busy={busy ? 'true' : 'false'}>
          <TableHead
            caption="Usage events, newest first"
            columns={[{ label: 'Time' }, { label: 'Metric' }, { label: 'Quantity', numeric: true }, { label: 'Properties' }, showCost && { label: 'Cost', numeric: true }]}
          />
          <tbody>
            {busy ? (
              <SkeletonRows rows={5} cols={showCost ? 5 : 4} />
            ) : rows && rows.length > 0 ? (
              rows.map((r) => (
                <tr key={r.id} data-event-id={r.id}>
                  <td>{formatDateTime(r.timestamp)}</td>
                  <td>{r.metric}</td>
                  <td class="num">{formatQuantity(r.metric, r.quantity)}</td>
                  <td class="props">
                    {r.properties && Object.keys(r.properties).length > 0
                      ? Object.entries(r.properties)
                          .map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`)
                          .join(', ')
                      : '—'}
                  </td>
                  {showCost ? <td class="num">{formatCost(r.cost ?? null)}</td> : null}
                </tr>
              ))
            ) : (
              <tr>
                <td colSpan={showCost ? 5 : 4} class="empty">
                  No usage events found
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </TableWrap>
      <Pager page={page} pageSize={EVENTS_PAGE_SIZE} total={total} onPage={setPage} label="Usage events pages" />
    </section>
  );
}
