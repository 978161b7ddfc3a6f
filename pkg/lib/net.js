// Fetching and caching: requests that name their URL in errors, stall
// timeouts, retries with backoff, bounded reads, and the Cache API entries
// that only ever hold verified bytes.

import { P2uError, asP2uError } from './errors.js';

/** Default name of the Cache API cache that holds completed files. */
export const DEFAULT_CACHE = 'p2u-v1';

export const now = () => (globalThis.performance ? performance.now() : Date.now());

/** Gives the event loop a turn (input, rendering, other tasks). */
export function yieldToEventLoop() {
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

export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      reject(signal.reason ?? new DOMException('aborted', 'AbortError'));
    }, { once: true });
  });
}

export async function openCache(option) {
  if (option === false || !globalThis.caches) return null;
  try {
    return await caches.open(typeof option === 'string' ? option : DEFAULT_CACHE);
  } catch {
    return null; // e.g. opaque origins, private modes: run without a cache
  }
}

/** A cached copy of `url` if its label matches `sha256` (when known). The
 * bytes are checked again when used: the runtime verifies them. */
export async function cached(cache, url, sha256) {
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
export async function forget(cache, url) {
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
export async function store(cache, url, bytes, sha256, net) {
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
export function cacheWriter(cache, url, sha256, total, net) {
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
export function netOptions(o) {
  return {
    retries: o.retries ?? 3,
    retryDelayMs: o.retryDelayMs ?? 500,
    stallTimeoutMs: o.stallTimeoutMs ?? 20000,
    onRetry: o.onRetry,
    onCacheError: o.onCacheError,
  };
}

/** Delay before retry `attempt` (1, 2, …): doubling, at most 30 s. */
export const backoff = (net, attempt) => Math.min(30000, net.retryDelayMs * 2 ** (attempt - 1));

/** Whether a request that failed with `err` may succeed when repeated. */
export function retriable(err) {
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
export async function fetchOk(url, init, stallMs = 0, okStatus = []) {
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
export async function readWithin(reader, stallMs, url) {
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
export async function readAll(res, url, { sizeHint = 0, limit = Infinity, stallMs = 0, onBytes } = {}) {
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
export async function withRetries(file, net, signal, fetchOnce) {
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
