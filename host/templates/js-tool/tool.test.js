// Unit tests in Node, no component build: `npm test`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { count, describe, invoke } from './tool.js';

test('counts words and characters', async () => {
  assert.deepEqual(count('hello warden'), { words: 2, characters: 12 });
  // `invoke` is the component's export: { tag: 'ok' | 'err', val }.
  assert.deepEqual(await invoke('{{tool}}', '{"text": "hello warden"}'), {
    tag: 'ok',
    val: '{"words":2,"characters":12}',
  });
});

test('refuses empty text and unknown tools', async () => {
  assert.deepEqual(await invoke('{{tool}}', '{"text": " "}'), { tag: 'err', val: '`text` is empty' });
  assert.equal((await invoke('nope', '{}')).tag, 'err');
});

test('describes one tool', () => {
  assert.deepEqual(describe().map((spec) => spec.name), ['{{tool}}']);
});
