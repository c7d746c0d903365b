import { useMemo, useState } from 'preact/hooks';
import { api, ApiProblem, enc, listAll, optional, query, type Page } from './api';
import { alertLevelRank, formatDateTime, formatMoney, formatPercent, formatQuantity, meterLevel } from './format';
import type { Alert, Summary, Tenant } from './types';
import { ErrorNote, MeterBar, useLoad, TableHead, TableWrap } from './ui';

type SortKey = 'name' | 'usage' | 'cost' | 'alert';

/** Every tenant with its current usage, cost and alert level; sortable, searchable. */
export function TenantsPage() {
  const [search, setSearch] = useState('');
  const [sort, setSort] = useState<{ key: SortKey; descending: boolean }>({ key: 'usage', descending: true });
  const tenants = useLoad(
    async () => (await listAll<Tenant>((after) => `/v1/tenants${query({ limit: 100, include: 'usage', starting_after: after })}`, (t) => t.id)) ?? [],
    [],
  );
  const rows = useMemo(() => {
    const needle = search.trim().toLowerCase();
    const found = (tenants.data ?? []).filter((t) => !needle || t.id.toLowerCase().includes(needle) || t.name.toLowerCase().includes(needle));
    const value = (t: Tenant): number | string => {
      switch (sort.key) {
        case 'usage':
          return t.usage?.percent ?? -1;
        case 'cost':
          return Number(t.usage?.total ?? 0);
        case 'alert':
          return alertLevelRank(t.usage?.alert_level);
        default:
          return t.name.toLowerCase();
      }
    };
    return [...found].sort((a, b) => {
      const va = value(a);
      const vb = value(b);
      const order = va < vb ? -1 : va > vb ? 1 : a.id.localeCompare(b.id);
      return sort.descending ? -order : order;
    });
  }, [tenants.data, search, sort]);
  const header = (key: SortKey, label: string, numeric = false) => {
    const active = sort.key === key;
    return (
      <th scope="col" class={numeric ? 'num' : undefined} aria-sort={active ? (sort.descending ? 'descending' : 'ascending') : 'none'}>
        <button type="button" class="sort" onClick={() => setSort({ key, descending: active ? !sort.descending : key !== 'name' })}>
          {label}
          <span aria-hidden="true">{active ? (sort.descending ? ' ▼' : ' ▲') : ''}</span>
        </button>
      </th>
    );
  };
  return (
    <main id="main" class="page">
      <header class="page-head">
        <h1>Tenants</h1>
        <p class="muted">Current period usage (the fullest meter), running cost and alert level of every tenant.</p>
      </header>
      <label class="search">
        Search tenants
        <input type="search" name="search" placeholder="name or id" value={search} onInput={(e) => setSearch(e.currentTarget.value)} />
      </label>
      <ErrorNote error={tenants.error} />
      <TableWrap label="Tenants" class="card">
        <table class="tenants" aria-busy={tenants.loading ? 'true' : 'false'}>
          <caption class="visually-hidden">Tenants</caption>
          <thead>
            <tr>
              {header('name', 'Tenant')}
              {header('usage', 'Usage', true)}
              {header('cost', 'Cost', true)}
              {header('alert', 'Alert level')}
            </tr>
          </thead>
          <tbody>
            {rows.map((t) => (
              <tr key={t.id} data-tenant-id={t.id}>
                <td>
                  <a href={`#/tenants/${enc(t.id)}`}>{t.name}</a> <span class="muted">{t.id}</span>
                  {t.status !== 'active' ? <span class="status status-void"> {t.status}</span> : null}
                </td>
                <td class="num usage-cell">
                  {t.usage?.percent !== null && t.usage?.percent !== undefined ? (
                    <>
                      <span class={`badge level-${meterLevel(t.usage.percent)}`}>{formatPercent(t.usage.percent)}</span>
                      <MeterBar percent={t.usage.percent} label={`${t.name}: fullest meter`} />
                    </>
                  ) : (
                    '—'
                  )}
                </td>
                <td class="num">{t.usage ? formatMoney(t.usage.total, t.usage.currency) : '—'}</td>
                <td>
                  <span class={`status status-${t.usage?.alert_level ?? 'none'}`}>{t.usage?.alert_level ?? 'none'}</span>
                </td>
              </tr>
            ))}
            {tenants.data && rows.length === 0 ? (
              <tr>
                <td colSpan={4} class="empty">
                  No tenants found
                </td>
              </tr>
            ) : null}
          </tbody>
        </table>
      </TableWrap>
    </main>
  );
}

