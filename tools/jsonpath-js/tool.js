// `jsonpath-js`: tools over a JSON document the caller passes in, written in
// JavaScript (an example of guest-sdk/js). Two tools in one component:
//
// - `json_query`: the values at a path in a JSON document (a JSONPath
//   subset: `$.store.book[0].title`, `$..author`, `$.items[*].id`,
//   `$.items[-1]`, `$.items[0:3]`, `$['odd key']`,
//   `$.books[?(@.price < 10)].title`).
// - `json_format`: pretty-print or minify a JSON document, optionally with
//   its object keys sorted.
//
// Both work only on their arguments: the component needs no capabilities.
//
// Build (from the repository root, after `npm ci --prefix guest-sdk/js`):
//
//   node guest-sdk/js/componentize.mjs tools/jsonpath-js/tool.js guest-sdk/wit tool jsonpath-js.wasm

import { defineTools, ToolError } from '../../guest-sdk/js/warden-tool.js';

/** Largest document accepted, in characters. */
const MAX_DOCUMENT = 1_000_000;
const MAX_PATH = 1024;
const DEFAULT_MAX_MATCHES = 100;
const MAX_MATCHES = 10_000;
/** Most nodes a path step may select along the way; bounds `$..*..*`. */
const MAX_NODES = 200_000;

export const { describe, invoke } = defineTools([
  {
    name: 'json_query',
    description:
      'Extract values from a JSON document by a path (a JSONPath subset): `$.a.b`, `a.b[0]`, ' +
      "`$['key with spaces']`, `[*]` or `.*` (all children), `[-1]` (last), `[1:3]` (slice), " +
      '`[0,2]` (union), `$..name` (every `name` at any depth), `[?(@.price < 10)]` (filter: ' +
      '== != < <= > >= against a number, string, true, false or null; or `[?(@.key)]` for "has key"). ' +
      'Returns each match with its normalised path.',
    parameters: {
      type: 'object',
      properties: {
        document: {
          type: 'string',
          description: 'The JSON document, as text.',
          maxLength: MAX_DOCUMENT,
        },
        path: {
          type: 'string',
          description: 'For example `$.store.book[0].title` or `$..author`.',
          maxLength: MAX_PATH,
        },
        max_matches: {
          type: 'integer',
          minimum: 1,
          maximum: MAX_MATCHES,
          default: DEFAULT_MAX_MATCHES,
        },
      },
      required: ['document', 'path'],
      additionalProperties: false,
    },
    run({ document, path, max_matches = DEFAULT_MAX_MATCHES }) {
      return query(parseDocument(document), path, max_matches);
    },
  },
  {
    name: 'json_format',
    description:
      'Pretty-print (indent 1-8) or minify (indent 0) a JSON document, optionally sorting ' +
      'object keys. Also a quick way to check that a text is valid JSON.',
    parameters: {
      type: 'object',
      properties: {
        document: {
          type: 'string',
          description: 'The JSON document, as text.',
          maxLength: MAX_DOCUMENT,
        },
        indent: { type: 'integer', minimum: 0, maximum: 8, default: 2 },
        sort_keys: { type: 'boolean', default: false },
      },
      required: ['document'],
      additionalProperties: false,
    },
    run({ document, indent = 2, sort_keys = false }) {
      const value = parseDocument(document);
      return JSON.stringify(sort_keys ? sortKeys(value) : value, null, indent);
    },
  },
]);

function parseDocument(text) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ToolError(`\`document\` is not valid JSON: ${e.message}`);
  }
}

/** `value` with the keys of every object in sorted order (iteratively: no stack overflow). */
function sortKeys(value) {
  const root = { value };
  const stack = [[root, 'value']];
  while (stack.length > 0) {
    const [parent, key] = stack.pop();
    const v = parent[key];
    if (Array.isArray(v)) {
      const copy = v.slice();
      parent[key] = copy;
      for (let i = 0; i < copy.length; i++) stack.push([copy, i]);
    } else if (v !== null && typeof v === 'object') {
      const copy = {};
      for (const k of Object.keys(v).sort()) copy[k] = v[k];
      parent[key] = copy;
      for (const k of Object.keys(copy)) stack.push([copy, k]);
    }
  }
  return root.value;
}

