// Node stand-in for `warden:sandbox/model@0.1.1`: there is no model here.

import { needsHost } from './stand-in.mjs';

export function chat() {
  throw needsHost('model.chat');
}
