// Write warden tools in JavaScript.
//
// A warden tool component exports `describe` and `invoke` (the `tool` world
// of guest-sdk/wit/sandbox.wit). This module turns a list of plain tool
// objects into those two exports:
//
//   import { defineTools } from '../../guest-sdk/js/warden-tool.js';
//
//   export const { describe, invoke } = defineTools([
//     {
//       name: 'upper',
//       description: 'Upper-case a text.',
//       parameters: {
//         type: 'object',
//         properties: { text: { type: 'string' } },
//         required: ['text'],
//         additionalProperties: false,
//       },
//       run({ text }) {
//         return text.toUpperCase();
//       },
//     },
//   ]);
//
// `run` gets the parsed arguments object and returns a string (passed on as
// is) or any other JSON-serialisable value (sent as JSON text); it may be
// `async`. Throwing is how a tool reports a failure: the message becomes the
// `err` of `invoke`, which the agent reads as "tool `upper` returned an
// error: ...". Nothing a tool throws traps the component.
//
// How componentize-js maps the WIT (checked against 0.23.0's generated
// bindings): record fields are camelCase (`parameters-schema` is
// `parametersSchema`); for `result<string, string>` a returned value is
// `ok`, a returned `{ tag: 'ok' | 'err', val }` is used as is, a thrown
// non-Error value (or an object with a `payload`) is `err`, but a thrown
// `Error` instance TRAPS the component. So `invoke` below never throws.

import { log as wardenLog } from 'warden:sandbox/log@0.1.1';

/** Log lines that land in the run's audit log (the `warden:sandbox/log` import). */
export const log = {
  trace: (message) => write('trace', message),
  debug: (message) => write('debug', message),
  info: (message) => write('info', message),
  warn: (message) => write('warn', message),
  error: (message) => write('error', message),
};

function write(level, message) {
  wardenLog(level, typeof message === 'string' ? message : String(message));
}

/**
 * An error whose message is the whole story for the model: `invoke` reports
 * just the message, without the error's name. Plain `Error`s are reported
 * the same way; other kinds (`TypeError`, `RangeError`, ...) keep their name,
 * since they usually mean a bug in the tool or unexpected arguments.
 */
export class ToolError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ToolError';
  }
}

const NAME = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Turn tool declarations into the `describe` and `invoke` exports.
 *
 * Each tool is `{ name, description, parameters, run }`:
 * - `name`: what policies (`[tools.NAME]`) and the model call it; letters,
 *   digits, `_` and `-`, at most 64 characters, unique in the component.
 * - `description`: one or two sentences telling the model when to use it.
 * - `parameters`: the JSON Schema (an object) of its arguments object. The
 *   host validates every call against it before the tool runs.
 * - `run(args)`: does the work (see the module comment).
 *
 * Mistakes in the declarations throw here, at module top level, so
 * componentize-js fails the build with the message instead of producing a
 * component that fails later.
 */
export function defineTools(tools) {
  if (!Array.isArray(tools) || tools.length === 0) {
    throw new TypeError('defineTools: expected a non-empty array of tools');
  }
  const byName = new Map();
  const specs = tools.map((tool, index) => {
    const where = `defineTools: tool #${index + 1}`;
    if (tool === null || typeof tool !== 'object') {
      throw new TypeError(`${where} is not an object`);
    }
    const { name, description, parameters, run } = tool;
    if (typeof name !== 'string' || !NAME.test(name)) {
      throw new TypeError(
        `${where}: \`name\` must be 1-64 letters, digits, '_' or '-', got ${JSON.stringify(name)}`,
      );
    }
    if (byName.has(name)) {
      throw new TypeError(`${where}: a tool named \`${name}\` is already declared`);
    }
    if (typeof description !== 'string' || description.trim() === '') {
      throw new TypeError(`${where} (\`${name}\`): \`description\` must be a non-empty string`);
    }
    if (parameters === null || typeof parameters !== 'object' || Array.isArray(parameters)) {
      throw new TypeError(
        `${where} (\`${name}\`): \`parameters\` must be a JSON Schema object, e.g. { type: 'object', properties: {...} }`,
      );
    }
    if (typeof run !== 'function') {
      throw new TypeError(`${where} (\`${name}\`): \`run\` must be a function`);
    }
    byName.set(name, run);
    // Serialised once, when the component is built (componentize-js runs
    // the module's top level then and snapshots the result).
    return { name, description, parametersSchema: JSON.stringify(parameters) };
  });
  const names = specs.map((spec) => `\`${spec.name}\``);
  const provides =
    names.length === 1
      ? `this component provides ${names[0]}`
      : `this component provides ${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;

  function describe() {
    // Fresh copies: the bindings must not be able to change our specs.
    return specs.map((spec) => ({ ...spec }));
  }

  async function invoke(name, argumentsText) {
    const run = byName.get(name);
    if (run === undefined) {
      return err(`${provides}, not \`${name}\``);
    }
    let args;
    try {
      args = JSON.parse(argumentsText);
    } catch (e) {
      return err(`\`${name}\`: bad arguments ${brief(argumentsText)}: ${e.message}`);
    }
    if (args === null || typeof args !== 'object' || Array.isArray(args)) {
      return err(`\`${name}\`: bad arguments ${brief(argumentsText)}: expected a JSON object`);
    }
    let value;
    try {
      value = await run(args);
    } catch (e) {
      if (e instanceof Error && !(e instanceof ToolError) && e.stack) {
        // Likely a bug: the stack goes to the audit log for the tool's author.
        write('debug', `\`${name}\` threw ${describeThrown(e)}\n${e.stack}`);
      }
      return err(describeThrown(e));
    }
    if (typeof value === 'string') {
      return { tag: 'ok', val: value };
    }
    let text;
    try {
      text = JSON.stringify(value === undefined ? null : value);
    } catch (e) {
      return err(`\`${name}\` returned a value that is not JSON-serialisable: ${describeThrown(e)}`);
    }
    if (text === undefined) {
      // A function or a symbol.
      return err(`\`${name}\` returned a ${typeof value}, which is not JSON-serialisable`);
    }
    return { tag: 'ok', val: text };
  }

  return { describe, invoke };
}

function err(message) {
  return { tag: 'err', val: message };
}

/** What to tell the model about a thrown value. */
function describeThrown(e) {
  if (e instanceof Error) {
    const message = e.message || '(no message)';
    return e.name === 'Error' || e instanceof ToolError ? message : `${e.name}: ${message}`;
  }
  if (typeof e === 'string') {
    return e;
  }
  try {
    const json = JSON.stringify(e);
    return json === undefined ? String(e) : json;
  } catch {
    return String(e);
  }
}

/** Arguments quoted in an error, cut to a readable length. */
function brief(text, max = 200) {
  const quoted = JSON.stringify(text);
  return quoted.length <= max ? quoted : `${quoted.slice(0, max)}… [${text.length} characters]`;
}
