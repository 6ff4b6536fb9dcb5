#!/usr/bin/env node
// Build a JavaScript module into a warden component with componentize-js.
//
//   node guest-sdk/js/componentize.mjs SOURCE [WIT_DIR] WORLD OUTPUT [--enable FEATURE]...
//   warden-componentize SOURCE WORLD OUTPUT       (the same, as the package's bin)
//
// e.g. (from the repository root, after `npm ci --prefix guest-sdk/js`):
//
//   node guest-sdk/js/componentize.mjs tools/jsonpath-js/tool.js guest-sdk/wit tool jsonpath-js.wasm
//
// WIT_DIR defaults to the WIT contract beside this SDK (`guest-sdk/wit`, or
// `wit/` inside a packed copy of it).
//
// Every WASI feature of the JS engine is disabled by default, so the
// component imports nothing but the world's own interfaces (for `tool`:
// `warden:sandbox/log`) and needs no grant from a policy. `--enable`
// brings one back (repeatable; `stdio`, `random`, `clocks`, `http`,
// `fetch-event`); see README.md for what each costs.
//
// A disabled feature does not make its JavaScript APIs disappear: without
// `random`, Math.random() would return the same numbers in every run (the
// state snapshotted at build time); without `clocks`, Date.now() would be the
// build time. So the component's entry is a generated module that first
// loads disabled/FEATURE.js for each disabled feature (making those APIs
// throw a clear error, and sending console output to the warden log), then
// re-exports SOURCE.
//
// That entry, SOURCE and everything it imports (relative paths, and
// packages from node_modules such as this SDK, `warden-guest-js`) are
// bundled into one module with rolldown first: componentize-js resolves no
// package names and lets a module import only files under one directory,
// so a project anywhere can use this SDK as an npm dependency. The
// `warden:` and `wasi:` imports stay imports (the component's).
//
// Nothing is fetched at build time: the SpiderMonkey engine, wizer, the
// WASI adapter and the bundler all come from node_modules.

import { componentize, version } from '@bytecodealliance/componentize-js';
import { rolldown } from 'rolldown';
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const FEATURES = ['stdio', 'random', 'clocks', 'http', 'fetch-event'];
const USAGE = `usage: node componentize.mjs SOURCE [WIT_DIR] WORLD OUTPUT [--enable FEATURE]...
  SOURCE   the component's JavaScript module (ES module exporting the world's functions)
  WIT_DIR  the WIT package [default: the one beside this SDK]
  WORLD    the world to build: tool or agent
  OUTPUT   where to write the component (.wasm)
  --enable FEATURE  keep an engine feature (${FEATURES.join(', ')}); all are off by default`;

function fail(message) {
  console.error(`componentize: ${message}`);
  process.exit(2);
}

const positional = [];
const enabled = new Set();
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const arg = argv[i];
  if (arg === '-h' || arg === '--help') {
    console.log(USAGE);
    process.exit(0);
  } else if (arg === '--enable' || arg.startsWith('--enable=')) {
    const value = arg === '--enable' ? argv[++i] : arg.slice('--enable='.length);
    for (const feature of (value ?? '').split(',')) {
      if (!FEATURES.includes(feature)) {
        fail(`unknown feature ${JSON.stringify(feature)}; expected one of ${FEATURES.join(', ')}`);
      }
      enabled.add(feature);
    }
  } else if (arg.startsWith('-')) {
    fail(`unknown option ${arg}\n${USAGE}`);
  } else {
    positional.push(arg);
  }
}
const sdkDir = dirname(fileURLToPath(import.meta.url));
if (positional.length === 3) {
  // The WIT contract beside this SDK: `guest-sdk/wit` in a warden
  // checkout, `wit/` in a packed copy.
  const packed = join(sdkDir, 'wit');
  const inCheckout = join(sdkDir, '..', 'wit');
  const found = await stat(join(packed, 'sandbox.wit')).then(
    () => packed,
    () => inCheckout,
  );
  positional.splice(1, 0, found);
}
if (positional.length !== 4) {
  fail(`expected 3 or 4 arguments, got ${positional.length}\n${USAGE}`);
}
const [source, witDir, world, output] = positional.map((p, i) => (i === 2 ? p : resolve(p)));
for (const [what, path] of [['SOURCE', source], ['WIT_DIR', witDir]]) {
  await stat(path).catch(() => fail(`${what} ${path} does not exist`));
}

