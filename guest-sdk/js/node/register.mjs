// Run a warden JS tool or agent in plain Node (for unit tests and quick
// checks, without building a component):
//
//   node --import ./guest-sdk/js/node/register.mjs --test tools/jsonpath-js/
//   node --import warden-guest-js/node/register.mjs --test     (in a project)
//
// Resolves the `warden:sandbox/*` imports that componentize-js provides in
// a component to stand-ins: `warden:sandbox/log@0.1.1` writes to stderr;
// the model and tools of the `agent` world answer that they need the host
// (a test passes its own stand-ins). And it makes Node's JavaScript behave
// as the component's engine where the two differ (engine.mjs: no
// `String.prototype.normalize`, no `Intl`, locale methods that ignore the
// locale, ...).
// Engine features are not emulated: in Node, Math.random(), Date.now() and
// fetch() work even where the component's build would disable them.

import { register } from 'node:module';

register('./hooks.mjs', import.meta.url);
// After the hooks: Node's own module loader reads some of what engine.mjs
// changes the first time it loads.
await import('./engine.mjs');
