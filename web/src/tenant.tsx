import { useState } from 'preact/hooks';
import { api, enc, optional, query, type Page } from './api';
import { HistoryChart } from './chart';
import { EventsTable } from './events';
import { FinancePanels, RerunButton } from './finance';
import { formatDate, formatDateTime, formatMoney, formatQuantity } from './format';
import type { Alert, Balance, Invoice, Pack, Period, Tenant, UsageView } from './types';
import { BalanceCard, MeterCard, PacksCard, PlanCard, UsageBanners } from './usage';
import { Card, ErrorNote, StatusBadge, useInterval, useLoad, TableHead, TableWrap } from './ui';

/** How often the usage cards refresh while the page is open. */
export const LIVE_REFRESH_MS = 5_000;

/** A tenant's page: what the tenant sees, and for the admin the finance panels below it. */
export function TenantPage({ tenantId, admin }: { tenantId: string; admin: boolean }) {
  const t = `/v1/tenants/${enc(tenantId)}`;
  const tenant = useLoad(() => api.get<Tenant>(t), [tenantId]);
  const usage = useLoad(() => api.get<UsageView>(`${t}/usage`), [tenantId]);
  useInterval(usage.reload, LIVE_REFRESH_MS);
  const plan = useLoad(async () => (admin && usage.data ? optional<{ name: string }>(`/v1/plans/${enc(usage.data.plan_id)}`) : undefined), [admin, usage.data?.plan_id]);
  const balance = useLoad(() => optional<Balance>(`${t}/balance`), [tenantId]);
  const packs = useLoad(() => optional<Page<Pack>>(`${t}/packs`), [tenantId]);
  // A close or a rerun changes periods, invoices and alerts: they load again under a new key.
  const [revision, setRevision] = useState(0);
  const changed = () => {
    usage.reload();
    setRevision((r) => r + 1);
  };

  if (tenant.error && !tenant.data) {
    return (
      <main id="main" class="page">
        <h1>Tenant not found</h1>
        <ErrorNote error={tenant.error} />
        <p>There is no tenant {tenantId} you can see.</p>
      </main>
    );
  }
  const u = usage.data;
  const metrics = u ? Object.keys(u.metrics) : [];
  return (
    <main id="main" class="page">
      <header class="page-head">
        <h1>{tenant.data?.name ?? tenantId}</h1>
        <p class="muted">
          {tenantId}
          {u ? (
            <>
              {' '}
              · period {formatDate(u.period.start)} – {formatDate(u.period.end)} · <span data-testid="as-of">updated {formatDateTime(u.as_of)}</span>
            </>
          ) : null}
        </p>
      </header>
      <ErrorNote error={usage.error} />
      {u ? <UsageBanners usage={u} /> : null}
      <div class="grid">
        {u ? <PlanCard usage={u} planName={u.plan_name ?? plan.data?.name ?? u.plan_id} /> : <div class="card skeleton-card" aria-hidden="true" />}
        {balance.data && hasCredit(balance.data) ? <BalanceCard balance={balance.data} /> : null}
        {packs.data ? <PacksCard packs={packs.data.data} /> : null}
      </div>
      <h2 class="section-title">Resources</h2>
      <div class="grid meters" aria-live="polite">
        {u ? metrics.map((m) => <MeterCard key={m} metric={m} meter={u.metrics[m]!} currency={u.costs.currency} />) : <div class="card skeleton-card" aria-hidden="true" />}
      </div>
      {admin && u && tenant.data ? <FinancePanels tenant={tenant.data} usage={u} onChanged={changed} /> : null}
      <EventsTable tenantId={tenantId} metrics={metrics} />
      <div class="grid two">
        <HistoryCard key={`h${revision}`} tenantId={tenantId} currency={u?.costs.currency ?? 'USD'} openTotal={u?.costs.total} />
        <AlertsCard key={`a${revision}`} tenantId={tenantId} />
      </div>
      <InvoicesCard key={`i${revision}`} tenantId={tenantId} admin={admin} onChanged={changed} />
    </main>
  );
}

/** A balance is worth a card once credit was granted or charged; a postpaid tenant without any has none. */
function hasCredit(balance: Balance): boolean {
  return Number(balance.balance) !== 0 || Number(balance.total_charged) !== 0;
}

