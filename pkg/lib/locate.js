// Where this package's own files are: the wasm runtime and worker.js.
//
// Bundlers find `new URL('…', import.meta.url)` written literally and ship
// the file it names (Vite, webpack 5, Parcel, Rollup with a plugin), so the
// package writes exactly that. One setup breaks it: Vite's dev server
// serves a pre-bundled copy of the package's JS from
// `node_modules/.vite/deps/`, away from the files. Its `_metadata.json`,
// next to that copy, says where the original entry is; the files are then
// resolved from there. Anything else: pass `{ wasm, workerUrl }`.

import { P2uError } from './errors.js';

/** The wasm runtime next to this module, as bundlers see it. */
export const defaultWasmUrl = () => new URL('../wasm/p2u_wasm_bg.wasm', import.meta.url);

/** Paths of the package's files from its root (where package.json is). */
export const WASM_PATH = 'wasm/p2u_wasm_bg.wasm';
export const WORKER_PATH = 'worker.js';

let preBundled;

/** The package root when this module runs as a Vite dev pre-bundle, else null. */
export function preBundledRoot() {
  const here = new URL(import.meta.url);
  if (!here.pathname.includes('/.vite/deps/')) return Promise.resolve(null);
  preBundled ??= (async () => {
    const meta = new URL('_metadata.json', here);
    const file = here.pathname.split('/').pop();
    const hint = `set optimizeDeps.exclude: ['p2u-onnx'] in the Vite config, or pass { wasm, workerUrl }`;
    let deps;
    try {
      const res = await fetch(meta);
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      deps = Object.values((await res.json()).optimized ?? {});
    } catch (e) {
      throw new P2uError(`p2u runs pre-bundled from ${here.pathname} and ${meta.pathname} could not be read to find its files (${e.message}): ${hint}`, 'network', { cause: e });
    }
    const entry = deps.find((d) => d.file === file) ?? deps.find((d) => /(^|\/)p2u\.js$/.test(d.src ?? ''));
    if (!entry) throw new P2uError(`p2u runs pre-bundled from ${here.pathname} and ${meta.pathname} does not list it: ${hint}`, 'network');
    return new URL('.', new URL(entry.src, meta));
  })();
  return preBundled;
}
