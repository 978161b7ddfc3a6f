// Applying the residual stream: bounded patch steps that yield to the
// event loop, and the download that resumes, verifies and caches.

import { P2uError, asP2uError } from './errors.js';
import { now, yieldToEventLoop, sleep, forget, cacheWriter, netOptions, backoff, retriable, fetchOk, readWithin } from './net.js';

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
export async function streamInto(model, { url, opts, cache, label, total, first, verified }) {
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
