import { useState } from 'preact/hooks';
import { api, ApiProblem, enc, newIdempotencyKey, query, type Page } from './api';
import { formatDate, formatLimit, formatMoney } from './format';
import type { Invoice, Period, RerunChange, Tenant, UsageView } from './types';
import { Card, Dialog, ErrorNote, StatusBadge, useLoad, TableHead, TableWrap } from './ui';
import { useConfig } from './config';

/** What finance and ops see under a tenant's page: limits, the workflow link, periods and closes. */
export function FinancePanels({ tenant, usage, onChanged }: { tenant: Tenant; usage: UsageView; onChanged: () => void }) {
  const config = useConfig();
  const workflowUrl = config?.temporal_ui_url
    ? `${config.temporal_ui_url.replace(/\/$/, '')}/namespaces/${enc(config.namespace)}/workflows/${enc(tenant.workflow_id)}`
    : undefined;
  return (
    <section class="finance" aria-labelledby="finance-heading">
      <h2 id="finance-heading" class="section-title">
        Finance and operations
      </h2>
      <p>
        Workflow <code>{tenant.workflow_id}</code>
        {workflowUrl ? (
          <>
            {' '}
            ·{' '}
            <a href={workflowUrl} target="_blank" rel="noopener noreferrer">
              Open in the Temporal UI
            </a>
          </>
        ) : (
          <span class="muted"> · the Temporal UI's address is not configured (TEMPORAL_UI_URL)</span>
        )}
      </p>
      <div class="grid two">
        <LimitsCard tenant={tenant} usage={usage} onChanged={onChanged} />
        <PeriodsCard tenant={tenant} onChanged={onChanged} />
      </div>
    </section>
  );
}

/** Per-tenant limits, editable where the API takes `limits` in PATCH (it reports `plan_limit`). */
function LimitsCard({ tenant, usage, onChanged }: { tenant: Tenant; usage: UsageView; onChanged: () => void }) {
  const editable = Object.values(usage.metrics).some((m) => m.plan_limit !== undefined);
  const [draft, setDraft] = useState<Record<string, string>>({});
  const [error, setError] = useState<Error | undefined>();
  const [saved, setSaved] = useState(false);
  const metrics = Object.entries(usage.metrics);
  if (!editable) {
    return (
      <Card title="Limits" headingId="limits-heading">
        <ul class="plain">
          {metrics.map(([metric, m]) => (
            <li key={metric}>
              {metric}: {formatLimit(metric, m.limit)}
            </li>
          ))}
        </ul>
        <p class="muted">Per-tenant limits are not available on this API.</p>
      </Card>
    );
  }
  return (
    <Card title="Limits" headingId="limits-heading">
      <form
        class="limits"
        onSubmit={(e) => {
          e.preventDefault();
          const limits: Record<string, number | null> = {};
          for (const [metric, value] of Object.entries(draft)) limits[metric] = value.trim() === '' ? null : Number(value);
          setSaved(false);
          api.patch(`/v1/tenants/${enc(tenant.id)}`, { limits }).then(
            () => {
              setError(undefined);
              setSaved(true);
              setDraft({});
              onChanged();
            },
            (err: Error) => setError(err),
          );
        }}
      >
        {metrics.map(([metric, m]) => (
          <label key={metric}>
            {metric} <span class="muted">(plan: {formatLimit(metric, m.plan_limit ?? null)})</span>
            <input
              type="number"
              min="0"
              step="any"
              name={`limit-${metric}`}
              placeholder="plan's limit"
              value={draft[metric] ?? (m.limit !== m.plan_limit && m.limit !== null ? String(m.limit) : '')}
              onInput={(e) => setDraft({ ...draft, [metric]: e.currentTarget.value })}
            />
          </label>
        ))}
        <p class="muted">Empty: the plan's limit applies.</p>
        <button type="submit">Save limits</button>
        {saved ? <span role="status"> Saved.</span> : null}
      </form>
      <ErrorNote error={error} />
    </Card>
  );
}