// ---------------------------------------------------------------------------
// Paths.
//
// A path is a list of steps; a step is `{ descend, selector, text }` where
// `descend` means `..` (apply the selector to the node and all its
// descendants) and the selector is one of
//   { kind: 'name', name }          .name or ['name']
//   { kind: 'index', index }        [3] or [-1]
//   { kind: 'slice', start, end }   [1:3], [:2], [-2:]
//   { kind: 'union', items }        [0,2] or ['a','b'] (names and indexes)
//   { kind: 'wildcard' }            .* or [*]
//   { kind: 'filter', path, op, value }   [?(@.a.b < 3)] or [?(@.a)]

class PathError extends ToolError {}

function parsePath(text) {
  const p = { text, pos: 0 };
  const steps = [];
  skipSpaces(p);
  if (p.text[p.pos] === '$') {
    p.pos++;
  } else if (p.pos < p.text.length && p.text[p.pos] !== '.' && p.text[p.pos] !== '[') {
    // `store.book` means `$.store.book`.
    steps.push(step(p, false, parseName(p), p.pos));
  }
  for (;;) {
    skipSpaces(p);
    if (p.pos >= p.text.length) break;
    const start = p.pos;
    const c = p.text[p.pos];
    if (c === '.') {
      p.pos++;
      let descend = false;
      if (p.text[p.pos] === '.') {
        descend = true;
        p.pos++;
      }
      if (p.text[p.pos] === '[') {
        if (!descend) fail(p, 'expected a name or `*` after `.` (or drop the `.` before `[`)');
        steps.push(step(p, true, parseBracket(p), start));
      } else if (p.text[p.pos] === '*') {
        p.pos++;
        steps.push(step(p, descend, { kind: 'wildcard' }, start));
      } else {
        steps.push(step(p, descend, parseName(p), start));
      }
    } else if (c === '[') {
      steps.push(step(p, false, parseBracket(p), start));
    } else {
      fail(p, `unexpected \`${c}\`; expected \`.\`, \`..\` or \`[\``);
    }
  }
  return steps;
}

function step(p, descend, selector, start) {
  return { descend, selector, text: p.text.slice(start, p.pos).trim() };
}

/** A bare name runs to the next `.`, `[`, `]` or space (and, in a filter, `)` or an operator). */
function parseName(p, stop = /[.[\]\s]/) {
  const start = p.pos;
  while (p.pos < p.text.length && !stop.test(p.text[p.pos])) p.pos++;
  if (p.pos === start) fail(p, 'expected a name');
  return { kind: 'name', name: p.text.slice(start, p.pos) };
}

function parseBracket(p) {
  p.pos++; // [
  skipSpaces(p);
  let selector;
  if (p.text[p.pos] === '*') {
    p.pos++;
    selector = { kind: 'wildcard' };
  } else if (p.text[p.pos] === '?') {
    selector = parseFilter(p);
  } else {
    const items = [];
    for (;;) {
      skipSpaces(p);
      const c = p.text[p.pos];
      if (c === "'" || c === '"') {
        items.push({ kind: 'name', name: parseQuoted(p) });
      } else if (c === ':' || c === '-' || isDigit(c)) {
        items.push(parseIndexOrSlice(p));
      } else {
        fail(p, 'expected `*`, `?(...)`, an index, a slice or a quoted name inside `[...]`');
      }
      skipSpaces(p);
      if (p.text[p.pos] !== ',') break;
      p.pos++;
    }
    if (items.length === 1) {
      selector = items[0];
    } else {
      if (items.some((i) => i.kind === 'slice')) fail(p, 'a union (`[a,b]`) cannot hold a slice');
      selector = { kind: 'union', items };
    }
  }
  skipSpaces(p);
  expect(p, ']');
  return selector;
}

function parseIndexOrSlice(p) {
  const first = parseInteger(p);
  skipSpaces(p);
  if (p.text[p.pos] !== ':') {
    if (first === null) fail(p, 'expected an index');
    return { kind: 'index', index: first };
  }
  p.pos++;
  skipSpaces(p);
  const second = parseInteger(p);
  skipSpaces(p);
  if (p.text[p.pos] === ':') fail(p, 'slices with a step (`[a:b:c]`) are not supported');
  return { kind: 'slice', start: first, end: second };
}

function parseInteger(p) {
  const match = /^-?\d+/.exec(p.text.slice(p.pos));
  if (!match) return null;
  p.pos += match[0].length;
  const n = Number(match[0]);
  if (!Number.isSafeInteger(n)) fail(p, `index ${match[0]} is too large`);
  return n;
}

