// The model on the page's thread: loading the wasm runtime, `load()`
// (manifest → base → stream), the live P2uModel and `loadOnnx()`.

import initWasm, { WasmModel, WasmPlainModel, dicomWindow } from '../wasm/p2u_wasm.js';
import { P2uError, asP2uError } from './errors.js';
import { now, openCache, cached, forget, store, netOptions, fetchOk, readAll, withRetries } from './net.js';
import { streamInto } from './stream.js';
import { inputShapes, normalizationArgs, isFeeds, feedArgs } from './inputs.js';
import { isPixelInput } from './pixels.js';
import { defaultWasmUrl, preBundledRoot, WASM_PATH } from './locate.js';

let wasmReady = null;

/** Absolute URLs of a model's files from what `load()` was given. */
export function resolveFiles(source) {
  const here = globalThis.location?.href;
  if (typeof source === 'string' || source instanceof URL) {
    return { manifestUrl: new URL(String(source), here).href };
  }
  if (source && source.base && source.stream) {
    return { baseUrl: new URL(String(source.base), here).href, streamUrl: new URL(String(source.stream), here).href };
  }
  throw new P2uError('load() takes a manifest URL (NAME.json) or { base, stream } URLs', 'invalid');
}


/** Loads the wasm runtime once (done by `load()` itself; call it early to
 * overlap the download). `wasm` may be a URL, Response or Module. */
export function init(wasm) {
  wasmReady ??= compileRuntime(wasm).then((module) => initWasm({ module_or_path: module }));
  return wasmReady;
}

/** The runtime's `WebAssembly.Module`, compiled while it downloads. */
async function compileRuntime(wasm) {
  if (wasm instanceof WebAssembly.Module) return wasm;
  if (typeof Response !== 'undefined' && wasm instanceof Response) return compileResponse(wasm, wasm.url || 'the wasm Response given');
  let url;
  if (wasm !== undefined) url = new URL(String(wasm), globalThis.location?.href);
  else {
    const root = await preBundledRoot();
    url = root ? new URL(WASM_PATH, root) : defaultWasmUrl();
  }
  let res;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new P2uError(`GET ${url} (the p2u wasm runtime): ${e.message}`, 'network', { cause: e });
  }
  if (!res.ok) {
    const e = new P2uError(`GET ${url} (the p2u wasm runtime): HTTP ${res.status} ${res.statusText}; pass { wasm: url } to say where p2u_wasm_bg.wasm is served`.replace(' ;', ';'), 'network');
    e.status = res.status;
    throw e;
  }
  return compileResponse(res, url);
}

const WASM_MAGIC = [0x00, 0x61, 0x73, 0x6d];

async function compileResponse(res, url) {
  const type = res.headers.get('content-type') ?? '';
  if (typeof WebAssembly.compileStreaming === 'function' && /^application\/wasm\b/i.test(type)) {
    try {
      return await WebAssembly.compileStreaming(res);
    } catch (e) {
      throw compileError(url, e);
    }
  }
  const bytes = new Uint8Array(await res.arrayBuffer());
  if (!WASM_MAGIC.every((b, i) => bytes[i] === b)) {
    const start = new TextDecoder().decode(bytes.subarray(0, 16)).replace(/\s+/g, ' ');
    throw new P2uError(
      `${url} is not the p2u wasm runtime (content-type ${type || 'none'}, starts with ${JSON.stringify(start)}): ` +
        `the server sent something else, e.g. an index.html fallback; pass { wasm: url } to say where p2u_wasm_bg.wasm is served`,
      'network',
    );
  }
  try {
    return await WebAssembly.compile(bytes);
  } catch (e) {
    throw compileError(url, e);
  }
}

const compileError = (url, e) =>
  new P2uError(`${url}: the p2u wasm runtime did not compile (${e.message}); it needs WebAssembly SIMD (Chrome 91, Firefox 89, Safari 16.4 or later)`, 'unsupported', { cause: e });

/** The public status from the runtime's `{ stage, stages, chunksApplied,
 * chunksTotal, exact }`. */
