// Loaded first when a component is built without the engine's `stdio`
// feature (componentize.mjs does that by default).
//
// Without it console output would vanish. Instead each console call becomes
// a line of the warden log (the `warden:sandbox/log` import every warden
// world has), which lands in the run's audit log, as stdout and stderr do.

import { log } from 'warden:sandbox/log@0.1.1';

function show(value) {
  if (typeof value === 'string') return value;
  if (value instanceof Error) return value.stack ? `${value}\n${value.stack}` : String(value);
  if (typeof value === 'object' && value !== null) {
    try {
      return JSON.stringify(value);
    } catch {
      return String(value);
    }
  }
  return String(value);
}

const levels = { log: 'info', info: 'info', debug: 'debug', warn: 'warn', error: 'error', trace: 'trace' };
for (const [method, level] of Object.entries(levels)) {
  console[method] = (...args) => log(level, args.map(show).join(' '));
}