function parseQuoted(p) {
  const quote = p.text[p.pos++];
  let out = '';
  for (;;) {
    if (p.pos >= p.text.length) fail(p, `unterminated string; expected a closing ${quote}`);
    const c = p.text[p.pos++];
    if (c === quote) return out;
    if (c === '\\') {
      if (p.pos >= p.text.length) fail(p, 'unterminated escape');
      out += p.text[p.pos++];
    } else {
      out += c;
    }
  }
}

const FILTER_OPS = ['==', '!=', '<=', '>=', '<', '>'];

function parseFilter(p) {
  p.pos++; // ?
  skipSpaces(p);
  expect(p, '(');
  skipSpaces(p);
  expect(p, '@');
  // The relative path: `.name` and `['name']` and `[index]` steps only.
  const path = [];
  for (;;) {
    if (p.text[p.pos] === '.') {
      p.pos++;
      path.push(parseName(p, /[.[\]\s()<>=!]/).name);
    } else if (p.text[p.pos] === '[') {
      p.pos++;
      skipSpaces(p);
      const c = p.text[p.pos];
      if (c === "'" || c === '"') {
        path.push(parseQuoted(p));
      } else {
        const index = parseInteger(p);
        if (index === null) fail(p, 'expected a quoted name or an index');
        path.push(index);
      }
      skipSpaces(p);
      expect(p, ']');
    } else {
      break;
    }
  }
  skipSpaces(p);
  const op = FILTER_OPS.find((o) => p.text.startsWith(o, p.pos));
  let value;
  if (op !== undefined) {
    p.pos += op.length;
    skipSpaces(p);
    value = parseLiteral(p);
    skipSpaces(p);
  } else if (path.length === 0) {
    fail(p, 'expected a comparison (== != < <= > >=) after `@`');
  }
  expect(p, ')');
  return { kind: 'filter', path, op, value };
}

function parseLiteral(p) {
  const c = p.text[p.pos];
  if (c === "'" || c === '"') return parseQuoted(p);
  const match = /^(?:true|false|null|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/.exec(p.text.slice(p.pos));
  if (!match) fail(p, 'expected a number, a quoted string, true, false or null');
  p.pos += match[0].length;
  return JSON.parse(match[0]);
}

function expect(p, token) {
  if (p.text[p.pos] !== token) {
    fail(p, p.pos >= p.text.length ? `expected \`${token}\` at the end` : `expected \`${token}\``);
  }
  p.pos++;
}

function skipSpaces(p) {
  while (p.pos < p.text.length && /\s/.test(p.text[p.pos])) p.pos++;
}

function isDigit(c) {
  return c >= '0' && c <= '9';
}

function fail(p, message) {
  throw new PathError(`bad path ${JSON.stringify(p.text)} at column ${p.pos + 1}: ${message}`);
}

// ---------------------------------------------------------------------------
// Evaluation. A node is `{ value, parent, key }`: its value, the node it is
// in and its key or index there (the root has no parent). Paths are
// rebuilt from the links only for the matches returned, which keeps a
// `$..` over a large document within a modest memory limit.

function query(document, pathText, maxMatches) {
  if (!Number.isInteger(maxMatches) || maxMatches < 1 || maxMatches > MAX_MATCHES) {
    throw new ToolError(`max_matches must be between 1 and ${MAX_MATCHES}, got ${maxMatches}`);
  }
  const steps = parsePath(pathText);
  let nodes = [{ value: document, parent: null, key: null }];
  for (const s of steps) {
    const next = [];
    for (const node of s.descend ? descendants(nodes) : nodes) {
      select(node, s.selector, next);
      if (next.length > MAX_NODES) {
        throw new ToolError(
          `\`${s.text}\` selects more than ${MAX_NODES} nodes; narrow the path`,
        );
      }
    }
    if (next.length === 0) {
      return {
        count: 0,
        matches: [],
        truncated: false,
        note: `nothing matched \`${s.text}\` ${where(nodes)}`,
      };
    }
    nodes = next;
  }
  return {
    count: nodes.length,
    matches: nodes.slice(0, maxMatches).map((n) => ({ path: render(n), value: n.value })),
    truncated: nodes.length > maxMatches,
  };
}

/** Each node and everything under it, in document order. */
function descendants(nodes) {
  const out = [];
  const stack = nodes.slice().reverse();
  while (stack.length > 0) {
    const node = stack.pop();
    out.push(node);
    if (out.length > MAX_NODES) {
      throw new ToolError(`\`..\` visits more than ${MAX_NODES} nodes; narrow the path`);
    }
    const v = node.value;
    if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push(child(node, i));
    } else if (isObject(v)) {
      const keys = Object.keys(v);
      for (let i = keys.length - 1; i >= 0; i--) stack.push(child(node, keys[i]));
    }
  }
  return out;
}