export function statusOf(runtime, source, error, stages) {
  return { ...runtime, stages: runtime.chunksTotal > 0 ? runtime.stages : stages ?? runtime.stages, final: runtime.exact, source, error };
}

/** Stage count a manifest declares, until the stream header says it. */
export const declaredStages = (manifest) => (Array.isArray(manifest?.stages) && manifest.stages.length > 0 ? manifest.stages.length : undefined);

/** What both model kinds share: the stage view and the `finalized` promise. */
export class ModelView {
  #finalized;
  #settle;

  constructor(status, info) {
    /** @internal last known status */
    this._status = status;
    /** The manifest (stages, byte counts, errors per stage) if loaded from one. */
    this.manifest = info.manifest ?? null;
    /** Class names of the first output (from the manifest; `p2u encode --labels`), or null. */
    this.labels = Array.isArray(this.manifest?.labels) && this.manifest.labels.length ? this.manifest.labels : null;
    /** The model card (a JSON object or text; `p2u encode --card`), or null. */
    this.card = this.manifest?.card ?? null;
    /** Where the files came from: 'network', 'cache' or 'mixed'. */
    this.source = info.source;
    /** Milliseconds from `load()` until the model could run. */
    this.timeToFirstRun = info.timeToFirstRun;
    /** Why the stream stopped early (the model keeps its last good stage). */
    this.error = null;
    /** The inputs: `[{ name, type, shape, dims }]` (`shape` as declared, with
     * symbol names for dynamic dimensions; `dims` as the model runs). */
    this.inputMetadata = info.inputMetadata ?? [];
    /** The outputs: `[{ name, type, shape }]`. */
    this.outputMetadata = info.outputMetadata ?? [];
    this.#finalized = new Promise((resolve, reject) => (this.#settle = { resolve, reject }));
    this.#finalized.catch(() => {}); // rejection is reported via .error too
  }

  /** Input names, in order (as onnxruntime-web's `session.inputNames`). */
  get inputNames() {
    return this.inputMetadata.map((i) => i.name);
  }

  /** Output names, in order. */
  get outputNames() {
    return this.outputMetadata.map((o) => o.name);
  }

  /** The weights' progression: `{ stage, stages, chunksApplied, chunksTotal,
   * exact, final, source, error }`. */
  get status() {
    return this._status;
  }

  /** Current stage (0 = base). */
  get stage() {
    return this._status.stage;
  }

  /** True once the weights are bit-identical to the original model's. */
  get final() {
    return this._status.exact;
  }

  /** Resolves with the final status once the model is exact; rejects with a
   * P2uError if the stream failed for good (the model keeps serving its
   * last good stage). */
  get finalized() {
    return this.#finalized;
  }

  /** @internal */
  _settle(status, error) {
    this._status = status;
    if (error) {
      this.error = error;
      this.#settle.reject(error);
    } else {
      this.#settle.resolve(status);
    }
  }
}

/**
 * A model that is usable now and refines itself as its stream arrives.
 * Created by {@link load}.
 */
export class P2uModel extends ModelView {
  #wasm;
  #disposed = false;
  #abort;

  /** @internal */
  constructor(wasm, info) {
    super(statusOf(wasm.status(), info.source, null, declaredStages(info.manifest)), info);
    this.#wasm = wasm;
    this.inputMetadata = wasm.inputMetadata();
    this.outputMetadata = wasm.outputMetadata();
    this.#abort = info.abort ?? new AbortController();
  }

