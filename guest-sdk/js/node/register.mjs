// Run a warden JS tool in plain Node (for unit tests and quick checks,
// without building a component):
//
//   node --import ./guest-sdk/js/node/register.mjs --test tools/jsonpath-js/
//
// Resolves the `warden:sandbox/*` imports that componentize-js provides in
// a component to stand-ins: `warden:sandbox/log@0.1.0` writes to stderr.
// Engine features are not emulated: in Node, Math.random(), Date.now() and
// fetch() work even where the component's build would disable them.

import { register } from 'node:module';

register('./hooks.mjs', import.meta.url);