function HistoryCard({ tenantId, currency, openTotal }: { tenantId: string; currency: string; openTotal?: string }) {
  const periods = useLoad(() => api.get<Page<Period>>(`/v1/tenants/${enc(tenantId)}/periods${query({ limit: 6 })}`), [tenantId]);
  return (
    <Card title="Period history" headingId="history-heading">
      <ErrorNote error={periods.error} />
      {periods.data ? <HistoryChart periods={periods.data.data} currency={currency} openTotal={openTotal} /> : <p class="muted">Loading…</p>}
    </Card>
  );
}

/** The tenant's alerts; acknowledge where the API has alert triage. */
export function AlertsCard({ tenantId }: { tenantId: string }) {
  const alerts = useLoad(() => api.get<Page<Alert>>(`/v1/tenants/${enc(tenantId)}/alerts${query({ limit: 10 })}`), [tenantId]);
  const [error, setError] = useState<Error | undefined>();
  return (
    <Card title="Alerts" headingId="alerts-heading">
      <ErrorNote error={alerts.error ?? error} />
      {alerts.data && alerts.data.data.length === 0 ? <p class="muted">No alerts this far.</p> : null}
      <ul class="plain alerts">
        {alerts.data?.data.map((a) => (
          <li key={a.id} class={`alert level-${a.level}`}>
            <span class={`status status-${a.level}`}>{a.level}</span> <strong>{a.metric ?? 'cost'}</strong> reached {a.threshold} % ({formatQuantity(a.metric ?? '', a.used)} of {formatQuantity(a.metric ?? '', a.limit)}) · {formatDateTime(a.fired_at)}
            {'acknowledged_at' in a ? (
              a.acknowledged_at ? (
                <span class="muted"> · seen {formatDateTime(a.acknowledged_at)}</span>
              ) : (
                <button
                  type="button"
                  class="small"
                  onClick={() =>
                    api.post(`/v1/tenants/${enc(tenantId)}/alerts/${enc(a.id)}/acknowledge`).then(
                      () => alerts.reload(),
                      (err: Error) => setError(err),
                    )
                  }
                >
                  Mark as seen
                </button>
              )
            ) : null}
          </li>
        ))}
      </ul>
    </Card>
  );
}

function InvoicesCard({ tenantId, admin, onChanged }: { tenantId: string; admin: boolean; onChanged: () => void }) {
  const invoices = useLoad(() => api.get<Page<Invoice>>(`/v1/tenants/${enc(tenantId)}/invoices${query({ limit: 12 })}`), [tenantId]);
  return (
    <Card title="Invoices" headingId="invoices-heading">
      <ErrorNote error={invoices.error} />
      {invoices.data && invoices.data.data.length === 0 ? <p class="muted">No invoices yet.</p> : null}
      {invoices.data && invoices.data.data.length > 0 ? (
        <TableWrap label="Invoices">
          <table>
            <TableHead
              caption="Invoices, newest first"
              columns={[{ label: 'Invoice' }, { label: 'Period' }, { label: 'Status' }, { label: 'Total', numeric: true }, { label: 'PDF' }, admin && { label: 'Finance' }]}
            />
            <tbody>
              {invoices.data.data.map((inv) => (
                <tr key={inv.id} data-invoice-id={inv.id}>
                  <td>
                    {inv.number !== null ? `#${inv.number}` : 'draft'} <span class="muted">v{inv.version}</span>
                  </td>
                  <td>
                    {formatDate(inv.period_start)} – {formatDate(inv.period_end)}
                  </td>
                  <td>
                    <StatusBadge status={inv.status} />
                  </td>
                  <td class="num">{formatMoney(inv.total, inv.currency)}</td>
                  <td>
                    <a href={`/v1/invoices/${enc(inv.id)}/pdf`} download={`${inv.id}.pdf`} aria-label={`Download the PDF of invoice ${inv.number ?? inv.id}`}>
                      Download PDF
                    </a>
                  </td>
                  {admin ? (
                    <td>{inv.status === 'finalized' ? <RerunButton invoice={inv} onDone={onChanged} /> : <span class="muted">—</span>}</td>
                  ) : null}
                </tr>
              ))}
            </tbody>
          </table>
        </TableWrap>
      ) : null}
    </Card>
  );
}