  #readStatus() {
    const error = this.error?.message ?? null;
    return this.#disposed ? { ...this._status, error } : statusOf(this.#wasm.status(), this.source, error, declaredStages(this.manifest));
  }

  /** The abort signal that stops the stream (internal wiring). */
  get _signal() {
    return this.#abort.signal;
  }

  /** @internal re-reads the status from the runtime */
  _refresh() {
    this._status = this.#readStatus();
  }

  /** @internal */
  _wasm() {
    if (this.#disposed) throw new P2uError('model was disposed', 'disposed');
    return this.#wasm;
  }

  /** @internal */
  _finish(error) {
    if (error) this.error = error;
    this._settle(this.#readStatus(), error);
  }

  /**
   * Runs the model and says which stage produced the result.
   * @param input `{ name: tensor }` feeds for every input (as
   *   onnxruntime-web's `session.run`; a tensor is `{ data, dims }` with a
   *   Float32Array, BigInt64Array, Int32Array or Uint8Array of the input's
   *   type, or a bare typed array when the input's shape is fixed; `dims`
   *   and `options` are then not used), or the only input as a
   *   Float32Array (used as is, or mapped by `options.normalize`),
   *   Uint8/Uint16/Int16 values mapped to floats by `options.normalize`
   *   (default: the type's full range onto [0, 1]), or an image from
   *   `fromImageData()` / `fromPixels()` (then `dims` is not needed).
   * @param dims the input's shape, e.g. [1, 3, 224, 224].
   * @param options `{ normalize: { range: [lo, hi] } | { window: { center, width } }, to?: [a, b], clamp? }`
   */
  async run(input, dims, options = {}) {
    const wasm = this._wasm();
    const d = Uint32Array.from(dims ?? []);
    let r;
    try {
      if (isFeeds(input)) {
        r = wasm.runTensors(...feedArgs(input, this.inputMetadata));
      } else if (isPixelInput(input)) {
        const p = input;
        r = wasm.runPixels(p.pixels, p.width, p.height, p.stride, p.channels, p.layout, p.scale, Float32Array.from(p.mean), Float32Array.from(p.std));
      } else {
        const map = normalizationArgs(input, options.normalize, dicomWindow);
        if (input instanceof Float32Array) r = map ? wasm.runF32Mapped(input, d, ...map) : wasm.runF32(input, d);
        else r = runInteger(wasm, input, d, map);
      }
    } catch (e) {
      throw asP2uError(e, 'engine');
    }
    this._refresh();
    return withNamedOutputs({ ...r, stages: this._status.stages, source: this.source });
  }

  /** Stops downloading; the model keeps serving its current stage and
   * `finalized` rejects with a P2uError of kind 'abort'. */
  stop(reason) {
    if (!this.#abort.signal.aborted) this.#abort.abort(reason ?? new P2uError('stream stopped', 'abort'));
  }

  /** Stops the stream and frees the wasm memory. Safe to call twice. */
  dispose() {
    if (this.#disposed) return;
    this.stop(new P2uError('model was disposed', 'abort'));
    this.#disposed = true;
    this.#wasm.free();
  }
}


/** Runs on integer values mapped by `map` (`[lo, hi, to0, to1, clamp]`). */
function runInteger(wasm, input, d, map) {
  if (input instanceof Uint8Array || input instanceof Uint8ClampedArray) return wasm.runU8(input, d, ...map);
  if (input instanceof Uint16Array) return wasm.runU16(input, d, ...map);
  return wasm.runI16(input, d, ...map);
}

/** Adds `byName`: the outputs keyed by output name. */
export function withNamedOutputs(r) {
  r.byName = Object.fromEntries(r.outputs.filter((o) => o.name).map((o) => [o.name, o]));
  return r;
}

/**
 * Builds a plain ONNX model (no progression) in the same tract-wasm runtime:
 * the baseline to compare p2u against, or a stage exported by `p2u export`.
 * @param bytes the ONNX file's bytes.
 * @param options `{ inputDims, wasm }`.
 */
export async function loadOnnx(bytes, options = {}) {
  await init(options.wasm);
  const { dims, ranks } = inputShapes(options.inputDims);
  let m;
  try {
    m = new WasmPlainModel(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes), dims, ranks);
  } catch (e) {
    throw asP2uError(e, 'onnx');
  }
  const inputMetadata = m.inputMetadata();
  return {
    /** The inputs: `[{ name, type, shape, dims }]`. */
    inputMetadata,
    /** Runs on `{ name: tensor }` feeds, or on the only input (a Float32Array of `shape`). */
    async run(input, shape) {
      try {
        const r = isFeeds(input) ? m.runTensors(...feedArgs(input, inputMetadata)) : m.runF32(input, Uint32Array.from(shape));
        return withNamedOutputs(r);
      } catch (e) {
        throw asP2uError(e, 'engine');
      }
    },
    dispose() {
      m?.free();
      m = null;
    },
  };
}

/**
 * Loads a p2u model progressively.
 *
 * @param source URL of the manifest (`NAME.json`, next to NAME.base.onnx and
 *   NAME.p2u), or `{ base, stream }` URLs.
 * @param options `{ onProgress, onStage, onRetry, onCacheError, signal,
 *   inputDims, cache, retries, retryDelayMs, stallTimeoutMs, wasm,
 *   waitForCached }` — see p2u.d.ts.
 * @returns a promise of a {@link P2uModel} that resolves once the base runs
 *   (or, with everything in the cache, once the exact model runs).
 */
export async function load(source, options = {}) {
  const t0 = now();
  const { signal } = options;
  if (signal?.aborted) throw asP2uError(signal.reason ?? new DOMException('aborted', 'AbortError'), 'abort');
  // One controller for every request of this load (the stream outlives load()).
  const abort = new AbortController();
  signal?.addEventListener('abort', () => abort.abort(asP2uError(signal.reason, 'abort')), { once: true });
  try {
    return await loadWith(source, options, abort, t0);
  } catch (e) {
    abort.abort(e);
    throw signal?.aborted ? asP2uError(signal.reason, 'abort') : asP2uError(e, 'network');
  }
}

/** Largest manifest read. */
const MAX_MANIFEST = 16 << 20;

/** A SHA-256 in hex, or '' (the runtime then checks nothing for it). */
const sha256Hex = (h) => (typeof h === 'string' && /^[0-9a-fA-F]{64}$/.test(h) ? h : '');

async function loadWith(source, options, abort, t0) {
  const signal = abort.signal;
  const net = netOptions(options);
  const stallMs = net.stallTimeoutMs;
  let files = resolveFiles(source);
  // The wasm runtime compiles while the manifest and the base download.
  const wasmReady = init(options.wasm);
  wasmReady.catch(() => {});
  const cache = await openCache(options.cache ?? true);
  let manifest = null;
  if (files.manifestUrl) {
    const url = files.manifestUrl;
    let bytes;
    try {
      bytes = await withRetries('manifest', net, signal, async () =>
        readAll(await fetchOk(url, { signal }, stallMs), url, { limit: MAX_MANIFEST, stallMs }),
      );
    } catch (e) {
      // Offline (not an HTTP error): a cached manifest lets cached files serve.
      const hit = e.kind === 'network' && !e.status ? await cached(cache, url) : null;
      if (!hit) throw asP2uError(e, 'network');
      bytes = new Uint8Array(await hit.arrayBuffer());
    }
    try {
      manifest = JSON.parse(new TextDecoder().decode(bytes));
    } catch (e) {
      throw new P2uError(`${url} is not a p2u manifest (JSON): ${e.message}`, 'invalid', { cause: e });
    }
    if (!manifest?.base?.file || !manifest?.stream?.file) {
      throw new P2uError(`${url} is not a p2u manifest (no base/stream files)`, 'invalid');
    }
    store(cache, url, bytes, null, net);
    files = {
      baseUrl: new URL(manifest.base.file, url).href,
      streamUrl: new URL(manifest.stream.file, url).href,
    };
  }
  const baseSha = sha256Hex(manifest?.base?.sha256);
  const headerSha = sha256Hex(manifest?.stream_header_sha256);
  const streamLabel = sha256Hex(manifest?.stream?.sha256);
  // Only what the manifest lets the runtime verify is ever cached.
  const verified = !!(baseSha && headerSha && streamLabel);
  const baseLimit = Number(manifest?.base?.bytes) > 0 ? Number(manifest.base.bytes) : Infinity;
  const onBase = (loaded) => options.onProgress?.({ file: 'base', loaded, total: Number.isFinite(baseLimit) ? baseLimit : 0 });
  const downloadBase = () =>
    withRetries('base', net, signal, async () => {
      const res = await fetchOk(files.baseUrl, { signal }, stallMs);
      const declared = res.headers.get('content-encoding') ? 0 : Number(res.headers.get('content-length') ?? 0);
      const sizeHint = Math.min(baseLimit, declared || baseLimit);
      return readAll(res, files.baseUrl, { sizeHint: Number.isFinite(sizeHint) ? sizeHint : 0, limit: baseLimit, stallMs, onBytes: onBase });
    });

  let base = null;
  let baseFromCache = false;
  const baseHit = verified ? await cached(cache, files.baseUrl, baseSha) : null;
  if (baseHit) {
    try {
      base = await readAll(baseHit, files.baseUrl, { sizeHint: baseLimit, limit: baseLimit, onBytes: onBase });
      baseFromCache = true;
    } catch {
      base = null;
    }
  }
  base ??= await downloadBase();

  // The stream waits for the runtime: on a first visit the wasm is still
  // downloading, and a stream sharing its link would delay the preview to
  // about the end of all downloads. Then the link would idle while the
  // model builds: ask for the stream now (its body waits, bounded by the
  // browser's own backpressure, until read).
  await wasmReady;
  const streamHit = verified ? await cached(cache, files.streamUrl, streamLabel) : null;
  const streamCached = !!streamHit;
  const first = {
    cached: streamCached,
    response: streamHit ? Promise.resolve(streamHit) : fetchOk(files.streamUrl, { signal, cache: 'no-store' }, stallMs),
  };
  first.response.catch(() => {});

  const { dims, ranks } = inputShapes(options.inputDims);
  const keepInputs = (options.finalPlan ?? 'constants') === 'inputs';
  const stagePlans = (options.refiningPlan ?? 'inputs') === 'constants';
  const build = (bytes) => {
    try {
      return new WasmModel(bytes, dims, ranks, keepInputs, stagePlans, baseSha, headerSha);
    } catch (e) {
      throw asP2uError(e, 'onnx');
    }
  };
  let wasm;
  try {
    wasm = build(base);
  } catch (e) {
    if (!baseFromCache) throw e;
    // a damaged cached base: forget it and download it again
    await forget(cache, files.baseUrl);
    net.onCacheError?.({ url: files.baseUrl, error: e });
    base = await downloadBase();
    baseFromCache = false;
    wasm = build(base);
  }
  // verified by the runtime (its SHA-256 is the manifest's): safe to cache
  if (!baseFromCache && verified) store(cache, files.baseUrl, base, baseSha, net);
  base = null;
  const model = new P2uModel(wasm, {
    manifest,
    abort,
    source: baseFromCache && streamCached ? 'cache' : baseFromCache || streamCached ? 'mixed' : 'network',
    timeToFirstRun: now() - t0,
  });
  options.onStage?.(model.status);

  const streaming = streamInto(model, {
    url: files.streamUrl,
    opts: options,
    cache,
    label: streamLabel,
    total: Number(manifest?.stream?.bytes) > 0 ? Number(manifest.stream.bytes) : 0,
    first,
    verified,
  }).then(
    async (info) => {
      const t = now();
      try {
        model._wasm().refresh(); // the final plan, with the weights as constants
      } catch (e) {
        model._finish(asP2uError(e, 'engine'));
        return;
      }
      model.rebuildMs = now() - t;
      model.longestStepMs = info.longestStepMs;
      model._refresh();
      model._finish(null);
      options.onStage?.(model.status);
    },
    (e) => {
      model._finish(asP2uError(e, 'network'));
      options.onStage?.(model.status);
    },
  );
  if (streamCached && baseFromCache && (options.waitForCached ?? true)) {
    await streaming;
    model.timeToFirstRun = now() - t0;
  }
  return model;
}
