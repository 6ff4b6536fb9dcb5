// Make Node's JavaScript behave as the engine of a warden component does,
// where the two differ in ways a test would not notice: loaded by
// register.mjs, before any test code.
//
// componentize-js builds SpiderMonkey without ICU and without a few
// globals. Measured against componentize-js 0.23.0 (a probe component run
// by `warden call`, the same probe run in Node 20), the component has:
//
// - no `String.prototype.normalize`, and no `Intl` at all;
// - locale methods that ignore the locale: `localeCompare` compares UTF-16
//   code units (and returns their difference), `toLocaleUpperCase` and
//   `toLocaleLowerCase` are `toUpperCase` and `toLowerCase`, a number's or
//   a bigint's `toLocaleString` is `String(value)`, and a date's
//   `toLocaleString`, `toLocaleDateString` and `toLocaleTimeString` are
//   C's `%c`, `%x` and `%X` (in UTC, the component's only time zone; an
//   invalid date is `InvalidDate`);
// - no Unicode property escapes in regular expressions (`\p{L}`, `\P{L}`
//   with the `u` or `v` flag are a SyntaxError);
// - no `WebAssembly`, `SharedArrayBuffer` or `Atomics`.
//
// So here those are removed or replaced the same way, except the last
// three, which Node itself needs (its module hooks and `fetch` use them):
// a test can still use them, and the component then lacks them. A regular expression
// *literal* with `\p{...}` cannot be caught here (Node compiles it before
// any code runs): the component build fails on it, with the file and line.
// Node has what the component lacks beyond this list only as Node APIs
// (`process`, `Buffer`, `require`), which no component has either.

delete String.prototype.normalize;
delete globalThis.Intl;

function define(target, name, value) {
  Object.defineProperty(target, name, { value, writable: true, configurable: true, enumerable: false });
}

define(String.prototype, 'localeCompare', function localeCompare(that) {
  const a = String(this);
  const b = String(that);
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = a.charCodeAt(i) - b.charCodeAt(i);
    if (d !== 0) return d;
  }
  return a.length - b.length;
});
define(String.prototype, 'toLocaleUpperCase', function toLocaleUpperCase() {
  return String(this).toUpperCase();
});
define(String.prototype, 'toLocaleLowerCase', function toLocaleLowerCase() {
  return String(this).toLowerCase();
});
define(Number.prototype, 'toLocaleString', function toLocaleString() {
  return Number.prototype.toString.call(this);
});
define(BigInt.prototype, 'toLocaleString', function toLocaleString() {
  return BigInt.prototype.toString.call(this);
});

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const two = (n) => String(n).padStart(2, '0');
const time = (d) => `${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:${two(d.getUTCSeconds())}`;
function dateFormat(format) {
  return function () {
    const d = this;
    // Without a space, unlike `String(date)`: as the component has it.
    if (Number.isNaN(Date.prototype.getTime.call(d))) return 'InvalidDate';
    return format(d);
  };
}
define(
  Date.prototype,
  'toLocaleString',
  dateFormat(
    (d) =>
      `${DAYS[d.getUTCDay()]} ${MONTHS[d.getUTCMonth()]} ${String(d.getUTCDate()).padStart(2, ' ')} ` +
      `${time(d)} ${d.getUTCFullYear()}`,
  ),
);
define(
  Date.prototype,
  'toLocaleDateString',
  dateFormat((d) => `${two(d.getUTCMonth() + 1)}/${two(d.getUTCDate())}/${d.getUTCFullYear()}`),
);
define(Date.prototype, 'toLocaleTimeString', dateFormat(time));

// `\p{...}` / `\P{...}` in a pattern compiled with `u` or `v`: an escaped
// backslash (`\\p`) is a literal backslash, not an escape.
const PROPERTY_ESCAPE = /(?<!\\)(?:\\\\)*\\[pP]\{/;
const NativeRegExp = RegExp;
globalThis.RegExp = new Proxy(NativeRegExp, {
  construct(target, args, newTarget) {
    refuseProperties(args);
    return Reflect.construct(target, args, newTarget === globalThis.RegExp ? target : newTarget);
  },
  apply(target, self, args) {
    refuseProperties(args);
    return Reflect.apply(target, self, args);
  },
});

function refuseProperties([pattern, flags]) {
  const source = pattern instanceof NativeRegExp ? pattern.source : String(pattern ?? '');
  const effective = flags === undefined && pattern instanceof NativeRegExp ? pattern.flags : String(flags ?? '');
  if (/[uv]/.test(effective) && PROPERTY_ESCAPE.test(source)) {
    throw new SyntaxError(
      'invalid property name in regular expression: a warden component has no Unicode property ' +
        'escapes (\\p{...}); use explicit ranges (this error comes from guest-sdk/js/node/engine.mjs, ' +
        'which makes Node behave as the component does)',
    );
  }
}
