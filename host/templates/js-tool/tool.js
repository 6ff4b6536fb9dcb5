// `{{tool}}`: a warden tool in JavaScript. It works only on its arguments,
// so its policy grants it nothing (no HTTP, files, environment or secrets).
//
// Build with `npm run build` (componentize-js, through the SDK); test with
// `npm test` (Node, with the SDK's stand-ins for the host).
//
// The module's top level runs once, at build time, and is snapshotted; each
// call then runs in a fresh instance of that snapshot. The component's
// JavaScript engine has no `Intl` and no `String.prototype.normalize`, and
// its locale methods ignore the locale; `npm test` runs Node the same way
// (see "What the JavaScript engine lacks" in warden's docs/writing-tools.md).

import { defineTools, ToolError } from 'warden-guest-js';

/** The longest text accepted (the schema says so too: the host refuses
 * longer arguments before the tool runs). */
const MAX_TEXT = 100_000;

export const { describe, invoke } = defineTools([
  {
    name: '{{tool}}',
    description: 'Count the words and characters of a text.',
    parameters: {
      type: 'object',
      properties: { text: { type: 'string', maxLength: MAX_TEXT } },
      required: ['text'],
      additionalProperties: false,
    },
    run({ text }) {
      return count(text);
    },
  },
]);

/** The tool's work, apart from the plumbing. */
export function count(text) {
  if (text.trim() === '') {
    // The agent reads: tool `{{tool}}` returned an error: `text` is empty
    throw new ToolError('`text` is empty');
  }
  return { words: text.split(/\s+/).filter(Boolean).length, characters: [...text].length };
}
