import { useState } from 'preact/hooks';
import { formatCost, formatDate, formatMoney, formatLimit, formatPercent, formatQuantity, meterLevel } from './format';
import type { Balance, MeterUsage, Pack, UsageView } from './types';
import { Card, MeterBar } from './ui';

/** The plan card: plan, price per interval, next reset. */
export function PlanCard({ usage, planName }: { usage: UsageView; planName: string }) {
  const per = usage.period.interval;
  return (
    <Card title="Plan" class="plan-card" headingId="plan-heading">
      <p class="plan-name">{planName}</p>
      <p class="plan-price">
        <strong>{formatMoney(usage.costs.base_fee, usage.costs.currency)}</strong> per {per}
      </p>
      <dl class="facts">
        <dt>Next reset</dt>
        <dd>{formatDate(usage.period.end)}</dd>
        <dt>This period so far</dt>
        <dd>{formatMoney(usage.costs.total, usage.costs.currency)}</dd>
        {usage.costs.projected_total ? (
          <>
            <dt>Projected at period end</dt>
            <dd>{formatCost(usage.costs.projected_total, usage.costs.currency)}</dd>
          </>
        ) : null}
      </dl>
    </Card>
  );
}

/** One resource: percent badge, 8 px bar, "N used" / "of M", and the forecast when the API has one. */
export function MeterCard({ metric, meter, currency }: { metric: string; meter: MeterUsage; currency: string }) {
  const level = meterLevel(meter.percent);
  const id = `meter-${metric}`;
  return (
    <section class="card meter-card" aria-labelledby={id} data-metric={metric} data-level={level}>
      <header>
        <h3 id={id}>{metric}</h3>
        <span class={`badge level-${level}`} data-testid="percent-badge">
          {meter.limit === null ? '∞' : formatPercent(meter.percent)}
        </span>
      </header>
      <MeterBar percent={meter.limit === null ? null : meter.percent} label={`${metric} used of its limit`} />
      <p class="meter-figures">
        <span class="used">{formatQuantity(metric, meter.used)} used</span>
        <span class="of">of {formatLimit(metric, meter.limit)}</span>
      </p>
      <p class="meter-amount">{formatCost(meter.amount, currency)}</p>
      {meter.forecast?.exhausts_at ? (
        <p class="forecast" data-testid="forecast">
          At this rate you reach the limit on {formatDate(meter.forecast.exhausts_at)}.
        </p>
      ) : null}
    </section>
  );
}

/** The 80 % and 90 % banners, dismissible for this browser session. */
export function UsageBanners({ usage }: { usage: UsageView }) {
  const keyOf = (metric: string, level: string) => `tally.dismissed.${usage.tenant_id}.${usage.period.start}.${metric}.${level}`;
  const [, redraw] = useState(0);
  const banners = Object.entries(usage.metrics)
    .filter(([, m]) => m.limit !== null && m.percent !== null && m.percent >= 80)
    .map(([metric, m]) => ({ metric, m, level: (m.percent ?? 0) >= 90 ? 'critical' : 'warning' }))
    .filter((b) => sessionStorage.getItem(keyOf(b.metric, b.level)) === null);
  if (banners.length === 0) return null;
  return (
    <div class="banners">
      {banners.map((b) => (
        <div key={`${b.metric}-${b.level}`} class={`banner level-${b.level}`} role="status" data-testid="usage-banner">
          <p>
            {b.level === 'critical' ? 'Almost at the limit: ' : 'Heads up: '}
            <strong>{b.metric}</strong> is at {formatPercent(b.m.percent)} of its limit ({formatQuantity(b.metric, b.m.used)} of {formatLimit(b.metric, b.m.limit)}).
          </p>
          <button
            type="button"
            class="dismiss"
            aria-label={`Dismiss the ${b.metric} ${b.level === 'critical' ? '90' : '80'} % banner`}
            onClick={() => {
              sessionStorage.setItem(keyOf(b.metric, b.level), '1');
              redraw((n) => n + 1);
            }}
          >
            ×
          </button>
        </div>
      ))}
    </div>
  );
}

/** The prepaid balance, when the API has balances. */
export function BalanceCard({ balance }: { balance: Balance }) {
  const units = Object.entries(balance.estimated_units_remaining ?? {});
  return (
    <Card title="Balance" class="balance-card" headingId="balance-heading">
      <p class="big">{formatCost(balance.available, balance.currency)}</p>
      <dl class="facts">
        <dt>Balance</dt>
        <dd>{formatCost(balance.balance, balance.currency)}</dd>
        <dt>Uncharged usage</dt>
        <dd>{formatCost(balance.uncharged, balance.currency)}</dd>
        <dt>Total charged</dt>
        <dd>{formatCost(balance.total_charged, balance.currency)}</dd>
        {balance.days_remaining !== null && balance.days_remaining !== undefined ? (
          <>
            <dt>Days remaining</dt>
            <dd>{balance.days_remaining}</dd>
          </>
        ) : null}
        {units.map(([metric, n]) => (
          <>
            <dt>{metric} remaining</dt>
            <dd>{formatQuantity(metric, n)}</dd>
          </>
        ))}
      </dl>
    </Card>
  );
}

/** Add-on packs, when the API has them. */
export function PacksCard({ packs }: { packs: Pack[] }) {
  return (
    <Card title="Packs" class="packs-card" headingId="packs-heading">
      {packs.length === 0 ? (
        <p class="muted">No packs.</p>
      ) : (
        <ul class="plain">
          {packs.map((p) => (
            <li key={p.id}>
              <strong>{p.metric}</strong>: {formatQuantity(p.metric, p.remaining)} left of {formatQuantity(p.metric, p.units)} <span class={`status status-${p.status}`}>{p.status}</span>
              {p.expires_at ? <span class="muted"> · expires {formatDate(p.expires_at)}</span> : null}
            </li>
          ))}
        </ul>
      )}
    </Card>
  );
}
