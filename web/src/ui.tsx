import type { ComponentChildren } from 'preact';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { ApiProblem } from './api';
import { formatPercent, meterLevel, pageWindow, showingRange, pageCountOf } from './format';

/** Loads `load()` when `deps` change; `reload()` loads again. Keeps the last data while reloading. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): { data: T | undefined; error: Error | undefined; loading: boolean; reload: () => void } {
  const [state, setState] = useState<{ data: T | undefined; error: Error | undefined; loading: boolean }>({ data: undefined, error: undefined, loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    load().then(
      (data) => live && setState({ data, error: undefined, loading: false }),
      (error: Error) => live && setState((s) => ({ data: s.data, error, loading: false })),
    );
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { ...state, reload };
}

/** Calls `tick` every `ms` while the page is visible. */
export function useInterval(tick: () => void, ms: number): void {
  const saved = useRef(tick);
  saved.current = tick;
  useEffect(() => {
    const id = setInterval(() => {
      if (document.visibilityState === 'visible') saved.current();
    }, ms);
    return () => clearInterval(id);
  }, [ms]);
}

export function ErrorNote({ error }: { error: Error | undefined }) {
  if (!error) return null;
  const code = error instanceof ApiProblem ? ` (${error.code})` : '';
  return (
    <p class="error" role="alert">
      {error.message}
      {code}
    </p>
  );
}

export function Card({ title, children, class: cls, headingId }: { title: string; children: ComponentChildren; class?: string; headingId?: string }) {
  return (
    <section class={`card ${cls ?? ''}`} aria-labelledby={headingId}>
      <h2 id={headingId}>{title}</h2>
      {children}
    </section>
  );
}

/** The meter bar: 8 px, green under 80 %, amber 80–89 %, red from 90 %. */
export function MeterBar({ percent, label }: { percent: number | null; label: string }) {
  const level = meterLevel(percent);
  const width = percent === null ? 0 : Math.max(0, Math.min(100, percent));
  const ref = useRef<HTMLDivElement>(null);
  // Set through the CSSOM: the page's policy allows no inline style attributes.
  useEffect(() => {
    if (ref.current) ref.current.style.width = `${width}%`;
  }, [width]);
  return (
    <div class="bar" role="progressbar" aria-label={label} aria-valuemin={0} aria-valuemax={100} aria-valuenow={Math.round(width)} aria-valuetext={formatPercent(percent)}>
      <div ref={ref} class={`bar-fill level-${level}`} data-level={level} />
    </div>
  );
}

/** The pager: first/last, current ±2, gaps, previous/next. */
export function Pager({ page, pageSize, total, onPage, label }: { page: number; pageSize: number; total: number; onPage: (page: number) => void; label: string }) {
  const count = pageCountOf(total, pageSize);
  return (
    <nav class="pager" aria-label={label}>
      <span class="showing" aria-live="polite">
        {showingRange(page, pageSize, total)}
      </span>
      <ul>
        <li>
          <button type="button" disabled={page <= 1} onClick={() => onPage(page - 1)} aria-label="Previous page">
            ‹
          </button>
        </li>
        {pageWindow(page, count).map((item, i) =>
          item === 'gap' ? (
            <li key={`gap${i}`} class="gap" aria-hidden="true">
              …
            </li>
          ) : (
            <li key={item}>
              <button type="button" aria-current={item === page ? 'page' : undefined} aria-label={`Page ${item}`} onClick={() => onPage(item)}>
                {item}
              </button>
            </li>
          ),
        )}
        <li>
          <button type="button" disabled={page >= count} onClick={() => onPage(page + 1)} aria-label="Next page">
            ›
          </button>
        </li>
      </ul>
    </nav>
  );
}

/** A modal dialog (native <dialog>: focus trap, Escape closes). */
export function Dialog({ open, title, onClose, children }: { open: boolean; title: string; onClose: () => void; children: ComponentChildren }) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (open && !d.open) d.showModal();
    if (!open && d.open) d.close();
  }, [open]);
  return (
    <dialog ref={ref} aria-labelledby="dialog-title" onClose={onClose} onCancel={onClose}>
      <h2 id="dialog-title">{title}</h2>
      {open ? children : null}
    </dialog>
  );
}

export function SkeletonRows({ rows, cols }: { rows: number; cols: number }) {
  return (
    <>
      {Array.from({ length: rows }, (_, r) => (
        <tr key={r} class="skeleton-row" aria-hidden="true">
          {Array.from({ length: cols }, (_, c) => (
            <td key={c}>
              <span class="skeleton" />
            </td>
          ))}
        </tr>
      ))}
    </>
  );
}

export function StatusBadge({ status }: { status: string }) {
  return <span class={`status status-${status}`}>{status}</span>;
}

/** A column heading of a table; a numeric column (`num`) aligns right, like its cells. */
export interface Column {
  label: ComponentChildren;
  numeric?: boolean;
}

/**
 * A table's caption and column headings (`<th scope="col">`). The caption names the table for
 * screen readers and stays hidden unless `captionShown`. A column may be left out with `false`
 * (one shown to some users only).
 */
export function TableHead({ caption, columns, captionShown = false }: { caption: ComponentChildren; columns: ReadonlyArray<Column | false>; captionShown?: boolean }) {
  return (
    <>
      <caption class={captionShown ? undefined : 'visually-hidden'}>{caption}</caption>
      <thead>
        <tr>
          {columns.map((column, i) =>
            column ? (
              <th key={i} scope="col" class={column.numeric ? 'num' : undefined}>
                {column.label}
              </th>
            ) : null,
          )}
        </tr>
      </thead>
    </>
  );
}

/**
 * A table that may scroll sideways on a narrow screen: a focusable, named region, so keyboard
 * users can scroll it too.
 */
export function TableWrap({ label, children, class: cls }: { label: string; children: ComponentChildren; class?: string }) {
  return (
    <div class={`table-wrap ${cls ?? ''}`} role="region" aria-label={label} tabIndex={0}>
      {children}
    </div>
  );
}
