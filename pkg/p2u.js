// p2u — progressive model delivery for the browser.
//
// `load()` fetches a p2u model (manifest → low-bit base ONNX → residual
// stream), resolves as soon as the base runs, and keeps refining the live
// model in place as stream bytes arrive, in short tasks, until its weights
// are the original ones bit for bit. Everything heavy happens in the wasm
// runtime (`./wasm/`); this file does the fetching, caching, retries and
// scheduling.

import initWasm, { WasmModel, WasmPlainModel } from './wasm/p2u_wasm.js';

/** Version of this package (also sent nowhere; for diagnostics). */
export const version = '0.1.0';

/** Default name of the Cache API cache that holds completed files. */
export const DEFAULT_CACHE = 'p2u-v1';

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

function asP2uError(e, fallbackKind = 'internal') {
  if (e instanceof P2uError) return e;
  if (e && e.name === 'AbortError') return new P2uError('load aborted', 'abort', { cause: e });
  if (e && e.name === 'P2uError') return new P2uError(e.message, e.kind || fallbackKind, { cause: e });
  if (e instanceof WebAssembly.RuntimeError) {
    return new P2uError(`internal error in the wasm runtime (a bug, please report): ${e.message}`, 'internal', { cause: e });
  }
  return new P2uError(String(e && e.message ? e.message : e), fallbackKind, { cause: e });
}

let wasmReady = null;

/** Loads the wasm runtime once (done by `load()` itself; call it early to
 * overlap the download). `wasm` may be a URL, Response or Module. */
export function init(wasm) {
  wasmReady ??= initWasm(wasm === undefined ? undefined : { module_or_path: wasm });
  return wasmReady;
}

const now = () => (globalThis.performance ? performance.now() : Date.now());

/** Gives the event loop a turn (input, rendering, other tasks). */
function yieldToEventLoop() {
  if (globalThis.scheduler && typeof scheduler.yield === 'function') return scheduler.yield();
  if (typeof MessageChannel === 'function') {
    return new Promise((resolve) => {
      const ch = new MessageChannel();
      ch.port1.onmessage = () => {
        ch.port1.close();
        resolve();
      };
      ch.port2.postMessage(0);
    });
  }
  return new Promise((resolve) => setTimeout(resolve, 0));
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      reject(signal.reason ?? new DOMException('aborted', 'AbortError'));
    }, { once: true });
  });
}

async function openCache(option) {
  if (option === false || !globalThis.caches) return null;
  try {
    return await caches.open(typeof option === 'string' ? option : DEFAULT_CACHE);
  } catch {
    return null; // e.g. opaque origins, private modes: run without a cache
  }
}

/** A cached copy of `url` if its label matches `sha256` (when known). The
 * bytes are checked again when used: the runtime verifies them. */
async function cached(cache, url, sha256) {
  if (!cache) return null;
  let hit;
  try {
    hit = await cache.match(url);
  } catch {
    return null;
  }
  if (!hit) return null;
  if (sha256 && hit.headers.get('x-p2u-sha256') !== sha256) {
    await forget(cache, url);
    return null;
  }
  return hit;
}

/** Removes a cache entry (a stale or corrupt copy). */
async function forget(cache, url) {
  try {
    await cache?.delete(url);
  } catch {
    /* nothing to do: the entry is checked again when used */
  }
}

function cacheHeaders(sha256, length) {
  const headers = { 'content-type': 'application/octet-stream' };
  if (length > 0) headers['content-length'] = String(length);
  if (sha256) headers['x-p2u-sha256'] = sha256;
  return headers;
}

/** Stores verified bytes in the cache. A failure (quota, say) costs only
 * the cache: it is reported to `onCacheError` and the model goes on. */
async function store(cache, url, bytes, sha256, net) {
  if (!cache) return;
  try {
    await cache.put(url, new Response(bytes, { headers: cacheHeaders(sha256, bytes.length) }));
  } catch (e) {
    net.onCacheError?.({ url, error: asP2uError(e, 'io') });
  }
}

/**
 * A cache entry written as verified bytes arrive: `write()` after the
 * runtime accepted them, `commit()` once the whole file is verified;
 * `abort()` (or never committing) leaves nothing in the cache.
 */
function cacheWriter(cache, url, sha256, total, net) {
  const { readable, writable } = new TransformStream();
  const writer = writable.getWriter();
  let failed = false;
  const put = cache.put(url, new Response(readable, { headers: cacheHeaders(sha256, total) })).catch((e) => {
    if (!failed) net.onCacheError?.({ url, error: asP2uError(e, 'io') });
    failed = true;
  });
  return {
    write(bytes) {
      if (!failed) writer.write(bytes.slice()).catch(() => {});
    },
    async commit() {
      if (!failed) await writer.close().catch(() => {});
      await put;
    },
    abort(reason) {
      if (failed) return;
      failed = true;
      writer.abort(reason).catch(() => {});
    },
  };
}

