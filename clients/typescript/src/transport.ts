import type { Problem } from './api-types';
import { TallyApiError, TallyNetworkError } from './errors';
import { parseRetryAfter } from './retry';

export interface TransportOptions {
  baseUrl: string;
  apiKey: string;
  fetch: typeof fetch;
  requestTimeoutMs: number;
}

/**
 * One HTTP exchange with the API: JSON in, JSON out. An answer of 400 or more becomes a
 * `TallyApiError` (from its problem+json body); no answer at all becomes a `TallyNetworkError`.
 * An abort by the caller's signal is rethrown as it is.
 */
export class Transport {
  private readonly baseUrl: string;

  constructor(private readonly options: TransportOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
  }

  async send<T>(method: 'GET' | 'POST', path: string, body: string | undefined, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) throw signal.reason;
    const headers: Record<string, string> = { 'x-api-key': this.options.apiKey, accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    // One controller for the caller's signal and the timeout, whose timer is cleared with the
    // request: a finished request leaves no timer behind.
    const request = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      request.abort();
    }, this.options.requestTimeoutMs);
    const onAbort = () => request.abort(signal!.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    let res: Response;
    let text: string;
    try {
      res = await this.options.fetch(`${this.baseUrl}${path}`, { method, headers, body, signal: request.signal });
      text = await res.text();
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      if (timedOut) throw new TallyNetworkError(`${method} ${path}: no answer within ${this.options.requestTimeoutMs} ms`, true, { cause: err });
      throw new TallyNetworkError(`${method} ${path}: ${describe(err)}`, false, { cause: err });
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
    if (res.status >= 400) throw apiError(res, text);
    return (text === '' ? undefined : JSON.parse(text)) as T;
  }
}

/** `fetch failed` says little: the cause (`ECONNREFUSED`, `other side closed`) says what happened. */
function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause as { code?: string; message?: string } | undefined;
  return cause ? `${err.message} (${cause.code ?? cause.message ?? 'no cause'})` : err.message;
}

function apiError(res: Response, text: string): TallyApiError {
  let problem: Partial<Problem> = {};
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed && typeof parsed === 'object') problem = parsed as Partial<Problem>;
  } catch {
    // not problem+json (a proxy's HTML error page, say): the status alone speaks
  }
  return new TallyApiError({
    status: res.status,
    code: typeof problem.code === 'string' ? problem.code : `http_${res.status}`,
    title: typeof problem.title === 'string' ? problem.title : res.statusText,
    detail: typeof problem.detail === 'string' ? problem.detail : text.slice(0, 200) || res.statusText,
    errors: Array.isArray(problem.errors) ? problem.errors : [],
    requestId: problem.request_id ?? res.headers.get('x-request-id') ?? undefined,
    retryAfterMs: parseRetryAfter(res.headers.get('retry-after')),
  });
}