const invokedFrom = process.cwd();
/** The bundle's source map, to name the original file and line in errors. */
let sourceMap;
const disableFeatures = FEATURES.filter((f) => !enabled.has(f));
const guards = disableFeatures.filter((f) => f !== 'fetch-event');
// A scratch directory of its own: the entry, the bundle, and the only
// directory componentize-js maps into the engine while building.
const scratch = await mkdtemp(join(tmpdir(), 'warden-componentize-'));
const entry = join(scratch, '.warden-entry.js');
const bundled = join(scratch, `${basename(source, '.js')}.js`);
await writeFile(
  entry,
  '// Generated by componentize.mjs; deleted after the build.\n' +
    guards.map((f) => `import ${JSON.stringify(join(sdkDir, 'disabled', `${f}.js`))};\n`).join('') +
    `export * from ${JSON.stringify(source)};\n`,
);
const started = performance.now();
let result;
let error;
try {
  await bundle(entry, bundled);
  process.chdir(scratch);
  result = await componentize({
    sourcePath: basename(bundled),
    sourceName: relative(invokedFrom, source), // names the module in binding errors
    witPath: witDir,
    worldName: world,
    disableFeatures,
  });
} catch (e) {
  error = e;
} finally {
  process.chdir(invokedFrom);
  await rm(scratch, { recursive: true, force: true });
}
if (error) {
  fail(`building ${source} failed:\n${explain(error && error.message ? error.message : String(error))}`);
}
await mkdir(dirname(output), { recursive: true });
await writeFile(output, result.component);
const seconds = ((performance.now() - started) / 1000).toFixed(1);
const mib = (result.component.length / (1024 * 1024)).toFixed(1);
console.log(
  `componentize-js ${version}: wrote ${output} (${mib} MiB) in ${seconds}s; ` +
    `engine features: ${[...enabled].join(', ') || 'none'}`,
);

/** Bundle `input` and what it imports into the one module `file`. */
async function bundle(input, file) {
  const unresolved = [];
  const build = await rolldown({
    input,
    platform: 'neutral',
    // The component's own imports: resolved by componentize-js against the WIT.
    external: [/^warden:/, /^wasi:/],
    onLog(level, log, handler) {
      if (log.code === 'UNRESOLVED_IMPORT') {
        unresolved.push(log.message);
      } else if (level === 'warn' && log.code !== 'EMPTY_IMPORT_META') {
        handler(level, log);
      }
    },
  });
  try {
    if (unresolved.length > 0) {
      throw new Error(
        `${unresolved.join('\n')}\n` +
          'an import must be a relative path or a package installed in node_modules (`npm install NAME`); ' +
          'Node built-ins (`node:fs`, ...) do not exist in a component',
      );
    }
    const { output } = await build.generate({ file, format: 'esm', sourcemap: true });
    const [chunk] = output;
    await writeFile(file, chunk.code);
    // `sources` are relative to the bundle's directory.
    sourceMap = { file: basename(file), map: chunk.map, dir: dirname(file) };
  } finally {
    await build.close();
  }
}

/** `message` with every `BUNDLE:LINE:COL` the engine reported as the
 * source's own file, line and column. */
function toSource(message) {
  if (!sourceMap) return message;
  const lines = decodeMappings(sourceMap.map.mappings);
  const pattern = new RegExp(`(?<![\\w./-])${escapeRegExp(sourceMap.file)}:(\\d+):(\\d+)`, 'g');
  return message.replace(pattern, (whole, line, column) => {
    const segments = lines[Number(line) - 1] ?? [];
    let best;
    for (const segment of segments) {
      if (segment[0] <= Number(column) - 1) best = segment;
    }
    if (!best || best.length < 4) return whole;
    const file = resolve(sourceMap.dir, sourceMap.map.sources[best[1]]);
    return `${relative(invokedFrom, file)}:${best[2] + 1}:${best[3] + 1}`;
  });
}

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Source map `mappings`: per generated line, its segments as absolute
 * [column, source, line, column] (0-based). */
function decodeMappings(mappings) {
  const BASE64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  const state = [0, 0, 0, 0];
  return mappings.split(';').map((line) => {
    state[0] = 0;
    return line
      .split(',')
      .filter((segment) => segment !== '')
      .map((segment) => {
        const values = [];
        let value = 0;
        let shift = 0;
        for (const char of segment) {
          const digit = BASE64.indexOf(char);
          value += (digit & 31) << shift;
          if (digit & 32) {
            shift += 5;
          } else {
            values.push(value & 1 ? -(value >>> 1) : value >>> 1);
            value = 0;
            shift = 0;
          }
        }
        return values.map((delta, i) => (state[i] += delta));
      });
  });
}

/** The engine's error, with what to do about the failures it cannot explain itself. */
function explain(message) {
  message = toSource(message);
  if (/invalid (class )?property name in regular expression/.test(message)) {
    return (
      `${message}\n` +
      'help: the JavaScript engine of a warden component has no Unicode property escapes ' +
      '(`\\p{...}`, `\\P{...}` in a `u` or `v` regular expression): it is built without ICU. ' +
      'Use explicit ranges (e.g. `[A-Za-z\\u00C0-\\u024F]`) instead; see "What the JavaScript engine lacks" ' +
      'in docs/writing-tools.md'
    );
  }
  return message;
}
