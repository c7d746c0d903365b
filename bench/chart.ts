/**
 * A dependency-free SVG chart of throughput and p99 latency against concurrency, with the naive
 * one-request-per-event design on the same axes, for BENCHMARKS.md.
 */
export function renderChart(
  sweep: Array<{ concurrency: number; events_per_s: number; p99_ms: number }>,
  naive: { events_per_s: number; concurrency: number },
): string {
  const W = 720;
  const H = 360;
  const m = { l: 70, r: 70, t: 40, b: 50 };
  const xs = sweep.map((s) => Math.log2(s.concurrency));
  const xMin = Math.min(...xs, Math.log2(naive.concurrency)) - 0.3;
  const xMax = Math.max(...xs, Math.log2(naive.concurrency)) + 0.3;
  const yMax = Math.max(...sweep.map((s) => s.events_per_s), naive.events_per_s) * 1.15 || 1;
  const lMax = Math.max(...sweep.map((s) => s.p99_ms)) * 1.15 || 1;
  const x = (c: number) => m.l + ((Math.log2(c) - xMin) / (xMax - xMin)) * (W - m.l - m.r);
  const y = (v: number) => H - m.b - (v / yMax) * (H - m.t - m.b);
  const yl = (v: number) => H - m.b - (v / lMax) * (H - m.t - m.b);
  const line = (pts: Array<[number, number]>) => pts.map(([a, b], i) => `${i ? 'L' : 'M'}${a.toFixed(1)},${b.toFixed(1)}`).join(' ');
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">tally ingest: events/s and p99 latency vs concurrency</text>`);
  parts.push(`<line x1="${m.l}" y1="${H - m.b}" x2="${W - m.r}" y2="${H - m.b}" stroke="#333"/>`);
  parts.push(`<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${H - m.b}" stroke="#333"/>`);
  parts.push(`<line x1="${W - m.r}" y1="${m.t}" x2="${W - m.r}" y2="${H - m.b}" stroke="#333"/>`);
  for (const s of sweep) {
    parts.push(`<text x="${x(s.concurrency)}" y="${H - m.b + 16}" text-anchor="middle">${s.concurrency}</text>`);
  }
  parts.push(`<text x="${W / 2}" y="${H - 12}" text-anchor="middle">concurrent requests (batches of 100 events)</text>`);
  for (let i = 0; i <= 4; i++) {
    const v = (yMax / 4) * i;
    parts.push(`<text x="${m.l - 6}" y="${y(v) + 4}" text-anchor="end">${Math.round(v)}</text>`);
    const lv = (lMax / 4) * i;
    parts.push(`<text x="${W - m.r + 6}" y="${yl(lv) + 4}">${Math.round(lv)}</text>`);
  }
  parts.push(`<text transform="translate(16 ${H / 2}) rotate(-90)" text-anchor="middle" fill="#1f77b4">events/s (acknowledged and counted)</text>`);
  parts.push(`<text transform="translate(${W - 14} ${H / 2}) rotate(90)" text-anchor="middle" fill="#d62728">p99 latency (ms)</text>`);
  parts.push(`<path d="${line(sweep.map((s) => [x(s.concurrency), y(s.events_per_s)]))}" fill="none" stroke="#1f77b4" stroke-width="2"/>`);
  parts.push(`<path d="${line(sweep.map((s) => [x(s.concurrency), yl(s.p99_ms)]))}" fill="none" stroke="#d62728" stroke-width="2" stroke-dasharray="5,3"/>`);
  for (const s of sweep) {
    parts.push(`<circle cx="${x(s.concurrency)}" cy="${y(s.events_per_s)}" r="3" fill="#1f77b4"/>`);
    parts.push(`<circle cx="${x(s.concurrency)}" cy="${yl(s.p99_ms)}" r="3" fill="#d62728"/>`);
  }
  parts.push(`<circle cx="${x(naive.concurrency)}" cy="${y(naive.events_per_s)}" r="5" fill="#ff7f0e"/>`);
  parts.push(`<text x="${x(naive.concurrency) + 8}" y="${y(naive.events_per_s) - 6}" fill="#ff7f0e">naive: 1 request per event (${naive.events_per_s}/s)</text>`);
  parts.push('</svg>');
  return parts.join('\n');
}
