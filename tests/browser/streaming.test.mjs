// The npm package in headless Chromium, streaming real models from a real
// HTTP server on 127.0.0.1 (rate-limited, with Range, and with faults).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { open, f32Bits, fixtures, pageRunner } from './harness.mjs';

const MNV2 = '/fx/mnv2/mobilenetv2_imagenet.json';
const RESNET = '/fx/resnet/resnet_fmnist.json';
const RESNET_STREAM = '/fx/resnet/resnet_fmnist.p2u';
const RESNET_DIMS = [1, 1, 28, 28];
const MNV2_DIMS = [1, 3, 224, 224];

let h;
before(async () => {
  h = await open();
});
after(async () => {
  assert.deepEqual(h.offsite, [], 'the page made no request outside the test server');
  await h.close();
});

/** Runs `fn(p2u, ctx)` in the page with the package imported. */
const inPage = (fn, arg) => pageRunner(h)(fn, arg);

const ORIGINALS = {
  resnet: { onnx: '/fx/resnet_original.onnx', input: '/fx/resnet_input.f32', dims: RESNET_DIMS },
  mnv2: { onnx: '/fx/mnv2_original.onnx', input: '/fx/mnv2_input.f32', dims: MNV2_DIMS },
};
const originals = new Map();

/** Output bits of the original fp32 model in tract-wasm on the fixture input (once per model). */
function originalBits(which) {
  if (!originals.has(which)) {
    originals.set(which, inPage(async (p2u, { f32, bits, arg }) => {
      const original = await p2u.loadOnnx(new Uint8Array(await (await fetch(arg.onnx)).arrayBuffer()), { inputDims: arg.dims });
      return bits((await original.run(await f32(arg.input), arg.dims)).outputs[0].data);
    }, ORIGINALS[which]));
  }
  return originals.get(which);
}

const requestsFor = (suffix) => h.server.requests.filter((r) => r.path.endsWith(suffix));