/** Open alerts of every tenant, to mark as seen (where the API has alert triage). */
export function AlertsPage() {
  const alerts = useLoad(() => optional<Page<Alert>>(`/v1/alerts${query({ acknowledged: 'false', limit: 100 })}`), []);
  const [error, setError] = useState<Error | undefined>();
  return (
    <main id="main" class="page">
      <header class="page-head">
        <h1>Open alerts</h1>
      </header>
      <ErrorNote error={alerts.error ?? error} />
      {!alerts.loading && !alerts.data && !alerts.error ? <p class="muted">This API has no alert triage yet: see each tenant's page for its alerts.</p> : null}
      {alerts.data && alerts.data.data.length === 0 ? <p class="muted">No open alerts.</p> : null}
      {alerts.data && alerts.data.data.length > 0 ? (
        <TableWrap label="Open alerts" class="card">
          <table>
            <TableHead caption="Open alerts" columns={[{ label: 'Tenant' }, { label: 'Alert' }, { label: 'Fired' }, { label: 'Action' }]} />
            <tbody>
              {alerts.data.data.map((a) => (
                <tr key={a.id} data-alert-id={a.id}>
                  <td>
                    <a href={`#/tenants/${enc(a.tenant_id ?? '')}`}>{a.tenant_id}</a>
                  </td>
                  <td>
                    <span class={`status status-${a.level}`}>{a.level}</span> {a.metric ?? 'cost'} at {a.threshold} % ({formatQuantity(a.metric ?? '', a.used)} of {formatQuantity(a.metric ?? '', a.limit)})
                  </td>
                  <td>{formatDateTime(a.fired_at)}</td>
                  <td>
                    <button
                      type="button"
                      class="small"
                      aria-label={`Acknowledge the ${a.threshold} % alert of ${a.tenant_id} on ${a.metric ?? 'cost'}`}
                      onClick={() =>
                        api.post(`/v1/tenants/${enc(a.tenant_id ?? '')}/alerts/${enc(a.id)}/acknowledge`).then(
                          () => alerts.reload(),
                          (err: Error) => setError(err),
                        )
                      }
                    >
                      Acknowledge
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </TableWrap>
      ) : null}
    </main>
  );
}

function previousMonth(): string {
  const d = new Date();
  d.setUTCDate(1);
  d.setUTCMonth(d.getUTCMonth() - 1);
  return d.toISOString().slice(0, 7);
}

/** Monthly summaries of every tenant, with the month before, and a CSV download. */
export function SummariesPage() {
  const [month, setMonth] = useState(previousMonth());
  const summaries = useLoad(() => listAll<Summary>((after) => `/v1/summaries${query({ month, sort: '-total', limit: 100, starting_after: after })}`, (s) => s.id), [month]);
  const metrics = useMemo(() => [...new Set((summaries.data ?? []).flatMap((s) => Object.keys(s.metrics)))].sort(), [summaries.data]);
  const [csvError, setCsvError] = useState<Error | undefined>();
  // The API writes the CSV (`Accept: text/csv`, the whole month); the browser only saves it.
  const downloadCsv = () => {
    api.download(`/v1/summaries${query({ month, sort: '-total' })}`, 'text/csv').then(
      (blob) => {
        const url = URL.createObjectURL(blob);
        const a = document.createElement('a');
        a.href = url;
        a.download = `tally-summaries-${month}.csv`;
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 10_000);
        setCsvError(undefined);
      },
      (err: Error) => setCsvError(err),
    );
  };
  const unsupported = summaries.error instanceof ApiProblem && summaries.error.status === 404;
  return (
    <main id="main" class="page">
      <header class="page-head">
        <h1>Monthly summaries</h1>
      </header>
      <div class="toolbar">
        <label>
          Month
          <input type="month" name="month" value={month} onInput={(e) => e.currentTarget.value && setMonth(e.currentTarget.value)} />
        </label>
        {summaries.data && summaries.data.length > 0 ? (
          <button type="button" class="primary" onClick={downloadCsv}>
            Download CSV
          </button>
        ) : null}
      </div>
      {!unsupported ? <ErrorNote error={summaries.error ?? csvError} /> : null}
      {!summaries.loading && !summaries.data ? <p class="muted">This API has no monthly summaries yet.</p> : null}
      {summaries.data && summaries.data.length === 0 ? <p class="muted">No usage in {month}.</p> : null}
      {summaries.data && summaries.data.length > 0 ? (
        <TableWrap label="Monthly summaries" class="card">
          <table>
            <TableHead
              caption={`Summaries for ${month}`}
              columns={[{ label: 'Tenant' }, ...metrics.map((m) => ({ label: m, numeric: true })), { label: 'Total', numeric: true }, { label: 'vs. month before', numeric: true }]}
            />
            <tbody>
              {summaries.data.map((s) => (
                <tr key={s.id} data-summary-id={s.id}>
                  <td>
                    <a href={`#/tenants/${enc(s.tenant_id)}`}>{s.tenant_id}</a>
                    {s.final === false ? <span class="muted"> (period open: figures still move)</span> : null}
                  </td>
                  {metrics.map((m) => (
                    <td key={m} class="num">
                      {s.metrics[m] ? formatQuantity(m, Number(s.metrics[m]!.used)) : '—'}
                    </td>
                  ))}
                  <td class="num">{formatMoney(s.total, s.currency)}</td>
                  <td class="num">{s.change?.percent !== null && s.change?.percent !== undefined ? `${s.change.percent > 0 ? '+' : ''}${s.change.percent.toFixed(1)}%` : '—'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </TableWrap>
      ) : null}
    </main>
  );
}
