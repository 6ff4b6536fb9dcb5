// Unit tests in Node, no component build: `npm test`. Stand-ins play the
// model and the tools.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HostError } from 'warden-guest-js/agent';
import { MAX_STEPS, solve } from './agent.js';

process.env.WARDEN_LOG = '0';

/** A model reply: text, and tool calls as [name, arguments-json] pairs. */
function reply(content, ...calls) {
  const toolCalls = calls.map(([name, args], i) => ({ id: `call-${i}`, name, arguments: args }));
  return { message: { role: 'assistant', content, toolCalls } };
}

/** A stand-in host: the model answers `turns` in order; `tool` answers calls. */
function standIn(turns, tool) {
  const sent = [];
  return {
    sent,
    model: {
      chat(messages) {
        sent.push([...messages]);
        return turns.shift();
      },
    },
    tools: { list: () => [], call: tool },
  };
}

test('runs the tool the model asks for, then answers', async () => {
  const calls = [];
  const host = standIn([reply('', ['calc', '{"expression":"6 * 7"}']), reply('42')], (name, args) => {
    calls.push([name, args]);
    return '42';
  });
  assert.equal(await solve('What is 6 * 7?', host), '42');
  assert.deepEqual(calls, [['calc', '{"expression":"6 * 7"}']]);
});

test('the model reads a refusal', async () => {
  const host = standIn([reply('', ['calc', '{}']), reply('I cannot.')], () => {
    throw new HostError('denied', 'not granted (rule: default)');
  });
  assert.equal(await solve('1 / 0?', host), 'I cannot.');
  const last = host.sent.at(-1).at(-1);
  assert.equal(last.content, 'error: denied by policy: not granted (rule: default)');
});

test('gives up after MAX_STEPS', async () => {
  const turns = Array.from({ length: MAX_STEPS }, () => reply('', ['calc', '{}']));
  await assert.rejects(solve('loop', standIn(turns, () => '1')), /no answer after/);
});
