// The loader against every network fault the test server can inject, on a
// small real model (ResNet, Fashion-MNIST): each case ends bit-exact or with
// the right typed error, the model at its last good stage, and nothing
// unverified in the cache. Prints the sweep as a table.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { open, fixtures, pageRunner } from './harness.mjs';

const MANIFEST = '/fx/resnet/resnet_fmnist.json';
const OTHER_STREAM = '/fx/resnet3/resnet_fmnist.p2u';
const DIMS = [1, 1, 28, 28];
const stream = readFileSync(`${fixtures}/resnet/resnet_fmnist.p2u`);
const manifest = JSON.parse(readFileSync(`${fixtures}/resnet/resnet_fmnist.json`, 'utf8'));
let exactBits; // the original fp32 model's outputs in tract-wasm

/** Where the header and each chunk of the fixture stream end. */
function frameEnds(s) {
  const header = 12 + s.readUInt32LE(8) + 4;
  const ends = [header];
  for (let at = header; at < s.length; ) {
    at += 16 + s.readUInt32LE(at + 12) + 4;
    ends.push(at);
  }
  return ends;
}
const ENDS = frameEnds(stream);

let h;
let inPage;
let cacheNo = 0;
const rows = [];
before(async () => {
  h = await open();
  inPage = pageRunner(h);
  exactBits = await inPage(async (p2u, { f32, bits, arg }) => {
    const original = await p2u.loadOnnx(new Uint8Array(await (await fetch('/fx/resnet_original.onnx')).arrayBuffer()), { inputDims: arg });
    return bits((await original.run(await f32('/fx/resnet_input.f32'), arg)).outputs[0].data);
  }, DIMS);
});
after(async () => {
  console.log('\n| case | outcome | stage | chunks | retries | cached stream |\n|---|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.name} | ${r.outcome} | ${r.stage} | ${r.chunks} | ${r.retries} | ${r.cached} |`);
  await h.close();
});

/**
 * Loads the fixture through `faults` (a `/s/…` spec; '' for none) into a
 * fresh cache and reports how it ended: `{ loadErr | err, status, bits,
 * retries, cacheErrors, cache: { base, stream } (SHA-256 of what the cache
 * holds, or null) }`.
 */
async function run(name, faults, options = {}, { cacheName, prepare } = {}) {
  const cache = cacheName ?? `faults-${cacheNo++}`;
  // faults hit the stream only, unless the spec says otherwise (`on=`,
  // `fail=`); 4 MB/s, so that bytes arrive as they are sent and a reset
  // lands where it is placed
  const spec = !faults ? '' : `rate=4000000,${/(^|,)(on|fail)=/.test(faults) ? '' : 'on=p2u,'}${faults}`;
  const url = (spec ? `/s/${spec}` : '') + MANIFEST;
  const r = await inPage(async (p2u, { f32, bits, arg }) => {
    const c = await caches.open(arg.cache);
    if (arg.prepare) {
      const base = new URL(arg.url.replace(/[^/]*$/, 'resnet_fmnist.p2u'), location.href).href;
      await c.put(base, new Response(new Uint8Array(arg.prepare.bytes), { headers: { 'x-p2u-sha256': arg.prepare.label } }));
    }
    const retries = [];
    const cacheErrors = [];
    let m;
    try {
      m = await p2u.load(arg.url, {
        inputDims: arg.dims, cache: arg.cache, retryDelayMs: 20,
        onRetry: (x) => retries.push([x.file, x.offset, x.error.kind]),
        onCacheError: (x) => cacheErrors.push(x.error.kind),
        ...arg.options,
      });
    } catch (e) {
      return { loadErr: { kind: e.kind, message: e.message }, retries, cacheErrors };
    }
    const err = await m.finalized.then(() => null, (e) => ({ kind: e.kind, message: e.message }));
    const y = await m.run(await f32('/fx/resnet_input.f32'), arg.dims);
    const sha = async (u) => {
      const hit = await c.match(new URL(arg.url.replace(/[^/]*$/, u), location.href).href);
      if (!hit) return null;
      const d = new Uint8Array(await crypto.subtle.digest('SHA-256', await hit.arrayBuffer()));
      return Array.from(d, (b) => b.toString(16).padStart(2, '0')).join('');
    };
    const held = { base: await sha('resnet_fmnist.base.onnx'), stream: await sha('resnet_fmnist.p2u') };
    await caches.delete(arg.cache);
    return { err, retries, cacheErrors, bits: bits(y.output), stage: y.stage, status: m.status, cache: held };
  }, { url, dims: DIMS, cache, options, prepare });
  const outcome = r.loadErr ? `load() rejects: ${r.loadErr.kind}` : r.err ? `stops: ${r.err.kind}` : 'exact';
  rows.push({
    name, outcome, stage: r.stage ?? '-', chunks: r.status ? `${r.status.chunksApplied}/${r.status.chunksTotal}` : '-',
    retries: r.retries.length, cached: r.cache?.stream ? (r.cache.stream === manifest.stream.sha256 ? 'verified copy' : 'CORRUPT') : 'none',
  });
  return r;
}

/** The case ended bit-exact with a verified copy in the cache. */
function assertExact(r, what) {
  assert.equal(r.loadErr, undefined, `${what}: ${JSON.stringify(r.loadErr)}`);
  assert.equal(r.err, null, `${what}: ${JSON.stringify(r.err)}`);
  assert.deepEqual(r.bits, exactBits, `${what}: outputs are the original model's`);
  assert.equal(r.cache.base, manifest.base.sha256, `${what}: the cached base is the verified one`);
  assert.equal(r.cache.stream, manifest.stream.sha256, `${what}: the cached stream is the verified one`);
}

/** The stream stopped with one of `kinds`, the model serves its last good
 * stage and the cache holds no stream. */
function assertStopped(r, kinds, what) {
  assert.equal(r.loadErr, undefined, `${what}: ${JSON.stringify(r.loadErr)}`);
  assert.ok([kinds].flat().includes(r.err?.kind), `${what}: ${JSON.stringify(r.err)}`);
  assert.equal(r.status.exact, false, what);
  assert.equal(r.stage, r.status.stage, `${what}: runs serve the stage reached`);
  assert.equal(r.cache.stream, null, `${what}: nothing of the stream is cached`);
}

describe('network faults in Chromium', () => {
  it('a reset at byte 0, inside the header and at EOF resumes to the exact model', async () => {
    for (const [name, at] of [['reset at 0', 0], ['reset in header', 40], ['reset at EOF', stream.length]]) {
      const r = await run(name, `drop=${at}`);
      assertExact(r, name);
      if (at < stream.length) assert.equal(r.retries.length, 1, name);
    }
  });

  it('a reset at every chunk boundary resumes from there, bit-exact', async () => {
    // the reset comes 300 ms after the last byte, so the loader has read
    // them all (a browser drops what a stream had queued when it errors)
    for (const at of ENDS.slice(0, -1)) {
      const r = await run(`reset at ${at}`, `drop=${at},dropdelay=300`);
      assertExact(r, `reset at ${at}`);
      assert.deepEqual(r.retries.map((x) => x[1]), [at], `reset at ${at}: resumed from there`);
    }
    rows.splice(rows.length - ENDS.length + 1, ENDS.length - 1, {
      name: `reset at each of ${ENDS.length} frame ends`, outcome: 'exact (all)', stage: 'final', chunks: 'all', retries: 1, cached: 'verified copy',
    });
  });

  it('resets until the retries run out leave the model at its last good stage', async () => {
    const r = await run('resets until retries run out', `drop=${ENDS[5]},drops=99`, { retries: 2 });
    assertStopped(r, ['network', 'truncated'], 'repeated resets');
    assert.equal(r.retries.length, 2);
    assert.equal(r.status.chunksApplied, 5);
  });

  it('a Range answer starting early is skipped into place; 5xx and 416 are handled', async () => {
    assertExact(await run('early Content-Range', `drop=${ENDS[7] + 100},badrange`), 'early Content-Range');
    const five = await run('503 on first requests', 'fail=2');
    assertExact(five, '503');
    assert.deepEqual(five.retries.map((x) => x[0]), ['manifest', 'manifest', 'base', 'base', 'stream', 'stream']);
    assertExact(await run('503 on resume', `drop=${ENDS[3]},failrange=2`), '503 on resume');
    // every byte sent, then silence: the stall timeout's resume asks for
    // nothing and gets 416
    const eof = await run('416 at EOF', `chunked,stall=${stream.length}`, { stallTimeoutMs: 600 });
    assertExact(eof, '416');
    const last = h.server.requests.filter((q) => q.path.includes(`stall=${stream.length}`) && q.range).at(-1);
    assert.deepEqual([last.range, last.status], [`bytes=${stream.length}-`, 416]);
  });

  it('a stalled response times out and resumes', async () => {
    const r = await run('stall', `stall=${ENDS[4] + 10}`, { stallTimeoutMs: 600 });
    assertExact(r, 'stall');
    assert.equal(r.retries.length, 1);
    assert.match(r.retries[0][2], /network/);
  });

  it('a file changed on the server between request and resume is not spliced', async () => {
    const r = await run('file changed before resume', `drop=${ENDS[6]},dropdelay=300,swap=${encodeURIComponent(OTHER_STREAM)}`);
    assertStopped(r, 'corrupt', 'changed file');
    assert.match(r.err.message, /changed on the server/);
    assert.equal(r.status.chunksApplied, 6);
    const ranged = h.server.requests.filter((q) => q.path.includes('swap=') && q.range);
    assert.ok(ranged.length >= 1 && ranged.every((q) => q.status === 200), 'If-Range made the server send the new file whole');
  });

  it('a corrupt base is refused and not cached; a corrupt chunk stops the stream', async () => {
    const r = await run('corrupt base', 'on=onnx,corruptbase=5000');
    assert.equal(r.loadErr?.kind, 'corrupt', JSON.stringify(r.loadErr));
    assert.match(r.loadErr.message, /SHA-256/);
    const c = await run('corrupt chunk', `corrupt=${ENDS[2] + 30}`);
    assertStopped(c, 'corrupt', 'corrupt chunk');
    assert.equal(c.status.chunksApplied, 2);
  });

  it('a damaged cached stream is detected, dropped and fetched again', async () => {
    const damaged = Buffer.from(stream);
    damaged[ENDS[4] + 40] ^= 0x10;
    const r = await run('damaged cache entry', '', {}, { prepare: { bytes: Array.from(damaged), label: manifest.stream.sha256 } });
    assert.equal(r.err, null, JSON.stringify(r.err));
    assert.deepEqual(r.bits, exactBits);
    assert.deepEqual(r.cacheErrors, ['corrupt']);
    assert.equal(r.cache.stream, null, 'the damaged copy is gone (the resumed rest is not cached)');
    const refetch = h.server.requests.filter((q) => q.path === '/fx/resnet/resnet_fmnist.p2u' && q.range);
    assert.equal(refetch.at(-1).range, `bytes=${ENDS[4]}-`, 'fetched again from the last good chunk');
    assert.equal(createHash('sha256').update(stream).digest('hex'), manifest.stream.sha256);
  });

  it('downloads on one link share its rate (the first-visit benchmark\'s link)', async () => {
    const rate = 400000;
    const r = await inPage(async (p2u, { arg }) => {
      const get = (f) => fetch(`/s/link=${arg}/fx/${f}`, { cache: 'no-store' }).then((x) => x.arrayBuffer()).then((b) => b.byteLength);
      const t0 = performance.now();
      const sizes = await Promise.all([get('resnet/resnet_fmnist.base.onnx'), get('resnet3/resnet_fmnist.base.onnx')]);
      return { sizes, ms: performance.now() - t0 };
    }, rate);
    // each alone would take size / rate; sharing, both end only after the sum
    const alone = (Math.max(...r.sizes) / rate) * 1000;
    const shared = ((r.sizes[0] + r.sizes[1]) / rate) * 1000;
    assert.ok(shared > 1.4 * alone, 'two files of comparable size');
    assert.ok(r.ms >= 0.95 * shared, `${r.ms.toFixed(0)} ms for ${r.sizes} bytes (alone ${alone.toFixed(0)} ms, shared link ${shared.toFixed(0)} ms)`);
  });
});
