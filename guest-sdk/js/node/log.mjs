// Node stand-in for `warden:sandbox/log@0.1.1`.

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

export function log(level, message) {
  if (!LEVELS.includes(level)) {
    throw new TypeError(`"${level}" is not one of the cases of level`);
  }
  if (process.env.WARDEN_LOG !== '0') {
    process.stderr.write(`[${level}] ${message}\n`);
  }
}
