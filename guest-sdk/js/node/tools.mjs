// Node stand-in for `warden:sandbox/tools@0.1.1`: no tools are granted here.

import { needsHost } from './stand-in.mjs';

export function listTools() {
  return [];
}

export function call(name) {
  throw needsHost(`tools.call(${name})`);
}

export function declarePlan() {
  throw needsHost('tools.declarePlan');
}
