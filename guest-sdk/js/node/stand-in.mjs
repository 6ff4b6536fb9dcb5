// What a call to the host gives outside a component (in Node, under
// `node --test`): an error saying so, shaped as componentize-js throws a
// WIT `error` (a `payload` of `{ tag, val }`), as the Rust SDK does off
// Wasm. Tests pass their own stand-ins for the model and the tools instead.

export function needsHost(what) {
  const error = new Error(`\`${what}\` needs the warden host (see error.payload)`);
  error.payload = {
    tag: 'failed',
    val: `\`${what}\` needs the warden host: this code runs outside a component (in Node), where there is no host to call`,
  };
  return error;
}