/**
 * The tenant's periods, and closing the current one (with a confirmation naming it). A close
 * carries an `Idempotency-Key` that is kept until a close succeeds: a close whose answer was lost
 * (a timeout, a dropped connection) and is confirmed again answers the close already made instead
 * of closing the next period too.
 */
function PeriodsCard({ tenant, onChanged }: { tenant: Tenant; onChanged: () => void }) {
  const periods = useLoad(() => api.get<Page<Period>>(`/v1/tenants/${enc(tenant.id)}/periods${query({ limit: 6 })}`), [tenant.id]);
  const [confirming, setConfirming] = useState(false);
  const [closeKey, setCloseKey] = useState<string | undefined>();
  const [finalize, setFinalize] = useState(true);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<Error | undefined>();
  const [closed, setClosed] = useState<string | undefined>();
  const open = periods.data?.data.find((p) => p.status === 'open');
  const name = open ? `${formatDate(open.start)} – ${formatDate(open.end)}` : '';
  return (
    <Card title="Periods" headingId="periods-heading">
      <ErrorNote error={periods.error ?? error} />
      <ul class="plain">
        {periods.data?.data.map((p) => (
          <li key={p.id} data-period-id={p.id}>
            {formatDate(p.start)} – {formatDate(p.end)} <StatusBadge status={p.status} /> {p.totals ? formatMoney(p.totals.total, p.totals.currency) : ''}
          </li>
        ))}
      </ul>
      {closed ? (
        <p role="status" class="ok-note">
          Closed. Invoice {closed} was written.
        </p>
      ) : null}
      {open && tenant.status === 'active' ? (
        <button
          type="button"
          class="danger"
          onClick={() => {
            setCloseKey((key) => key ?? newIdempotencyKey());
            setConfirming(true);
          }}
        >
          Close period…
        </button>
      ) : null}
      <Dialog open={confirming} title="Close the period?" onClose={() => setConfirming(false)}>
        <p>
          Close the period <strong data-testid="close-period-name">{name}</strong> of <strong>{tenant.name}</strong> now? It ends at this instant, its draft invoice is written, and a new period
          starts.
        </p>
        <label class="check">
          <input type="checkbox" checked={finalize} onChange={(e) => setFinalize(e.currentTarget.checked)} /> Finalize the invoice now (skip the grace period)
        </label>
        <div class="actions">
          <button type="button" onClick={() => setConfirming(false)}>
            Cancel
          </button>
          <button
            type="button"
            class="danger"
            disabled={busy}
            onClick={() => {
              setBusy(true);
              api
                .post<{ invoice_id: string }>(`/v1/tenants/${enc(tenant.id)}/close-period`, { finalize }, closeKey ? { 'Idempotency-Key': closeKey } : {})
                .then(
                  (r) => {
                    setCloseKey(undefined);
                    setClosed(r.invoice_id);
                    setError(undefined);
                    periods.reload();
                    onChanged();
                  },
                  (err: Error) => setError(err),
                )
                .finally(() => {
                  setBusy(false);
                  setConfirming(false);
                });
            }}
          >
            Close period {name}
          </button>
        </div>
      </Dialog>
    </Card>
  );
}

/**
 * Rerun an invoice: a reason, then a preview of each line's change (`dry_run`) before confirming.
 * On an API without dry runs the preview step is skipped and the rerun is confirmed plainly.
 */
