import { isUtf8 } from 'node:buffer';
import type { IncomingMessage } from 'node:http';
import type { Request, RequestHandler } from 'express';
import { ApiError, printableKey, type FieldError } from './errors';

/**
 * A JSON body can parse and pass its schema yet still be impossible to store or process: text
 * PostgreSQL refuses (a NUL character, in `text` or in `jsonb`), text it silently rewrites (an
 * unpaired UTF-16 surrogate becomes U+FFFD, so two different event ids would collide), or nesting
 * so deep that `JSON.stringify` (Temporal's payload converter, the stored properties) overflows the
 * stack. Accepted into usage, any of these would fail the batch's insert or merge two event ids.
 * So every body is checked once, before any route sees it.
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

/**
 * The first problem of a parsed JSON body (`errors[]` entry with a dotted path), or undefined:
 * unstorable text, a number JSON.parse could only read as ±Infinity, a `__proto__` key, or too
 * deep a nesting.
 * Iterative, so a body nested as deep as 1 MiB allows cannot overflow the stack here either.
 * `__proto__` keys are refused too: JSON.parse makes them own keys, but any object spread or
 * schema that copies them by assignment would drop them (or swap a prototype) silently.
 */
export function jsonBodyProblem(body: unknown, maxDepth = MAX_BODY_DEPTH): FieldError | undefined {
  // Every request's body is walked, so a node's path is spelled only when it has a problem.
  type Node = { value: unknown; depth: number; key?: string; parent?: Node };
  const pathOf = (node: Node): string => (node.parent === undefined ? '(body)' : node.parent.parent === undefined ? printableKey(node.key!) : `${pathOf(node.parent)}.${printableKey(node.key!)}`);
  const stack: Node[] = [{ value: body, depth: 0 }];
  while (stack.length > 0) {
    const node = stack.pop()!;
    const { value, depth } = node;
    if (typeof value === 'string') {
      const problem = textProblem(value);
      if (problem) return { path: pathOf(node), message: problem };
      continue;
    }
    // JSON.parse reads a number beyond the double range (`1e400`) as Infinity, which
    // JSON.stringify then writes as null: the value would be stored as something else.
    if (typeof value === 'number' && !Number.isFinite(value)) return { path: pathOf(node), message: 'must be a finite number (within ±1.7976931348623157e308)' };
    if (value === null || typeof value !== 'object') continue;
    if (depth >= maxDepth) return { path: pathOf(node), message: `must not be nested deeper than ${maxDepth} levels` };
    const isArray = Array.isArray(value);
    for (const [key, child] of Object.entries(value)) {
      const childNode: Node = { value: child, depth: depth + 1, key, parent: node };
      if (!isArray) {
        const problem = key === '__proto__' ? 'is a reserved key' : textProblem(key);
        if (problem) return { path: pathOf(childNode), message: `key ${problem}` };
      }
      stack.push(childNode);
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

/** The media types read as JSON bodies. */
export const JSON_MEDIA_TYPES = ['application/json', 'application/*+json'];

/**
 * The `verify` hook of the JSON body parser, which sees the raw bytes before they are decoded.
 * Every body is read (the parser's `type` accepts all), so that what is not a JSON body can be
 * refused here rather than left unparsed for a route to misreport as missing fields:
 *
 * - a non-empty body that is not declared JSON (no Content-Type, `text/plain`, a form) is 415;
 * - a JSON body in another charset than UTF-8 is 415 (RFC 8259 §8.1: JSON between systems is
 *   UTF-8), since decoding UTF-16 or UTF-32 would face the same broken sequences as below;
 * - bytes that are not valid UTF-8 are 400. The decoder would turn each broken sequence into
 *   U+FFFD, so `inv\xff` and `inv\xfe` would both become `inv\ufffd`: two event ids, one key.
 *
 * An empty body is left to the route: close-period takes none, the others then name their fields.
 */
export function verifyJsonBody(req: IncomingMessage, _res: unknown, body: Buffer, encoding: string | null): void {
  if (body.length === 0) return;
  const contentType = req.headers['content-type'];
  if (!(req as Request).is(JSON_MEDIA_TYPES)) {
    throw new ApiError(415, 'unsupported_media_type', `request bodies are JSON: send Content-Type: application/json (got ${contentType ? JSON.stringify(contentType.slice(0, 100)) : 'none'})`);
  }
  if (encoding !== 'utf-8') {
    throw new ApiError(415, 'unsupported_media_type', `JSON bodies are UTF-8: send charset=utf-8 or no charset (got ${JSON.stringify(String(encoding).slice(0, 40))})`);
  }
  if (!isUtf8(body)) {
    throw new ApiError(400, 'validation_failed', 'the request body is not valid UTF-8', [{ path: '(body)', message: 'must be UTF-8 text (a byte sequence here is not)' }]);
  }
}
