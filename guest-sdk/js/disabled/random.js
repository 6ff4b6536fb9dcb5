// Loaded first when a component is built without the engine's `random`
// feature (componentize.mjs does that by default).
//
// Without it the engine's random state is whatever it was when the component
// was built and snapshotted: Math.random() and crypto.getRandomValues()
// return the SAME values in every instance and every run. Better to fail
// loudly than to hand out predictable "random" numbers.

function unavailable(what) {
  return function () {
    throw new Error(
      `${what} is not available: this component was built without the \`random\` feature ` +
        '(rebuild with `--enable random`; the component then imports wasi:random)',
    );
  };
}

Math.random = unavailable('Math.random()');
if (typeof crypto === 'object' && crypto !== null) {
  for (const method of ['getRandomValues', 'randomUUID']) {
    Object.defineProperty(crypto, method, {
      value: unavailable(`crypto.${method}()`),
      writable: true,
      configurable: true,
    });
  }
}