/** The network options of a load, with their defaults. */
function netOptions(o) {
  return {
    retries: o.retries ?? 3,
    retryDelayMs: o.retryDelayMs ?? 500,
    stallTimeoutMs: o.stallTimeoutMs ?? 20000,
    onRetry: o.onRetry,
    onCacheError: o.onCacheError,
  };
}

/** Delay before retry `attempt` (1, 2, …): doubling, at most 30 s. */
const backoff = (net, attempt) => Math.min(30000, net.retryDelayMs * 2 ** (attempt - 1));

/** Whether a request that failed with `err` may succeed when repeated. */
function retriable(err) {
  if (err.kind === 'truncated') return true;
  if (err.kind !== 'network') return false;
  return err.status === undefined || err.status === 408 || err.status === 429 || err.status >= 500;
}

function httpError(url, res) {
  const e = new P2uError(`GET ${url}: HTTP ${res.status} ${res.statusText}`.trimEnd(), 'network');
  e.status = res.status;
  return e;
}

/** fetch() that names the URL in its errors and gives up on a server that
 * sends no response headers within `stallMs`. `okStatus` lists the
 * non-2xx statuses the caller handles itself. `init.signal` aborts the
 * request and, later, its body. */
async function fetchOk(url, init, stallMs = 0, okStatus = []) {
  const ctl = new AbortController();
  const outer = init?.signal;
  const onAbort = () => ctl.abort(outer.reason);
  outer?.addEventListener('abort', onAbort, { once: true });
  const timer = stallMs > 0 ? setTimeout(() => ctl.abort(new P2uError(`GET ${url}: no response in ${stallMs} ms`, 'network')), stallMs) : 0;
  let res;
  try {
    res = await fetch(url, { ...init, signal: ctl.signal });
  } catch (e) {
    if (outer?.aborted) throw asP2uError(outer.reason ?? e, 'abort');
    if (ctl.signal.reason instanceof P2uError) throw ctl.signal.reason;
    throw new P2uError(`GET ${url}: ${e.message}`, 'network', { cause: e });
  } finally {
    clearTimeout(timer);
  }
  if (!res.ok && !okStatus.includes(res.status)) throw httpError(url, res);
  return res;
}

/** The next piece of a body; a 'network' error after `stallMs` without a byte. */
async function readWithin(reader, stallMs, url) {
  if (!(stallMs > 0)) return reader.read();
  let timer;
  const stalled = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new P2uError(`GET ${url}: no data for ${stallMs} ms (stalled)`, 'network')), stallMs);
  });
  try {
    return await Promise.race([reader.read(), stalled]);
  } catch (e) {
    reader.cancel().catch(() => {});
    if (e instanceof P2uError) throw e;
    throw new P2uError(`GET ${url}: ${e.message}`, 'network', { cause: e });
  } finally {
    clearTimeout(timer);
  }
}

/** Largest buffer allocated up front from a declared size (a manifest or
 * a header may lie; beyond it the buffer grows as bytes really arrive). */
const MAX_PREALLOC = 64 << 20;

/** Reads a whole response into one buffer, reporting progress; more than
 * `limit` bytes (when given) is an error. */
async function readAll(res, url, { sizeHint = 0, limit = Infinity, stallMs = 0, onBytes } = {}) {
  const reader = res.body.getReader();
  let buf = new Uint8Array(Math.min(Math.max(sizeHint, 1 << 16), MAX_PREALLOC));
  let len = 0;
  for (;;) {
    const { done, value } = await readWithin(reader, stallMs, url);
    if (done) break;
    if (len + value.length > limit) {
      reader.cancel().catch(() => {});
      throw new P2uError(`GET ${url}: more than the ${limit} bytes the manifest declares`, 'corrupt');
    }
    if (len + value.length > buf.length) {
      const bigger = new Uint8Array(Math.max(buf.length * 2, len + value.length));
      bigger.set(buf.subarray(0, len));
      buf = bigger;
    }
    buf.set(value, len);
    len += value.length;
    onBytes?.(len);
  }
  return buf.subarray(0, len);
}

/** Runs `fetchOnce(attempt)` until it succeeds, retrying what may succeed
 * when repeated (network errors, 5xx, 408, 429, stalls) with backoff. */
