// Loaded first when a component is built without the engine's `clocks`
// feature (componentize.mjs does that by default).
//
// Without it the wall clock is frozen at the moment the component was built
// (Date.now() and new Date() return the build time in every run) and the
// monotonic clock traps (performance.now(), setTimeout). Fail with a message
// instead.

function unavailable(what) {
  return new Error(
    `${what} is not available: this component was built without the \`clocks\` feature ` +
      '(rebuild with `--enable clocks`; the component then imports wasi:clocks)',
  );
}

const BuildTimeDate = Date;

// `new Date(value)`, Date.parse, Date.UTC and every method still work; only
// reading the current time fails.
class WardenDate extends BuildTimeDate {
  constructor(...args) {
    if (args.length === 0) {
      throw unavailable('new Date()');
    }
    super(...args);
  }

  static now() {
    throw unavailable('Date.now()');
  }
}
globalThis.Date = WardenDate;

if (typeof performance === 'object' && performance !== null) {
  Object.defineProperty(performance, 'now', {
    value() {
      throw unavailable('performance.now()');
    },
    writable: true,
    configurable: true,
  });
}
for (const timer of ['setTimeout', 'setInterval']) {
  globalThis[timer] = function () {
    throw unavailable(`${timer}()`);
  };
}