describe('streaming in Chromium', () => {
  it('serves a first inference before the stream ends and ends bit-identical to the original model', async () => {
    const r = await inPage(async (p2u, { f32, bits, arg }) => {
      const x = await f32('/fx/mnv2_input.f32');
      let streamLoaded = 0;
      const m = await p2u.load(`/s/rate=2500000${arg.url}`, {
        inputDims: arg.dims,
        cache: false,
        onProgress: (p) => p.file === 'stream' && (streamLoaded = p.loaded),
      });
      const first = await m.run(x, arg.dims);
      const atFirst = { loaded: streamLoaded, total: m.manifest.stream.bytes };
      const stages = new Set([first.stage]);
      const poll = setInterval(async () => stages.add((await m.run(x, arg.dims)).stage), 150);
      await m.finalized;
      clearInterval(poll);
      const last = await m.run(x, arg.dims);
      return {
        first: { stage: first.stage, final: first.final, chunks: first.chunksApplied, total: first.chunksTotal },
        atFirst,
        stagesSeen: [...stages].sort(),
        last: { stage: last.stage, final: last.final, exact: m.status.exact, dims: last.dims },
        lastBits: bits(last.output),
        firstBits: bits(first.output),
      };
    }, { url: MNV2, dims: MNV2_DIMS });
    assert.equal(r.first.stage, 0);
    assert.equal(r.first.final, false);
    assert.ok(r.atFirst.loaded < r.atFirst.total, `first result at ${r.atFirst.loaded} of ${r.atFirst.total} stream bytes`);
    assert.ok(r.stagesSeen.length >= 2 && r.stagesSeen.some((s) => s > 0 && s < 3), `stages served before the end: ${r.stagesSeen}`);
    assert.deepEqual(r.last, { stage: 3, final: true, exact: true, dims: [1, 1000] });
    assert.deepEqual(r.lastBits, await originalBits('mnv2'), 'final output = tract-wasm on the original fp32 file, bit for bit');
    assert.notDeepEqual(r.firstBits, r.lastBits);
    // The native runtime computes with other SIMD kernels (x86 FMA vs wasm
    // simd128), so it agrees to rounding, not to the bit; same top class.
    const native = new Float32Array(new Uint32Array(f32Bits(`${fixtures}/mnv2_native.f32`)).buffer);
    const wasm = new Float32Array(new Uint32Array(r.lastBits).buffer);
    const range = Math.max(...native) - Math.min(...native);
    const maxDiff = Math.max(...wasm.map((v, i) => Math.abs(v - native[i])));
    const argmax = (a) => a.indexOf(Math.max(...a));
    console.log(`# native vs wasm final: max |diff| ${maxDiff.toExponential(2)} of range ${range.toFixed(2)}; identical: ${maxDiff === 0}`);
    assert.ok(maxDiff <= 1e-5 * range, `native vs wasm ${maxDiff}`);
    assert.equal(argmax(wasm), argmax(native));
  });

  it('keeps the refining plan when asked and still ends on the original outputs', async () => {
    const r = await inPage(async (p2u, { f32, bits, arg }) => {
      const x = await f32('/fx/resnet_input.f32');
      const m = await p2u.load(arg.url, { inputDims: arg.dims, cache: false, finalPlan: 'inputs' });
      await m.finalized;
      const y = await m.run(x, arg.dims);
      return { final: y.final, bits: bits(y.output) };
    }, { url: RESNET, dims: RESNET_DIMS });
    assert.equal(r.final, true);
    const clean = await originalBits('resnet');
    assert.deepEqual(r.bits, clean);
  });


  it('resumes a dropped connection with a Range request from the first missing byte', async () => {
    const r = await inPage(async (p2u, { f32, bits, arg }) => {
      const retries = [];
      const m = await p2u.load(`/s/rate=600000,drop=300000${arg.url}`, {
        inputDims: arg.dims, cache: false, retryDelayMs: 50, onRetry: (x) => retries.push(x.offset),
      });
      await m.finalized;
      const y = await m.run(await f32('/fx/resnet_input.f32'), arg.dims);
      return { retries, final: y.final, bits: bits(y.output) };
    }, { url: RESNET, dims: RESNET_DIMS });
    assert.equal(r.final, true);
    assert.equal(r.retries.length, 1);
    assert.ok(r.retries[0] > 0 && r.retries[0] <= 300000, `resumed at ${r.retries[0]}`);
    const ranged = requestsFor('/s/rate=600000,drop=300000' + RESNET_STREAM).filter((q) => q.range);
    assert.deepEqual(ranged.map((q) => [q.range, q.status]), [[`bytes=${r.retries[0]}-`, 206]]);
    assert.deepEqual(r.bits, await originalBits('resnet'));
  });

  it('resumes on a server without Range support by skipping what it already has', async () => {
    const r = await inPage(async (p2u, { f32, bits, arg }) => {
      const m = await p2u.load(`/s/norange,drop=400000${arg.url}`, { inputDims: arg.dims, cache: false, retryDelayMs: 50 });
      await m.finalized;
      return bits((await m.run(await f32('/fx/resnet_input.f32'), arg.dims)).output);
    }, { url: RESNET, dims: RESNET_DIMS });
    assert.deepEqual(r, await originalBits('resnet'));
  });

  it('a dropped connection without retries leaves the model at its last good stage', async () => {
    const r = await inPage(async (p2u, { f32, arg }) => {
      const m = await p2u.load(`/s/rate=800000,drop=400000${arg.url}`, { inputDims: arg.dims, cache: false, retries: 0 });
      const err = await m.finalized.then(() => null, (e) => ({ name: e.name, kind: e.kind, message: e.message }));
      const y = await m.run(await f32('/fx/resnet_input.f32'), arg.dims);
      return { err, status: m.status, y: { stage: y.stage, final: y.final, chunks: y.chunksApplied } };
    }, { url: RESNET, dims: RESNET_DIMS });
    assert.equal(r.err.name, 'P2uError');
    assert.ok(['network', 'truncated'].includes(r.err.kind), r.err.kind);
    assert.ok(r.status.chunksApplied > 0 && r.status.chunksApplied < r.status.chunksTotal, JSON.stringify(r.status));
    assert.equal(r.status.exact, false);
    assert.equal(r.y.chunks, r.status.chunksApplied);
    assert.ok(r.status.error);
  });

  it('a corrupt chunk is rejected with a clear error and nothing applied after it', async () => {
    const r = await inPage(async (p2u, { f32, arg }) => {
      const retries = [];
      const m = await p2u.load(`/s/corrupt=500000${arg.url}`, { inputDims: arg.dims, cache: false, onRetry: (x) => retries.push(x) });
      const err = await m.finalized.then(() => null, (e) => ({ kind: e.kind, message: e.message }));
      const y = await m.run(await f32('/fx/resnet_input.f32'), arg.dims);
      return { err, retries: retries.length, status: m.status, stage: y.stage };
    }, { url: RESNET, dims: RESNET_DIMS });
    assert.equal(r.err.kind, 'corrupt');
    assert.match(r.err.message, /rejected chunk #\d+ at byte \d+: corrupt data: checksum mismatch/);
    assert.equal(r.retries, 0, 'bad data is not retried');
    assert.ok(r.status.chunksApplied > 0 && !r.status.exact);
    assert.equal(r.stage, r.status.stage);
  });

  it('a stream made for another model is refused and the base keeps serving', async () => {
    const r = await inPage(async (p2u, { f32, arg }) => {
      const m = await p2u.load({ base: '/fx/resnet/resnet_fmnist.base.onnx', stream: '/fx/mnv2/mobilenetv2_imagenet.p2u' }, { inputDims: arg.dims, cache: false });
      const err = await m.finalized.then(() => null, (e) => ({ kind: e.kind, message: e.message }));
      const y = await m.run(await f32('/fx/resnet_input.f32'), arg.dims);
      return { err, stage: y.stage, output: y.output.length };
    }, { dims: RESNET_DIMS });
    assert.equal(r.err.kind, 'mismatch');
    assert.match(r.err.message, /stream was made for base/);
    assert.deepEqual([r.stage, r.output], [0, 10]);
  });

  it('abort: before the base runs load() rejects; afterwards the model stays usable', async () => {
    const r = await inPage(async (p2u, { f32, arg }) => {
      const early = new AbortController();
      const p = p2u.load(`/s/rate=100000${arg.url}`, { inputDims: arg.dims, cache: false, signal: early.signal });
      setTimeout(() => early.abort(), 100);
      const earlyErr = await p.then(() => null, (e) => e.kind);
      const late = new AbortController();
      const m = await p2u.load(`/s/rate=300000${arg.url}`, {
        inputDims: arg.dims, cache: false, signal: late.signal,
        onStage: (s) => s.chunksApplied >= 3 && late.abort(),
      });
      const lateErr = await m.finalized.then(() => null, (e) => e.kind);
      const applied = m.status.chunksApplied;
      await new Promise((r) => setTimeout(r, 600));
      const y = await m.run(await f32('/fx/resnet_input.f32'), arg.dims);
      return { earlyErr, lateErr, applied, after: m.status.chunksApplied, total: m.status.chunksTotal, runChunks: y.chunksApplied };
    }, { url: RESNET, dims: RESNET_DIMS });
    assert.equal(r.earlyErr, 'abort');
    assert.equal(r.lateErr, 'abort');
    assert.ok(r.applied >= 3 && r.applied < r.total, JSON.stringify(r));
    assert.equal(r.after, r.applied, 'nothing applied after the abort');
    assert.equal(r.runChunks, r.applied);
  });

  it('clear errors for a missing model and for a file that is not a base', async () => {
    const r = await inPage(async (p2u) => {
      const e1 = await p2u.load('/fx/nothing/here.json', { cache: false }).then(() => null, (e) => [e.name, e.kind, e.message]);
      const e2 = await p2u.load({ base: '/fx/resnet/resnet_fmnist.json', stream: '/fx/resnet/resnet_fmnist.p2u' }, { cache: false }).then(() => null, (e) => [e.name, e.kind, e.message]);
      return { e1, e2 };
    });
    assert.deepEqual(r.e1.slice(0, 2), ['P2uError', 'network']);
    assert.match(r.e1[2], /HTTP 404/);
    assert.deepEqual(r.e2.slice(0, 2), ['P2uError', 'onnx']);
    assert.doesNotMatch(r.e2[2], /panicked|RuntimeError|unreachable/);
  });

  it('integer inputs are normalised as declared (8-bit range, 16-bit window)', async () => {
    const r = await inPage(async (p2u, { f32, arg }) => {
      const m = await p2u.load(arg.url, { inputDims: arg.dims, cache: false });
      await m.finalized;
      const raw = new Uint8Array(await (await fetch('/fx/resnet_pixels.u8')).arrayBuffer());
      const [mu, sd] = [0.286, 0.353];
      const asFloat = Float32Array.from(raw, (v) => (v / 255 - mu) / sd);
      const to = [-mu / sd, (1 - mu) / sd];
      const a = (await m.run(asFloat, arg.dims)).output;
      const b = (await m.run(raw, arg.dims, { normalize: { range: [0, 255], to } })).output;
      const wide = Uint16Array.from(raw, (v) => v * 200 + 1000); // 16-bit values with an offset
      // the DICOM LINEAR window c 26500.5, w 51001 spans exactly 1000 ..= 52000
      const c = (await m.run(wide, arg.dims, { normalize: { window: { center: 1000 + 255 * 100 + 0.5, width: 255 * 200 + 1 }, to } })).output;
      const bad = await m.run(new Float64Array(784), arg.dims).then(() => null, (e) => e.kind);
      const badDims = await m.run(asFloat, [1, 1, 28, 27]).then(() => null, (e) => [e.kind, e.message]);
      const diff = (p, q) => Math.max(...p.map((v, i) => Math.abs(v - q[i])));
      return { ab: diff(a, b), ac: diff(a, c), bad, badDims };
    }, { url: RESNET, dims: RESNET_DIMS });
    assert.ok(r.ab < 1e-4 && r.ac < 1e-4, JSON.stringify(r));
    assert.equal(r.bad, 'invalid');
    assert.equal(r.badDims[0], 'invalid');
    assert.match(r.badDims[1], /784 values, dims \[1, 1, 28, 27\] need 756/);
  });

  it('names inputs and outputs, returns outputs by name, takes canvas pixels and says what a wrong input should be', async () => {
    const r = await inPage(async (p2u, { arg }) => {
      const stages = [];
      const m = await p2u.load(arg.url, { cache: false, onStage: (s) => stages.push([s.stage, s.stages]) });
      const raw = new Uint8Array(await (await fetch('/fx/resnet_pixels.u8')).arrayBuffer());
      const [mu, sd] = [0.286, 0.353];
      const asFloat = Float32Array.from(raw, (v) => (v / 255 - mu) / sd);
      const a = await m.run(asFloat, arg.dims);
      // the same image as RGBA canvas pixels, to gray, with mean/std
      const rgba = new Uint8ClampedArray(raw.length * 4);
      raw.forEach((v, i) => rgba.set([v, v, v, 255], i * 4));
      const image = p2u.fromPixels(rgba, { width: 28, height: 28, channels: 'L', mean: mu, std: sd });
      const b = await m.run(image);
      const transposed = await m.run(asFloat, [1, 28, 28, 1]).then(() => null, (e) => [e.kind, e.message]);
      const wrongLayout = await m.run(p2u.fromPixels(rgba, { width: 28, height: 28, channels: 'L', layout: 'NHWC' })).then(() => null, (e) => [e.kind, e.message]);
      const badMean = (() => { try { p2u.fromPixels(rgba, { width: 28, height: 28, mean: [1, 2] }); } catch (e) { return [e.kind, e.message]; } })();
      const floatWindow = await m.run(asFloat, arg.dims, { normalize: { to: [0, 1] } }).then(() => null, (e) => e.kind);
      await m.finalized;
      const diff = Math.max(...a.output.map((v, i) => Math.abs(v - b.output[i])));
      return {
        inputMetadata: m.inputMetadata, outputMetadata: m.outputMetadata, inputNames: m.inputNames, outputNames: m.outputNames, labels: m.labels,
        byName: Object.keys(a.byName), same: a.byName.logits.data === a.outputs[0].data, name0: a.outputs[0].name,
        diff, bDims: b.dims, transposed, wrongLayout, badMean, floatWindow, stages: stages.slice(0, 1), last: stages.at(-1),
      };
    }, { url: RESNET, dims: RESNET_DIMS });
    assert.deepEqual(r.inputNames, ['input']);
    assert.equal(r.labels.length, 10);
    assert.equal(r.labels[9], 'Ankle boot');
    assert.deepEqual(r.outputNames, ['logits']);
    assert.deepEqual(r.inputMetadata, [{ name: 'input', type: 'float32', shape: ['N', 1, 28, 28], dims: [1, 1, 28, 28] }]);
    assert.equal(r.outputMetadata[0].name, 'logits');
    assert.deepEqual(r.byName, ['logits']);
    assert.ok(r.same && r.name0 === 'logits');
    assert.ok(r.diff < 1e-4, `pixels vs floats: ${r.diff}`);
    assert.equal(r.transposed[0], 'invalid');
    assert.match(r.transposed[1], /input "input" expects dims \[1, 1, 28, 28\], got \[1, 28, 28, 1\]/);
    assert.equal(r.wrongLayout[0], 'invalid');
    assert.match(r.wrongLayout[1], /expects dims \[1, 1, 28, 28\]/);
    assert.deepEqual(r.badMean[0], 'invalid');
    assert.match(r.badMean[1], /mean has 2 values for 3 channels/);
    assert.equal(r.floatWindow, 'invalid');
    // the first event already knows how many stages there are (from the manifest)
    assert.deepEqual(r.stages, [[0, 4]]);
    assert.deepEqual(r.last, [3, 4]);
  });

  it('a text model takes named int64 feeds, in the page and in a worker, and ends bit-identical to the original', async () => {
    const r = await inPage(async (p2u, { bits }) => {
      const dims = [2, 8];
      const ids = BigInt64Array.from({ length: 16 }, (_, i) => BigInt((i * 37 + 5) % 100));
      const mask = BigInt64Array.from({ length: 16 }, (_, i) => BigInt(i % 8 < 6 || i >= 8 ? 1 : 0));
      // an onnxruntime-web Tensor keeps its values behind getters: so does this one
      class Tensor {
        #data;
        constructor(type, data, dims) { this.type = type; this.#data = data; this.dims = dims; }
        get data() { return this.#data; }
      }
      const feeds = { attention_mask: { data: mask, dims }, input_ids: new Tensor('int64', ids, dims) };
      const original = await p2u.loadOnnx(new Uint8Array(await (await fetch('/fx/text.onnx')).arrayBuffer()), { inputDims: [dims, dims] });
      const want = (await original.run(feeds)).outputs.map((o) => bits(o.data));
      const m = await p2u.load('/fx/text/text.json', { inputDims: [dims, dims], cache: false });
      const first = await m.run(feeds);
      await m.finalized;
      const last = await m.run(feeds);
      const w = await p2u.loadInWorker('/fx/text/text.json', { inputDims: [dims, dims], cache: false });
      await w.finalized;
      const inWorker = await w.run(feeds);
      w.dispose();
      const refused = [];
      for (const bad of [
        { input_ids: feeds.input_ids },
        { ...feeds, token_type_ids: feeds.input_ids },
        { ...feeds, input_ids: { data: new Float32Array(16), dims } },
        { ...feeds, input_ids: { data: ids, dims: [2, 9] } },
        { input_ids: { data: ids.subarray(0, 8), dims: [1, 8] }, attention_mask: { data: mask.subarray(0, 8), dims: [1, 8] } },
      ]) {
        refused.push(await m.run(bad).then(() => 'accepted', (e) => `${e.kind}: ${e.message}`));
      }
      return {
        inputs: m.inputMetadata.map((i) => `${i.name} ${i.type} [${i.shape}]`),
        first: { stage: first.stage, names: first.outputs.map((o) => `${o.name} ${o.type} [${o.dims}]`) },
        last: { final: last.final, bits: last.outputs.map((o) => bits(o.data)) },
        worker: { final: inWorker.final, bits: inWorker.outputs.map((o) => bits(o.data)), logits: inWorker.byName.logits.dims },
        want,
        refused,
      };
    });
    assert.deepEqual(r.inputs, ['input_ids int64 [batch,8]', 'attention_mask int64 [batch,8]']);
    assert.deepEqual(r.first, { stage: 0, names: ['last_hidden_state float32 [2,8,64]', 'logits float32 [2,4]'] });
    assert.equal(r.last.final, true);
    assert.ok(r.last.bits.join() === r.want.join(), 'final outputs = tract-wasm on the original, bit for bit');
    assert.equal(r.worker.final, true);
    assert.ok(r.worker.bits.join() === r.want.join(), 'the same in a worker');
    assert.deepEqual(r.worker.logits, [2, 4]);
    assert.match(r.refused[0], /^invalid: feeds: no value for input "attention_mask"; the model takes input_ids \(int64 \[2, 8\]\), attention_mask/);
    assert.match(r.refused[1], /^invalid: feeds: "token_type_ids" is not an input of the model/);
    assert.match(r.refused[2], /^invalid: input "input_ids" is int64: give a BigInt64Array, got Float32Array/);
    assert.match(r.refused[3], /^invalid: input "input_ids": 16 values, dims \[2, 9\] need 18/);
    assert.match(r.refused[4], /^invalid: .*input "input_ids" expects dims \[2, 8\], got \[1, 8\]/);
  });

  it('caches completed files: a reload serves the final model without network', async () => {
    const url = '/s/rate=2000000' + RESNET;
    const first = await inPage(async (p2u, { arg }) => {
      const m = await p2u.load(arg.url, { inputDims: arg.dims, cache: 'p2u-test' });
      await m.finalized;
      return m.source;
    }, { url, dims: RESNET_DIMS });
    assert.equal(first, 'network');
    const before = h.server.requests.length;
    const warm = await inPage(async (p2u, { f32, bits, arg }) => {
      const m = await p2u.load(arg.url, { inputDims: arg.dims, cache: 'p2u-test' });
      const y = await m.run(await f32('/fx/resnet_input.f32'), arg.dims);
      return { source: y.source, final: y.final, status: m.status.source, bits: bits(y.output) };
    }, { url, dims: RESNET_DIMS });
    const fetched = h.server.requests.slice(before).map((q) => q.path).filter((p) => p.includes('resnet_fmnist.'));
    assert.deepEqual({ ...warm, bits: undefined }, { source: 'cache', final: true, status: 'cache', bits: undefined });
    assert.deepEqual(fetched, [url.replace(/\/fx.*/, '') + '/fx/resnet/resnet_fmnist.json'], 'only the manifest was asked for');
    assert.deepEqual(warm.bits, await originalBits('resnet'));
    await h.browser.setOffline(true);
    try {
      const offline = await inPage(async (p2u, { arg }) => {
        const m = await p2u.load(arg.url, { inputDims: arg.dims, cache: 'p2u-test' });
        return [m.source, m.final];
      }, { url, dims: RESNET_DIMS });
      assert.deepEqual(offline, ['cache', true]);
    } finally {
      await h.browser.setOffline(false);
    }
  });

  it('runs in a Web Worker with the same results', async () => {
    const r = await inPage(async (p2u, { f32, bits, arg }) => {
      const x = await f32('/fx/mnv2_input.f32');
      const stages = [];
      const m = await p2u.loadInWorker(`/s/rate=4000000${arg.url}`, { inputDims: arg.dims, cache: false, onStage: (s) => stages.push(s.chunksApplied) });
      const first = await m.run(x, arg.dims);
      await m.finalized;
      const last = await m.run(x, arg.dims);
      m.dispose();
      return { first: [first.stage, first.final], last: [last.stage, last.final], stages: stages.length, bits: bits(last.output) };
    }, { url: MNV2, dims: MNV2_DIMS });
    assert.ok(r.first[0] < 3 && r.first[1] === false, `first result from stage ${r.first[0]}`);
    assert.deepEqual(r.last, [3, true]);
    assert.ok(r.stages > 10);
    assert.deepEqual(r.bits, await originalBits('mnv2'));
  });

  it('a worker takes a compiled wasm Module; a wrong wasm or worker URL is an error naming it', async () => {
    const r = await inPage(async (p2u, { arg }) => {
      const module = await WebAssembly.compileStreaming(fetch('/pkg/wasm/p2u_wasm_bg.wasm'));
      const m = await p2u.loadInWorker(arg.url, { cache: false, wasm: module });
      const ok = (await m.run(new Float32Array(784), [1, 1, 28, 28])).outputs.length;
      m.dispose();
      const fail = (e) => [e.kind, e.message];
      const notWasm = await p2u.loadInWorker(arg.url, { cache: false, wasm: '/fx/resnet/resnet_fmnist.json' }).then(() => null, fail);
      const missingWasm = await p2u.loadInWorker(arg.url, { cache: false, wasm: '/fx/no/such.wasm' }).then(() => null, fail);
      const noWorker = await p2u.loadInWorker(arg.url, { cache: false, workerUrl: '/fx/no/worker.js' }).then(() => null, fail);
      return { ok, notWasm, missingWasm, noWorker };
    }, { url: RESNET });
    assert.equal(r.ok, 1);
    assert.equal(r.notWasm[0], 'network');
    assert.match(r.notWasm[1], /resnet_fmnist\.json is not the p2u wasm runtime \(content-type application\/json/);
    assert.equal(r.missingWasm[0], 'network');
    assert.match(r.missingWasm[1], /GET http:\/\/[^ ]+\/fx\/no\/such\.wasm \(the p2u wasm runtime\): HTTP 404/);
    assert.equal(r.noWorker[0], 'internal');
    assert.match(r.noWorker[1], /worker failed to start: its script could not be loaded .*workerUrl/);
    assert.doesNotMatch(r.noWorker[1], /object Event/);
  });
});