export function RerunButton({ invoice, onDone }: { invoice: Invoice; onDone: () => void }) {
  const [open, setOpen] = useState(false);
  const [reason, setReason] = useState('');
  const [planId, setPlanId] = useState('');
  const [preview, setPreview] = useState<{ invoice: Invoice; changes: RerunChange[] } | null | undefined>(undefined);
  const [error, setError] = useState<Error | undefined>();
  const [busy, setBusy] = useState(false);
  const [done, setDone] = useState<string | undefined>();
  const path = `/v1/invoices/${enc(invoice.id)}/rerun`;
  // Empty: re-rate with the period's own plan version; a plan id: with that plan's latest version.
  const planChoice = () => (planId.trim() ? { plan_id: planId.trim() } : {});
  const close = () => {
    setOpen(false);
    setPreview(undefined);
    setError(undefined);
  };
  const runPreview = () => {
    setBusy(true);
    api
      .post<{ invoice: Invoice; changes: RerunChange[] }>(path, { reason, ...planChoice(), dry_run: true })
      .then(
        (r) => setPreview(r),
        (err: Error) => {
          // No dry run on this API (the field is refused by name): confirm without a preview.
          if (err instanceof ApiProblem && err.status === 422 && err.errors.some((e) => e.path === 'dry_run')) setPreview(null);
          else setError(err);
        },
      )
      .finally(() => setBusy(false));
  };
  const confirm = () => {
    setBusy(true);
    api
      .post<{ invoice_id: string }>(path, { reason, ...planChoice() })
      .then(
        (r) => {
          setDone(r.invoice_id);
          close();
          onDone();
        },
        (err: Error) => setError(err),
      )
      .finally(() => setBusy(false));
  };
  return (
    <>
      <button type="button" class="small" onClick={() => setOpen(true)} aria-label={`Rerun invoice ${invoice.number ?? invoice.id}`}>
        Rerun…
      </button>
      {done ? <span role="status"> New version {done}</span> : null}
      <Dialog open={open} title={`Rerun invoice ${invoice.number !== null ? `#${invoice.number}` : invoice.id}`} onClose={close}>
        <form
          onSubmit={(e) => {
            e.preventDefault();
            if (preview === undefined) runPreview();
            else confirm();
          }}
        >
          <label>
            Reason
            <input type="text" name="reason" required value={reason} onInput={(e) => setReason(e.currentTarget.value)} disabled={preview !== undefined} />
          </label>
          <label>
            Re-rate with plan (optional)
            <input type="text" name="plan_id" placeholder={`the period's plan (${invoice.plan_id ?? 'as billed'})`} value={planId} onInput={(e) => setPlanId(e.currentTarget.value)} disabled={preview !== undefined} />
          </label>
          <ErrorNote error={error} />
          {preview ? (
            <TableWrap label="Rerun changes">
              <table class="compact" data-testid="rerun-diff">
                <TableHead
                  caption="What the new version changes"
                  captionShown
                  columns={[{ label: 'Line' }, { label: 'Before', numeric: true }, { label: 'After', numeric: true }, { label: 'Change', numeric: true }]}
                />
                <tbody>
                  {preview.changes.length === 0 ? (
                    <tr>
                      <td colSpan={4}>No line changes: the new version would bill the same amounts.</td>
                    </tr>
                  ) : (
                    preview.changes.map((c) => (
                      <tr key={c.line}>
                        <td>{c.description || c.line}</td>
                        <td class="num">{c.before ? formatMoney(c.before.amount, invoice.currency) : 'none'}</td>
                        <td class="num">{c.after ? formatMoney(c.after.amount, preview.invoice.currency) : 'none'}</td>
                        <td class="num">{c.delta === null ? '—' : `${c.delta.startsWith('-') ? '' : '+'}${formatMoney(c.delta, invoice.currency)}`}</td>
                      </tr>
                    ))
                  )}
                </tbody>
              </table>
              <p>
                New total: <strong>{formatMoney(preview.invoice.total, preview.invoice.currency)}</strong> (now {formatMoney(invoice.total, invoice.currency)})
              </p>
            </TableWrap>
          ) : null}
          {preview === null ? <p>This API cannot preview a rerun. Version {invoice.version} will be voided and replaced.</p> : null}
          <div class="actions">
            <button type="button" onClick={close}>
              Cancel
            </button>
            <button type="submit" class="primary" disabled={busy || reason.trim() === ''}>
              {preview === undefined ? 'Preview rerun' : 'Confirm rerun'}
            </button>
          </div>
        </form>
      </Dialog>
    </>
  );
}
