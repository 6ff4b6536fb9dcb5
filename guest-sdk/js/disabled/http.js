// Loaded first when a component is built without the engine's `http`
// feature (componentize.mjs does that by default). Without it fetch() traps
// the component; reject with a message instead.

globalThis.fetch = async function fetch() {
  throw new TypeError(
    'fetch() is not available: this component was built without the `http` feature ' +
      "(rebuild with `--enable http`; the policy must then grant the tool's hosts with `http`)",
  );
};