function child(node, key) {
  return { value: node.value[key], parent: node, key };
}

function eachChild(node, f) {
  const v = node.value;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) f(child(node, i));
  } else if (isObject(v)) {
    for (const k of Object.keys(v)) f(child(node, k));
  }
}

function select(node, selector, out) {
  const v = node.value;
  switch (selector.kind) {
    case 'wildcard':
      eachChild(node, (child) => out.push(child));
      break;
    case 'name':
      if (Array.isArray(v) && /^\d+$/.test(selector.name)) {
        // `items.0` as in many dotted-path tools.
        pushIndex(node, Number(selector.name), out);
      } else if (isObject(v) && Object.prototype.hasOwnProperty.call(v, selector.name)) {
        out.push(child(node, selector.name));
      }
      break;
    case 'index':
      pushIndex(node, selector.index, out);
      break;
    case 'slice': {
      if (!Array.isArray(v)) break;
      const clamp = (i) => (i < 0 ? Math.max(v.length + i, 0) : Math.min(i, v.length));
      const start = selector.start === null ? 0 : clamp(selector.start);
      const end = selector.end === null ? v.length : clamp(selector.end);
      for (let i = start; i < end; i++) out.push(child(node, i));
      break;
    }
    case 'union':
      for (const item of selector.items) select(node, item, out);
      break;
    case 'filter':
      eachChild(node, (child) => {
        if (matches(child.value, selector)) out.push(child);
      });
      break;
    default:
      throw new Error(`unknown selector ${selector.kind}`);
  }
}

function pushIndex(node, index, out) {
  const v = node.value;
  if (!Array.isArray(v)) return;
  const i = index < 0 ? v.length + index : index;
  if (i >= 0 && i < v.length) out.push(child(node, i));
}

function matches(value, { path, op, value: expected }) {
  let v = value;
  for (const key of path) {
    if (typeof key === 'number' ? !Array.isArray(v) : !isObject(v)) return false;
    const k = typeof key === 'number' && key < 0 ? v.length + key : key;
    if (!Object.prototype.hasOwnProperty.call(v, k)) return false;
    v = v[k];
  }
  switch (op) {
    case undefined:
      return true; // `[?(@.key)]`: the key exists
    case '==':
      return v === expected;
    case '!=':
      return v !== expected;
  }
  // Order only numbers with numbers and strings with strings.
  if (typeof v !== typeof expected || (typeof v !== 'number' && typeof v !== 'string')) return false;
  switch (op) {
    case '<':
      return v < expected;
    case '<=':
      return v <= expected;
    case '>':
      return v > expected;
    case '>=':
      return v >= expected;
  }
  return false;
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** `$.store.book[0]["odd key"]` */
function render(node) {
  const path = [];
  for (let n = node; n.parent !== null; n = n.parent) path.push(n.key);
  let out = '$';
  for (const key of path.reverse()) {
    if (typeof key === 'number') out += `[${key}]`;
    else if (/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(key)) out += `.${key}`;
    else out += `[${JSON.stringify(key)}]`;
  }
  return out;
}

/** Where a step found nothing, for the model to fix its path. */
function where(nodes) {
  const node = nodes[0];
  const at = nodes.length === 1 ? `at ${render(node)}` : `in ${nodes.length} nodes, the first at ${render(node)}`;
  const v = node.value;
  if (Array.isArray(v)) return `${at} (an array of ${v.length})`;
  if (isObject(v)) {
    const keys = Object.keys(v);
    const shown = keys.slice(0, 20).join(', ');
    return `${at} (an object with keys: ${shown}${keys.length > 20 ? `, ... ${keys.length} in all` : ''})`;
  }
  return `${at} (${v === null ? 'null' : `a ${typeof v}`})`;
}
