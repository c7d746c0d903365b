import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { formatDate, formatMoney } from './format';
import type { Period } from './types';
import { TableHead } from './ui';

/**
 * The period history: each period's total (its invoice, or the running estimate for the open
 * one) as bars over time. A table beside it carries the same figures for screen readers.
 */
export function HistoryChart({ periods, currency, openTotal }: { periods: Period[]; currency: string; openTotal?: string }) {
  const box = useRef<HTMLDivElement>(null);
  const ordered = [...periods].reverse();
  useEffect(() => {
    const el = box.current;
    if (!el || ordered.length === 0) return;
    // One bar per period, evenly spaced whatever the periods' lengths (a close can make a short one).
    const xs = ordered.map((_p, i) => i);
    // Chart values only (never billed from): the open period shows its running total.
    const totals = ordered.map((p) => (p.totals ? Number(p.totals.total) : p.status === 'open' && openTotal !== undefined ? Number(openTotal) : null));
    const label = (i: number) => {
      const p = ordered[Math.round(i)];
      return p && Number.isInteger(i) ? formatDate(p.start).replace(/, \d{4}$/, '') : '';
    };
    const width = () => Math.max(260, el.clientWidth);
    const plot = new uPlot(
      {
        width: width(),
        height: 200,
        legend: { show: false },
        cursor: { show: false },
        scales: { x: { time: false, range: () => [-0.5, ordered.length - 0.5] }, y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.15)] } },
        axes: [
          { stroke: '#4b5563', grid: { show: false }, splits: () => xs, values: (_u, splits) => splits.map(label) },
          { stroke: '#4b5563', grid: { stroke: '#e5e7eb' }, size: 64, values: (_u, splits) => splits.map((s) => formatMoney(String(s), currency)) },
        ],
        series: [
          {},
          {
            label: `Total (${currency})`,
            stroke: '#1d4ed8',
            fill: 'rgba(37, 99, 235, 0.35)',
            width: 1,
            points: { show: false },
            paths: uPlot.paths.bars!({ size: [0.6, 80], align: 0 }),
          },
        ],
      },
      [xs, totals],
      el,
    );
    const resize = () => plot.setSize({ width: width(), height: 200 });
    window.addEventListener('resize', resize);
    return () => {
      window.removeEventListener('resize', resize);
      plot.destroy();
    };
  }, [periods, currency, openTotal]);
  if (periods.length === 0) return <p class="muted">No periods yet.</p>;
  return (
    <div class="history">
      <div ref={box} class="chart" role="img" aria-label={`Totals of the last ${periods.length} periods`} />
      <table class="compact">
        <TableHead caption="Totals per period" columns={[{ label: 'Period' }, { label: 'Status' }, { label: 'Total', numeric: true }]} />
        <tbody>
          {periods.map((p) => (
            <tr key={p.id}>
              <td>
                {formatDate(p.start)} – {formatDate(p.end)}
              </td>
              <td>{p.status}</td>
              <td class="num">{p.totals ? formatMoney(p.totals.total, p.totals.currency) : p.status === 'open' && openTotal !== undefined ? `${formatMoney(openTotal, currency)} so far` : '—'}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
