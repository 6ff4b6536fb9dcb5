// Module hooks for register.mjs.

const STAND_INS = {
  'warden:sandbox/log@0.1.1': new URL('./log.mjs', import.meta.url).href,
  'warden:sandbox/model@0.1.1': new URL('./model.mjs', import.meta.url).href,
  'warden:sandbox/tools@0.1.1': new URL('./tools.mjs', import.meta.url).href,
  'warden:sandbox/limits@0.1.1': new URL('./limits.mjs', import.meta.url).href,
};

export async function resolve(specifier, context, nextResolve) {
  if (Object.hasOwn(STAND_INS, specifier)) {
    return { url: STAND_INS[specifier], shortCircuit: true };
  }
  if (specifier.startsWith('warden:')) {
    throw new Error(`no Node stand-in for ${specifier} (only ${Object.keys(STAND_INS).join(', ')})`);
  }
  return nextResolve(specifier, context);
}
