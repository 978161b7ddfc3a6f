// P2uError: every error p2u throws or rejects with, and the conversions
// from what fetch, the Cache API and the wasm runtime throw.

/** An error from p2u: `kind` says what went wrong ('network', 'abort',
 * 'corrupt', 'mismatch', 'header', 'truncated', 'invalid', 'engine', …;
 * the list is `P2uErrorKind` in p2u.d.ts). */
export class P2uError extends Error {
  constructor(message, kind, options) {
    super(message, options);
    this.name = 'P2uError';
    this.kind = kind;
  }
}

/** `e` as a P2uError (`fallbackKind` when it says nothing of its own). */
export function asP2uError(e, fallbackKind = 'internal') {
  if (e instanceof P2uError) return e;
  if (e && e.name === 'AbortError') return new P2uError('load aborted', 'abort', { cause: e });
  if (e && e.name === 'P2uError') return new P2uError(e.message, e.kind || fallbackKind, { cause: e });
  if (e instanceof WebAssembly.RuntimeError) {
    return new P2uError(`internal error in the wasm runtime (a bug, please report): ${e.message}`, 'internal', { cause: e });
  }
  return new P2uError(String(e && e.message ? e.message : e), fallbackKind, { cause: e });
}
