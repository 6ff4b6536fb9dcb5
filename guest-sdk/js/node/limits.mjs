// Node stand-in for `warden:sandbox/limits@0.1.1`: no policy here, so no
// limits are known and no plan is required.

export function get() {
  return { maxSteps: undefined, maxModelCalls: undefined, planRequired: false };
}
