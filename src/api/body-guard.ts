import type { RequestHandler } from 'express';
import { ApiError, type FieldError } from './errors';

/**
 * A JSON body can parse and pass its schema yet still be impossible to store or process: text
 * PostgreSQL refuses (a NUL character, in `text` or in `jsonb`), text it silently rewrites (an
 * unpaired UTF-16 surrogate becomes U+FFFD, so two different event ids would collide), or nesting
 * so deep that `JSON.stringify` (Temporal's payload converter, the ingest coalescer) overflows the
 * stack. Accepted into usage, any of these would poison the tenant's workflow: its counting
 * activity would fail on every retry. So every body is checked once, before any route sees it.
 */

/**
 * How deep a body may nest. The deepest API shape (a plan's tier) sits 5 levels down, leaving
 * event `properties` well over 20 levels of their own.
 */
export const MAX_BODY_DEPTH = 32;

const UNPAIRED_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Why a string cannot be stored as-is, or undefined when it can. */
function textProblem(text: string): string | undefined {
  if (text.includes('\u0000')) return 'must not contain NUL characters';
  if (UNPAIRED_SURROGATE.test(text)) return 'must be valid Unicode (no unpaired surrogates)';
  return undefined;
}

/** A key as it may appear in an error path: printable and short. */
function printableKey(key: string): string {
  const clean = key.replace(UNPAIRED_SURROGATE, '\ufffd').replace(/[\u0000-\u001f\u007f]/g, '\ufffd'); // eslint-disable-line no-control-regex
  return clean.length > 64 ? `${clean.slice(0, 64)}…` : clean;
}

/**
 * The first problem of a parsed JSON body (`errors[]` entry with a dotted path), or undefined.
 * Iterative, so a body nested as deep as 1 MiB allows cannot overflow the stack here either.
 * `__proto__` keys are refused too: JSON.parse makes them own keys, but any object spread or
 * schema that copies them by assignment would drop them (or swap a prototype) silently.
 */
export function jsonBodyProblem(body: unknown, maxDepth = MAX_BODY_DEPTH): FieldError | undefined {
  const stack: Array<{ value: unknown; path: string; depth: number }> = [{ value: body, path: '', depth: 0 }];
  while (stack.length > 0) {
    const { value, path, depth } = stack.pop()!;
    if (typeof value === 'string') {
      const problem = textProblem(value);
      if (problem) return { path: path || '(body)', message: problem };
      continue;
    }
    if (value === null || typeof value !== 'object') continue;
    if (depth >= maxDepth) return { path: path || '(body)', message: `must not be nested deeper than ${maxDepth} levels` };
    const isArray = Array.isArray(value);
    for (const [key, child] of Object.entries(value)) {
      const childPath = path ? `${path}.${printableKey(key)}` : printableKey(key);
      if (!isArray) {
        const problem = key === '__proto__' ? 'is a reserved key' : textProblem(key);
        if (problem) return { path: childPath, message: `key ${problem}` };
      }
      stack.push({ value: child, path: childPath, depth: depth + 1 });
    }
  }
  return undefined;
}

/** Express middleware, after `express.json()`: 422 `validation_failed` for a body {@link jsonBodyProblem} refuses. */
export function rejectUnsafeJson(): RequestHandler {
  return (req, _res, next) => {
    const problem = req.body === undefined ? undefined : jsonBodyProblem(req.body);
    if (problem) return next(new ApiError(422, 'validation_failed', 'the request body cannot be accepted', [problem]));
    next();
  };
}
