// Write warden agents in JavaScript.
//
// An agent component exports `run(task)` and imports the host's model and
// tools (the `agent` world of guest-sdk/wit/sandbox.wit). This module wraps
// those imports, turning the host's refusals into `HostError`s, and turns
// an async function into the `run` export:
//
//   import { defineAgent, message, model, tools } from 'warden-guest-js/agent';
//
//   export const { run } = defineAgent(async (task) => {
//     const reply = model.chat([message.user(task)], { tools: tools.list() });
//     return reply.message.content;
//   });
//
// Every call goes through the host's policy: a refused or failed one throws
// a `HostError` whose `kind` is `denied`, `budget-exhausted`, `invalid` or
// `failed` and whose `reason` names the rule. Nothing here grants anything.
//
// How componentize-js maps the WIT (checked against 0.23.0): an import's
// `err` is thrown as an object whose `payload` is `{ tag, val }`; record
// fields are camelCase (`toolCalls`, `toolCallId`, `maxTokens`); enums are
// their lowercase names (`'user'`, `'tool-calls'`).

import { chat as witChat } from 'warden:sandbox/model@0.1.1';
import {
  call as witCall,
  declarePlan as witDeclarePlan,
  listTools as witListTools,
} from 'warden:sandbox/tools@0.1.1';
import { get as witLimits } from 'warden:sandbox/limits@0.1.1';

export { log } from './warden-tool.js';

const DESCRIBE = {
  denied: 'denied by policy',
  'budget-exhausted': 'budget exhausted',
  invalid: 'invalid request',
  failed: 'failed',
};

/** The host did not (or could not) do what the agent asked. */
export class HostError extends Error {
  /**
   * @param {string} kind `denied`, `budget-exhausted`, `invalid` or `failed`
   * @param {string} reason the host's text; names the policy rule when there is one
   */
  constructor(kind, reason) {
    super(`${DESCRIBE[kind] ?? kind}: ${reason}`);
    this.name = 'HostError';
    this.kind = kind;
    this.reason = reason;
  }

  /** One line for a model or a person, e.g. `denied by policy: ... (rule: default)`. */
  describe() {
    return this.message;
  }
}

/** Run a host import; its `err` becomes a `HostError`. */
function host(call) {
  try {
    return call();
  } catch (e) {
    const payload = e && e.payload;
    if (payload && typeof payload.tag === 'string') {
      // `budget-exhausted` as the WIT spells it, whatever the bindings do.
      const kind = payload.tag.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
      throw new HostError(kind, String(payload.val));
    }
    throw e;
  }
}

/** Messages, as the model interface takes them. */
export const message = {
  system: (content) => plain('system', content),
  user: (content) => plain('user', content),
  /** An assistant message, possibly asking for tool calls (`reply.message.toolCalls`). */
  assistant: (content, toolCalls = []) => ({ ...plain('assistant', content), toolCalls: [...toolCalls] }),
  /** The result of the tool call `callId`, for the model to read. */
  toolResult: (callId, content) => ({ ...plain('tool', content), toolCallId: String(callId) }),
};

function plain(role, content) {
  return { role, content: String(content), toolCalls: [], toolCallId: undefined };
}

/** The model, through the host. */
export const model = {
  /**
   * Send a chat request; returns `{ message: { role, content, toolCalls }, usage, finishReason, model }`.
   * @param {object[]} messages
   * @param {{ tools?: object[], model?: string, maxTokens?: number, temperature?: number }} [options]
   */
  chat(messages, { tools = [], model: name, maxTokens, temperature } = {}) {
    return host(() =>
      witChat({ messages: [...messages], tools: [...tools], model: name, maxTokens, temperature }),
    );
  },
};

/** The tools the policy grants. */
export const tools = {
  /** The granted tools: `{ name, description, parametersSchema }` (the schema as JSON text). */
  list() {
    return witListTools();
  },
  /**
   * Call a tool; returns its result text.
   * @param {string} name
   * @param {string | object} args JSON text, or a value to encode
   */
  call(name, args) {
    const text = typeof args === 'string' ? args : JSON.stringify(args);
    return host(() => witCall(name, text));
  },
  /**
   * Declare the plan: the tools with effects this run will use. Accepted
   * once, before the session carries any label; once labeled, a tool with
   * effects outside the plan is refused. Throws a `HostError` (`denied`
   * when too late or declared already, `invalid` for a name that is not a
   * granted tool).
   * @param {string[]} names
   */
  declarePlan(names) {
    return host(() => witDeclarePlan([...names].map(String)));
  },
};

/**
 * The run's limits as the policy sets them:
 * `{ maxSteps, maxModelCalls, planRequired }` (`undefined` where unset).
 */
export function limits() {
  return witLimits();
}

/**
 * Turn `answer(task)` (may be async) into the `run` export. Its result (a
 * string, or any value sent as JSON) is the run's answer; whatever it
 * throws ends the run with the message (a `HostError` with its
 * description; other kinds than `Error` keep their name), never a trap.
 */
export function defineAgent(answer) {
  if (typeof answer !== 'function') {
    throw new TypeError('defineAgent: expected a function `answer(task)`');
  }
  async function run(task) {
    try {
      const value = await answer(task);
      return { tag: 'ok', val: typeof value === 'string' ? value : JSON.stringify(value ?? null) };
    } catch (e) {
      if (e instanceof Error) {
        const named = e.name === 'Error' || e instanceof HostError;
        return { tag: 'err', val: named ? e.message : `${e.name}: ${e.message}` };
      }
      return { tag: 'err', val: String(e) };
    }
  }
  return { run };
}
