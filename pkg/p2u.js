// p2u — progressive model delivery for the browser.
//
// `load()` fetches a p2u model (manifest → low-bit base ONNX → residual
// stream), resolves as soon as the base runs, and keeps refining the live
// model in place as stream bytes arrive, in short tasks, until its weights
// are the original ones bit for bit. `loadInWorker()` does the same in a
// Web Worker. The modules under `lib/` have one job each: errors, net
// (fetch, cache, retries), stream (patching), model (load, run), inputs,
// locate (the package's own files), protocol (page ↔ worker messages);
// everything heavy happens in the wasm runtime (`wasm/`).

import { P2uError } from './lib/errors.js';
import { ModelView, resolveFiles, init, withNamedOutputs } from './lib/model.js';
import { preBundledRoot, WORKER_PATH } from './lib/locate.js';
import { errorFromRecord } from './lib/protocol.js';
import { isFeeds, plainFeeds } from './lib/inputs.js';

export { P2uError } from './lib/errors.js';
export { DEFAULT_CACHE } from './lib/net.js';
export { init, load, loadOnnx, P2uModel } from './lib/model.js';
export { fromPixels, fromImageData, resizeImage } from './lib/pixels.js';

/** Version of this package (for diagnostics). */
export const version = '0.1.0';

/**
 * The same model as {@link P2uModel}, living in a Web Worker: downloading,
 * patching and inference never block the page. Created by {@link loadInWorker}.
 */
export class P2uWorkerModel extends ModelView {
  #worker;
  #pending = new Map();
  #nextId = 1;

  /** @internal */
  constructor(worker, loaded, onMessage) {
    super(loaded.status, loaded);
    this.#worker = worker;
    onMessage((msg) => {
      if (msg.type === 'stage') this._status = msg.status;
      if (msg.type === 'final') {
        this.rebuildMs = msg.rebuildMs;
        this.longestStepMs = msg.longestStepMs;
        this._settle(msg.status, null);
      }
      if (msg.type === 'failed') this._settle(msg.status, errorFromRecord(msg.error));
      if (msg.type === 'result' || msg.type === 'runError') {
        const p = this.#pending.get(msg.id);
        this.#pending.delete(msg.id);
        if (msg.type === 'result') {
          this._status = { ...this._status, stage: msg.result.stage, exact: msg.result.exact, final: msg.result.final };
          p?.resolve(withNamedOutputs(msg.result));
        } else p?.reject(errorFromRecord(msg.error));
      }
    });
  }

  /** Runs the model in the worker (the inputs are copied there). */
  run(input, dims, options = {}) {
    if (!this.#worker) return Promise.reject(new P2uError('model was disposed', 'disposed'));
    const id = this.#nextId++;
    const feeds = isFeeds(input);
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#worker.postMessage({ type: 'run', id, input: feeds ? plainFeeds(input) : input, dims: feeds ? [] : Array.from(dims ?? []), options: feeds ? {} : options });
    });
  }

  /** Stops downloading; the model keeps serving its current stage. */
  stop() {
    this.#worker?.postMessage({ type: 'stop' });
  }

  /** Terminates the worker. */
  dispose() {
    if (!this.#worker) return;
    this.#worker.terminate();
    this.#worker = null;
    for (const p of this.#pending.values()) p.reject(new P2uError('model was disposed', 'disposed'));
    this.#pending.clear();
  }
}

/**
 * Like {@link load}, but the model runs in a module Web Worker
 * (`worker.js` of this package, or `options.workerUrl`). Callbacks
 * (onProgress, onStage, onRetry) and `signal` work as with `load()`.
 */
export async function loadInWorker(source, options = {}) {
  const { onProgress, onStage, onRetry, onCacheError, signal, workerUrl, ...rest } = options;
  const files = resolveFiles(source); // absolute: the worker resolves against its own URL
  const resolved = files.manifestUrl ?? { base: files.baseUrl, stream: files.streamUrl };
  rest.wasm = workerWasm(rest.wasm);
  // in a worker the per-stage rebuilds are long tasks nobody sees
  rest.refiningPlan ??= 'constants';
  const root = workerUrl === undefined ? await preBundledRoot() : null;
  const url = workerUrl ?? (root ? new URL(WORKER_PATH, root) : null);
  let worker;
  try {
    worker = url ? new Worker(url, { type: 'module' }) : new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  } catch (e) {
    throw new P2uError(`could not start p2u's worker (${url ?? 'worker.js next to p2u.js'}): ${e.message}; pass { workerUrl } to say where it is served`, 'internal', { cause: e });
  }
  const handlers = new Set();
  return new Promise((resolve, reject) => {
    worker.onerror = (e) => {
      worker.terminate();
      const what = e.message ? e.message : `its script could not be loaded (a 404, a wrong MIME type, or a bundler that moved it)`;
      reject(new P2uError(`p2u's worker failed to start: ${what}; pass { workerUrl } to say where worker.js is served`, 'internal'));
    };
    worker.onmessage = ({ data: msg }) => {
      for (const h of handlers) h(msg);
      switch (msg.type) {
        case 'progress':
          onProgress?.(msg.progress);
          break;
        case 'stage':
          onStage?.(msg.status);
          break;
        case 'retry':
          onRetry?.({ ...msg.retry, error: errorFromRecord(msg.retry.error) });
          break;
        case 'cacheError':
          onCacheError?.({ ...msg.cacheError, error: errorFromRecord(msg.cacheError.error) });
          break;
        case 'loaded':
          worker.onerror = null;
          resolve(new P2uWorkerModel(worker, msg, (h) => handlers.add(h)));
          break;
        case 'loadError':
          worker.terminate();
          reject(errorFromRecord(msg.error));
          break;
      }
    };
    signal?.addEventListener('abort', () => worker.postMessage({ type: 'stop' }), { once: true });
    worker.postMessage({ type: 'load', source: resolved, options: rest });
  });
}

/** The `wasm` option as it can cross to the worker: a compiled Module as
 * is, a URL made absolute. */
function workerWasm(wasm) {
  if (wasm === undefined || wasm instanceof WebAssembly.Module) return wasm;
  if (typeof Response !== 'undefined' && wasm instanceof Response) {
    throw new P2uError('loadInWorker takes { wasm } as a URL or a WebAssembly.Module (a Response cannot be sent to a worker)', 'invalid');
  }
  return new URL(String(wasm), globalThis.location?.href).href;
}
