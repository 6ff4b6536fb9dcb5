// `{{name}}`: a warden agent in JavaScript. It sends the task and the
// granted tools to the model, runs the tool calls the model asks for, feeds
// each result back (a refusal too, as text the model can read), and stops at
// the first reply with no tool calls.
//
// It holds no authority of its own: the host's policy decides every model
// call and every tool call, whatever this loop does.
//
// Build with `npm run build`; test with `npm test`.

import { HostError, defineAgent, log, message, model, tools } from 'warden-guest-js/agent';

/** Model turns before the agent gives up. */
export const MAX_STEPS = 8;

const SYSTEM_PROMPT =
  'You are a careful assistant working inside a sandbox. ' +
  'Use the tools you are given when they help. A tool result that starts with `error:` ' +
  'means the call did not happen: read the reason and adapt. When you have the answer, ' +
  'reply with it and call no tools.';

/**
 * The loop. `host` is the SDK's `model` and `tools` (through warden); a
 * test passes stand-ins.
 */
export async function solve(task, host = { model, tools }) {
  const granted = host.tools.list();
  const messages = [message.system(SYSTEM_PROMPT), message.user(task)];
  for (let step = 0; step < MAX_STEPS; step++) {
    let reply;
    try {
      reply = (await host.model.chat(messages, { tools: granted })).message;
    } catch (e) {
      if (e instanceof HostError) throw new Error(`the model call failed: ${e.describe()}`);
      throw e;
    }
    if (reply.toolCalls.length === 0) {
      return reply.content;
    }
    messages.push(message.assistant(reply.content, reply.toolCalls));
    for (const call of reply.toolCalls) {
      let content;
      try {
        content = await host.tools.call(call.name, call.arguments);
      } catch (e) {
        if (!(e instanceof HostError)) throw e;
        // A refusal is a value: the model reads why and adapts.
        content = `error: ${e.describe()}`;
      }
      messages.push(message.toolResult(call.id, content));
    }
  }
  throw new Error(`no answer after ${MAX_STEPS} model turns`);
}

export const { run } = defineAgent((task) => {
  log.info('starting');
  return solve(task);
});