async function withRetries(file, net, signal, fetchOnce) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fetchOnce(attempt);
    } catch (e) {
      if (signal.aborted) throw asP2uError(signal.reason ?? e, 'abort');
      const err = asP2uError(e, 'network');
      if (!retriable(err) || attempt >= net.retries) throw err;
      net.onRetry?.({ file, attempt: attempt + 1, offset: 0, error: err });
      await sleep(backoff(net, attempt + 1), signal);
    }
  }
}

function resolveFiles(source) {
  const here = globalThis.location?.href;
  if (typeof source === 'string' || source instanceof URL) {
    return { manifestUrl: new URL(String(source), here).href };
  }
  if (source && source.base && source.stream) {
    return { baseUrl: new URL(String(source.base), here).href, streamUrl: new URL(String(source.stream), here).href };
  }
  throw new P2uError('load() takes a manifest URL (NAME.json) or { base, stream } URLs', 'invalid');
}

function inputShapes(inputDims) {
  if (!inputDims) return { dims: new Uint32Array(0), ranks: new Uint32Array(0) };
  const shapes = Array.isArray(inputDims[0]) ? inputDims : [inputDims];
  return { dims: Uint32Array.from(shapes.flat()), ranks: Uint32Array.from(shapes.map((s) => s.length)) };
}

const RAW_RANGES = {
  Uint8Array: [0, 255],
  Uint8ClampedArray: [0, 255],
  Uint16Array: [0, 65535],
  Int16Array: [-32768, 32767],
};

/** `[lo, hi, to0, to1, clamp]` for an integer input. */
function normalizationArgs(input, normalize = {}) {
  const to = normalize.to ?? [0, 1];
  if (normalize.window) {
    const { center, width } = normalize.window;
    return [center - width / 2, center + width / 2, to[0], to[1], true];
  }
  const range = normalize.range ?? RAW_RANGES[input.constructor.name];
  return [range[0], range[1], to[0], to[1], normalize.clamp ?? false];
}

/** The public status from the runtime's `{ stage, stages, chunksApplied,
 * chunksTotal, exact }`. */
function statusOf(runtime, source, error) {
  return { ...runtime, final: runtime.exact, source, error };
}

/** What both model kinds share: the stage view and the `finalized` promise. */
class ModelView {
  #finalized;
  #settle;

  constructor(status, info) {
    /** @internal last known status */
    this._status = status;
    /** The manifest (stages, byte counts, errors per stage) if loaded from one. */
    this.manifest = info.manifest ?? null;
    /** Where the files came from: 'network', 'cache' or 'mixed'. */
    this.source = info.source;
    /** Milliseconds from `load()` until the model could run. */
    this.timeToFirstRun = info.timeToFirstRun;
    /** Why the stream stopped early (the model keeps its last good stage). */
    this.error = null;
    this.#finalized = new Promise((resolve, reject) => (this.#settle = { resolve, reject }));
    this.#finalized.catch(() => {}); // rejection is reported via .error too
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
    super(statusOf(wasm.status(), info.source, null), info);
    this.#wasm = wasm;
    this.#abort = info.abort ?? new AbortController();
  }

