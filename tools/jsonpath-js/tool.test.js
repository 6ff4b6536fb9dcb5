// Unit tests in plain Node (no component build):
//   node --import ./guest-sdk/js/node/register.mjs --test tools/jsonpath-js/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describe, invoke } from './tool.js';

process.env.WARDEN_LOG = '0';

const STORE = JSON.stringify({
  store: {
    book: [
      { category: 'reference', author: 'Nigel Rees', title: 'Sayings of the Century', price: 8.95 },
      { category: 'fiction', author: 'Evelyn Waugh', title: 'Sword of Honour', price: 12.99 },
      { category: 'fiction', author: 'Herman Melville', title: 'Moby Dick', isbn: '0-553-21311-3', price: 8.99 },
      { category: 'fiction', author: 'J. R. R. Tolkien', title: 'The Lord of the Rings', isbn: '0-395-19395-8', price: 22.99 },
    ],
    bicycle: { color: 'red', price: 19.95 },
    'odd key': 1,
  },
});

async function ok(name, args) {
  const result = await invoke(name, JSON.stringify(args));
  assert.equal(result.tag, 'ok', `expected ok, got ${JSON.stringify(result)}`);
  return result.val;
}

async function err(name, args) {
  const result = await invoke(name, typeof args === 'string' ? args : JSON.stringify(args));
  assert.equal(result.tag, 'err', `expected err, got ${JSON.stringify(result)}`);
  return result.val;
}

const values = async (path, extra = {}) =>
  JSON.parse(await ok('json_query', { document: STORE, path, ...extra })).matches.map((m) => m.value);

test('describe lists both tools with JSON Schemas as text', () => {
  const specs = describe();
  assert.deepEqual(specs.map((s) => s.name), ['json_query', 'json_format']);
  for (const spec of specs) {
    assert.equal(JSON.parse(spec.parametersSchema).type, 'object');
    assert.ok(spec.description.length > 20);
  }
});

test('json_query: names, indexes, slices, unions, wildcards', async () => {
  assert.deepEqual(await values('$.store.book[0].title'), ['Sayings of the Century']);
  assert.deepEqual(await values('store.bicycle.color'), ['red']);
  assert.deepEqual(await values('store.book.0.price'), [8.95]);
  assert.deepEqual(await values('$.store.book[-1].author'), ['J. R. R. Tolkien']);
  assert.deepEqual(await values('$.store.book[1:3].price'), [12.99, 8.99]);
  assert.deepEqual(await values('$.store.book[-2:].price'), [8.99, 22.99]);
  assert.deepEqual(await values('$.store.book[0,2].price'), [8.95, 8.99]);
  assert.deepEqual(await values("$.store['odd key']"), [1]);
  assert.deepEqual(await values('$.store.bicycle.*'), ['red', 19.95]);
  assert.equal((await values('$.store.book[*]')).length, 4);
});

test('json_query: recursive descent and filters', async () => {
  assert.deepEqual(await values('$..bicycle.price'), [19.95]);
  assert.equal((await values('$..price')).length, 5);
  assert.deepEqual(await values('$.store.book[?(@.price < 9)].title'), ['Sayings of the Century', 'Moby Dick']);
  assert.deepEqual(await values('$.store.book[?(@.isbn)].price'), [8.99, 22.99]);
  assert.deepEqual(await values("$..book[?(@.category == 'reference')].author"), ['Nigel Rees']);
  assert.deepEqual(await values('$.store.book[?(@.price >= 20)].title'), ['The Lord of the Rings']);
});

test('json_query: normalised paths, truncation, and a note when nothing matches', async () => {
  const all = JSON.parse(await ok('json_query', { document: STORE, path: '$..author', max_matches: 2 }));
  assert.equal(all.count, 4);
  assert.equal(all.truncated, true);
  assert.deepEqual(all.matches.map((m) => m.path), ['$.store.book[0].author', '$.store.book[1].author']);
  const odd = JSON.parse(await ok('json_query', { document: STORE, path: '$.store["odd key"]' }));
  assert.equal(odd.matches[0].path, '$.store["odd key"]');
  const none = JSON.parse(await ok('json_query', { document: STORE, path: '$.store.books[0]' }));
  assert.equal(none.count, 0);
  assert.match(none.note, /nothing matched `\.books` at \$\.store \(an object with keys: book, bicycle, odd key\)/);
});

test('json_query: bad paths and documents are errors that say where', async () => {
  assert.match(await err('json_query', { document: STORE, path: '$.store.book[' }), /bad path .* at column 14/);
  assert.match(await err('json_query', { document: STORE, path: '$.a[1:2:3]' }), /step .* not supported/);
  assert.match(await err('json_query', { document: STORE, path: '$..' }), /expected a name/);
  assert.match(await err('json_query', { document: '{"a":', path: '$.a' }), /^`document` is not valid JSON: /);
});

test('json_format: indent, minify, sort keys', async () => {
  const doc = '{"b":1,"a":[1,{"d":2,"c":3}]}';
  assert.equal(await ok('json_format', { document: doc, indent: 0 }), doc);
  assert.equal(
    await ok('json_format', { document: doc, indent: 0, sort_keys: true }),
    '{"a":[1,{"c":3,"d":2}],"b":1}',
  );
  assert.equal(await ok('json_format', { document: '[1]' }), '[\n  1\n]');
});

test('the helper: unknown tools, bad JSON arguments, non-object arguments', async () => {
  assert.equal(await err('nope', {}), 'this component provides `json_query` and `json_format`, not `nope`');
  assert.match(await err('json_query', '{bad'), /^`json_query`: bad arguments "\{bad": /);
  assert.match(await err('json_query', '[1]'), /expected a JSON object/);
});
