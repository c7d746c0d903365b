/**
 * Calls to the API from the dashboard. The session cookie authenticates (the browser sends it;
 * scripts cannot read it); state-changing calls echo the session's CSRF token, which lives only
 * in this module's memory and is fetched again from `GET /dashboard/session` after a reload.
 */

export interface Principal {
  kind: 'admin' | 'tenant';
  tenant_id?: string;
}

export interface Session {
  principal: Principal;
  csrf_token: string;
  expires_at: string;
}

/** An API problem (problem+json) as the app shows it. */
export class ApiProblem extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly errors: Array<{ path: string; message: string }> = [],
  ) {
    super(message);
  }
}

let csrfToken: string | undefined;
let onSignedOut: (() => void) | undefined;

/** Called when the API says the session is gone (expired, key revoked): back to sign-in. */
export function whenSignedOut(handler: () => void): void {
  onSignedOut = handler;
}

async function request<T>(method: string, path: string, body?: unknown, extraHeaders: Record<string, string> = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json', ...extraHeaders };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin' });
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let parsed: unknown = undefined;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  if (!res.ok) {
    if (res.status === 401 && !path.startsWith('/dashboard/session')) onSignedOut?.();
    const problem = (parsed ?? {}) as { code?: string; detail?: string; title?: string; errors?: Array<{ path: string; message: string }> };
    throw new ApiProblem(res.status, problem.code ?? 'error', problem.detail ?? problem.title ?? `HTTP ${res.status}`, problem.errors ?? []);
  }
  return parsed as T;
}

/** A GET that answers another type than JSON (CSV): the body as a Blob. */
async function download(path: string, accept: string): Promise<Blob> {
  const res = await fetch(path, { headers: { Accept: accept }, credentials: 'same-origin' });
  if (!res.ok) {
    if (res.status === 401) onSignedOut?.();
    const problem = (await res.json().catch(() => ({}))) as { code?: string; detail?: string };
    throw new ApiProblem(res.status, problem.code ?? 'error', problem.detail ?? `HTTP ${res.status}`);
  }
  return res.blob();
}

export const api = {
  download,
  get: <T>(path: string) => request<T>('GET', path),
  post: <T>(path: string, body: unknown = {}, headers: Record<string, string> = {}) => request<T>('POST', path, body, headers),
  patch: <T>(path: string, body: unknown) => request<T>('PATCH', path, body),
  del: <T>(path: string) => request<T>('DELETE', path),
};

/**
 * A fresh `Idempotency-Key`: 128 random bits in hex. `getRandomValues`, not `randomUUID`, which
 * browsers offer only on https and localhost, and the dashboard may be served over plain http
 * inside a private network.
 */
export function newIdempotencyKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `dashboard-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/** A read that may not exist on this API yet (a feature another release adds): undefined on 404. */
export async function optional<T>(path: string): Promise<T | undefined> {
  try {
    return await api.get<T>(path);
  } catch (err) {
    if (err instanceof ApiProblem && (err.status === 404 || err.status === 405)) return undefined;
    throw err;
  }
}

export async function currentSession(): Promise<Session | undefined> {
  try {
    const session = await api.get<Session>('/dashboard/session');
    csrfToken = session.csrf_token;
    return session;
  } catch (err) {
    if (err instanceof ApiProblem && err.status === 401) return undefined;
    throw err;
  }
}

export async function signIn(apiKey: string): Promise<Session> {
  const session = await api.post<Session>('/dashboard/session', { api_key: apiKey });
  csrfToken = session.csrf_token;
  return session;
}

export async function signOut(): Promise<void> {
  try {
    await api.del('/dashboard/session');
  } finally {
    csrfToken = undefined;
  }
}

/** A query string from the defined values of `params`. */
export function query(params: Record<string, string | number | undefined | null>): string {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') search.set(k, String(v));
  const text = search.toString();
  return text ? `?${text}` : '';
}

/** A list page of the API. */
export interface Page<T> {
  data: T[];
  has_more: boolean;
  total_count: number;
}

export const enc = encodeURIComponent;

/**
 * Every row of a list, page after page (100 at a time): `path(after)` is the URL of the page after
 * the cursor, `cursor(row)` the id the API takes as `starting_after`. Undefined when the list's
 * route does not exist on this API (404).
 */
export async function listAll<T>(path: (after: string | undefined) => string, cursor: (row: T) => string): Promise<T[] | undefined> {
  const rows: T[] = [];
  let after: string | undefined;
  for (;;) {
    const page = await optional<Page<T>>(path(after));
    if (!page) return undefined;
    rows.push(...page.data);
    if (!page.has_more || page.data.length === 0) return rows;
    after = cursor(page.data[page.data.length - 1]!);
  }
}