  #readStatus() {
    const error = this.error?.message ?? null;
    return this.#disposed ? { ...this._status, error } : statusOf(this.#wasm.status(), this.source, error);
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
   * Runs the model on one input and says which stage produced the result.
   * @param input Float32Array, or Uint8/Uint16/Int16 pixels mapped to floats
   *   by `options.normalize` (default: the type's full range onto [0, 1]).
   * @param dims the input's shape, e.g. [1, 3, 224, 224].
   * @param options `{ normalize: { range: [lo, hi] } | { window: { center, width } }, to?: [a, b], clamp? }`
   */
  async run(input, dims, options = {}) {
    const wasm = this._wasm();
    const d = Uint32Array.from(dims);
    let r;
    try {
      if (input instanceof Float32Array) {
        r = wasm.runF32(input, d);
      } else if (input instanceof Uint8Array || input instanceof Uint8ClampedArray) {
        r = wasm.runU8(input, d, ...normalizationArgs(input, options.normalize));
      } else if (input instanceof Uint16Array) {
        r = wasm.runU16(input, d, ...normalizationArgs(input, options.normalize));
      } else if (input instanceof Int16Array) {
        r = wasm.runI16(input, d, ...normalizationArgs(input, options.normalize));
      } else {
        throw new P2uError('input must be a Float32Array, Uint8Array, Uint16Array or Int16Array', 'invalid');
      }
    } catch (e) {
      throw asP2uError(e, 'engine');
    }
    this._refresh();
    return { ...r, source: this.source };
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

/**
 * Applies stream bytes in steps of bounded work, yielding to the event loop
 * whenever a slice of `sliceMs` is used up. The weight budget per step adapts
 * so that one step stays near `stepMs`.
 */
class Patcher {
  constructor(model, options) {
    this.model = model;
    this.stepMs = options.stepMs ?? 8;
    this.sliceMs = options.sliceMs ?? 12;
    this.budget = 1 << 15;
    this.rate = undefined;
    this.longestStepMs = 0;
    this.onStage = options.onStage;
    this.lastApplied = -1;
  }

  async push(bytes) {
    const wasm = this.model._wasm();
    wasm.push(bytes);
    let slice = now();
    for (;;) {
      const t0 = now();
      const more = this.model._wasm().step(this.budget);
      const dt = now() - t0;
      this.longestStepMs = Math.max(this.longestStepMs, dt);
      // Only steps that used their whole budget (a decode still under way)
      // say how fast weights go; keep the slowest rate seen, allowed to
      // recover by a quarter per step, and size the next step from it.
      if (this.model._wasm().busy && dt >= 1) {
        this.rate = Math.min(this.budget / dt, (this.rate ?? Infinity) * 1.25);
        this.budget = Math.max(1024, Math.min(1 << 22, Math.floor(this.rate * this.stepMs)));
      }
      this.#report();
      if (!more) break;
      if (now() - slice > this.sliceMs) {
        await yieldToEventLoop();
        slice = now();
      }
    }
  }

  #report() {
    const s = this.model._wasm().status();
    if (s.chunksApplied !== this.lastApplied) {
      this.lastApplied = s.chunksApplied;
      this.model._refresh();
      this.onStage?.(this.model.status);
    }
  }
}

/** `start` of a 206 response's Content-Range, or NaN. */
function rangeStart(res) {
  const m = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
  return m ? Number(m[1]) : NaN;
}

function concatBytes(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Errors of bytes from the cache that the network may not repeat. */
const CACHED_COPY_FAULTS = ['corrupt', 'mismatch', 'header', 'truncated'];

/**
 * Streams the residual file into the model, starting with `first` (a cache
 * hit, or the request `load()` already made).
 *
 * After a network failure it resumes from the first missing byte with a
 * Range request guarded by If-Range (the first response's ETag or
 * Last-Modified), up to `retries` times with backoff. A 206 must start
 * where asked, or earlier (the overlap is skipped); a 200 means the server
 * ignored the range or the file changed: the download restarts at byte 0
 * and goes on only if the stream header is the one already read (the
 * header lists every chunk's digest, so an equal header means an equal
 * file). A 416 means nothing is left. A cached copy that fails verification
 * is deleted and the rest fetched from the network from the last good
 * chunk. A verified download (the manifest names the header's hash) is
 * written to the cache as it is applied and committed only once complete.
 */
async function streamInto(model, { url, opts, cache, label, total, first, verified }) {
  const signal = model._signal;
  const net = netOptions(opts);
  const patcher = new Patcher(model, opts);
  const wasm = () => model._wasm();
  const progress = () => opts.onProgress?.({ file: 'stream', loaded: wasm().received, total });
  let validator = null;
  let writer = null;
  let fromCache = first.cached;
  let failures = 0;
  for (let request = 0; ; request++) {
    const offset = wasm().received;
    try {
      let res;
      if (request === 0) {
        res = await first.response;
      } else {
        const headers = {};
        if (offset > 0) {
          headers.Range = `bytes=${offset}-`;
          if (validator) headers['If-Range'] = validator;
        }
        res = await fetchOk(url, { signal, headers, cache: 'no-store' }, net.stallTimeoutMs, [416]);
      }
      if (!fromCache) validator ??= res.headers.get('etag') ?? res.headers.get('last-modified');
      if (res.status === 416) {
        // nothing after `offset`: every byte had arrived
        res.body?.cancel().catch(() => {});
      } else {
        let skip = 0;
        let restart = null; // a download from byte 0 whose header is not yet compared
        if (offset > 0 && res.status === 206) {
          const start = rangeStart(res);
          if (!(start <= offset)) {
            throw new P2uError(
              `GET ${url}: asked for bytes ${offset}-, got ${res.headers.get('content-range') ?? 'no Content-Range'}`,
              'network',
            );
          }
          skip = offset - start;
        } else if (offset > 0) {
          skip = offset;
          if (wasm().headerRead) restart = [];
        }
        if (offset === 0 && !fromCache && cache && verified) writer ??= cacheWriter(cache, url, label, total, net);
        const reader = res.body.getReader();
        const cancel = () => reader.cancel().catch(() => {});
        signal.addEventListener('abort', cancel, { once: true });
        try {
          for (;;) {
            const { done, value } = await readWithin(reader, net.stallTimeoutMs, url);
            if (signal.aborted) throw signal.reason;
            if (done) break;
            let bytes = value;
            if (restart) {
              restart.push(bytes);
              bytes = concatBytes(restart);
              const same = wasm().sameStreamHeader(bytes);
              if (same === undefined) continue;
              if (!same) {
                throw new P2uError(
                  `${url} changed on the server during the download (its header differs from the one read); ` +
                    `the model keeps stage ${wasm().status().stage}`,
                  'corrupt',
                );
              }
              restart = null;
            }
            if (skip > 0) {
              const n = Math.min(skip, bytes.length);
              skip -= n;
              bytes = bytes.subarray(n);
              if (bytes.length === 0) continue;
            }
            await patcher.push(bytes);
            writer?.write(bytes);
            progress();
          }
        } finally {
          signal.removeEventListener('abort', cancel);
        }
      }
      wasm().finishStream();
      await writer?.commit();
      return { longestStepMs: patcher.longestStepMs };
    } catch (e) {
      const err = signal.aborted ? asP2uError(signal.reason ?? e, 'abort') : asP2uError(e, 'network');
      if (!signal.aborted && fromCache && CACHED_COPY_FAULTS.includes(err.kind)) {
        // a damaged cached copy: forget it and fetch the rest from the network
        await forget(cache, url);
        net.onCacheError?.({ url, error: err });
        wasm().rewind();
        fromCache = false;
        continue;
      }
      if (signal.aborted || !retriable(err) || failures >= net.retries) {
        writer?.abort(err);
        throw err;
      }
      failures += 1;
      net.onRetry?.({ file: 'stream', attempt: failures, offset: wasm().received, error: err });
      await sleep(backoff(net, failures), signal);
    }
  }
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
  return {
    async run(input, shape) {
      try {
        return m.runF32(input, Uint32Array.from(shape));
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
  const build = (bytes) => {
    try {
      return new WasmModel(bytes, dims, ranks, keepInputs, baseSha, headerSha);
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
      if (msg.type === 'failed') this._settle(msg.status, new P2uError(msg.error.message, msg.error.kind));
      if (msg.type === 'result' || msg.type === 'runError') {
        const p = this.#pending.get(msg.id);
        this.#pending.delete(msg.id);
        if (msg.type === 'result') {
          this._status = { ...this._status, stage: msg.result.stage, exact: msg.result.exact, final: msg.result.final };
          p?.resolve(msg.result);
        } else p?.reject(new P2uError(msg.error.message, msg.error.kind));
      }
    });
  }

  /** Runs the model in the worker (the input is copied there). */
  run(input, dims, options = {}) {
    if (!this.#worker) return Promise.reject(new P2uError('model was disposed', 'disposed'));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#worker.postMessage({ type: 'run', id, input, dims: Array.from(dims), options });
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
export function loadInWorker(source, options = {}) {
  const { onProgress, onStage, onRetry, onCacheError, signal, workerUrl, ...rest } = options;
  let files;
  try {
    files = resolveFiles(source); // absolute: the worker resolves against its own URL
  } catch (e) {
    return Promise.reject(e);
  }
  const resolved = files.manifestUrl ?? { base: files.baseUrl, stream: files.streamUrl };
  if (rest.wasm !== undefined) rest.wasm = new URL(String(rest.wasm), globalThis.location?.href).href;
  const worker = new Worker(workerUrl ?? new URL('./worker.js', import.meta.url), { type: 'module' });
  const handlers = new Set();
  return new Promise((resolve, reject) => {
    worker.onerror = (e) => reject(new P2uError(`worker failed to start: ${e.message ?? e}`, 'internal'));
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
          onRetry?.({ ...msg.retry, error: new P2uError(msg.retry.error.message, msg.retry.error.kind) });
          break;
        case 'cacheError':
          onCacheError?.({ ...msg.cacheError, error: new P2uError(msg.cacheError.error.message, msg.cacheError.error.kind) });
          break;
        case 'loaded':
          resolve(new P2uWorkerModel(worker, msg, (h) => handlers.add(h)));
          break;
        case 'loadError':
          worker.terminate();
          reject(new P2uError(msg.error.message, msg.error.kind));
          break;
      }
    };
    signal?.addEventListener('abort', () => worker.postMessage({ type: 'stop' }), { once: true });
    worker.postMessage({ type: 'load', source: resolved, options: rest });
  });
}
