// The encoder without Rust: `npx p2u-onnx encode …` from the `npm pack`
// tarball runs the CLI compiled for WASI in Node, with the native CLI's
// flags, and writes the very bytes the native CLI writes data-free; calibrated
// from a folder of PNG images, an encode equivalent to the native one.

import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixtures, packPackage } from './harness.mjs';

const nativeBin = process.env.P2U_BIN ?? join(process.env.CARGO_TARGET_DIR ?? join(homedir(), '.cache', 'p2u', 'target'), 'release', 'p2u');
let app;

/** `npx --no-install p2u-onnx ARGS` in the app directory. */
const npx = (args) => spawnSync('npx', ['--no-install', 'p2u-onnx', ...args], { cwd: app, encoding: 'utf8' });
const native = (args) => spawnSync(nativeBin, args, { cwd: app, encoding: 'utf8' });

function sameFiles(a, b) {
  const files = readdirSync(join(app, a)).sort();
  assert.deepEqual(files, readdirSync(join(app, b)).sort());
  for (const f of files) assert.ok(readFileSync(join(app, a, f)).equals(readFileSync(join(app, b, f))), `${f} differs between ${a} and ${b}`);
  return files;
}

before(() => {
  app = mkdtempSync(join(tmpdir(), 'p2u-npx-'));
  const tarball = packPackage(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'web-project', private: true, type: 'module' }));
  execFileSync('npm', ['install', '--no-audit', '--no-fund', `./${tarball}`], { cwd: app, stdio: 'pipe' });
  copyFileSync(join(fixtures, 'resnet_original.onnx'), join(app, 'model.onnx'));
  // 12 gray 28×28 PNGs (smooth shapes), written by Pillow
  mkdirSync(join(app, 'images'));
  execFileSync('python3', ['-c', `
import numpy as np
from PIL import Image
rng = np.random.default_rng(7)
y, x = np.mgrid[0:28, 0:28]
for i in range(12):
    cy, cx, r = rng.uniform(8, 20, 2).tolist() + [rng.uniform(4, 10)]
    img = 255 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))
    Image.fromarray(img.astype(np.uint8), 'L').save(f'images/{i:02}.png')
`], { cwd: app });
});

after(() => app && rmSync(app, { recursive: true, force: true }));

it('npx p2u-onnx has the native CLI: help, usage errors, version', () => {
  const help = npx(['encode', '--help']);
  assert.equal(help.status, 0, help.stderr);
  assert.match(help.stdout, /Usage: p2u encode/);
  assert.match(help.stdout, /--calibration/);
  const bad = npx(['encode', 'model.onnx', '--bits', '4']);
  assert.equal(bad.status, 2, bad.stderr);
  assert.match(bad.stderr, /--bits/);
  const version = npx(['--version']);
  assert.equal(version.status, 0);
  assert.match(version.stdout, /^p2u \d+\.\d+\.\d+/);
  const missing = npx(['encode', 'nothere.onnx', '-o', 'x']);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /nothere\.onnx/);
});

it('npx p2u-onnx encode writes the bytes the native CLI writes (relative paths, data-free)', () => {
  const a = npx(['encode', 'model.onnx', '-o', 'out-npx']);
  assert.equal(a.status, 0, a.stderr);
  const b = native(['encode', 'model.onnx', '-o', 'out-native']);
  assert.equal(b.status, 0, b.stderr);
  assert.deepEqual(sameFiles('out-npx', 'out-native'), ['model.base.onnx', 'model.json', 'model.p2u']);
  const v = npx(['verify', 'model.onnx', 'out-npx', '--json']);
  assert.equal(v.status, 0, v.stderr);
  assert.equal(JSON.parse(v.stdout).ok, true);
});

it('npx p2u-onnx encode calibrates from a folder of images like the native CLI', () => {
  const args = ['--quiet', 'encode', 'model.onnx', '--calibration', 'images', '--preprocess', '{"mean": [0.286], "std": [0.353]}', '--base-budget', '3b'];
  const a = npx([...args, '-o', 'cal-npx']);
  assert.equal(a.status, 0, a.stderr);
  assert.equal(a.stderr, '', '--quiet');
  const b = native([...args, '-o', 'cal-native']);
  assert.equal(b.status, 0, b.stderr);
  // Calibration runs the model in tract, whose sums differ in their last
  // bits between x86 and wasm kernels; GPTQ and the chunk order can follow
  // such a bit, so the two encodes are compared as encodes, not as bytes:
  // same stages, same base widths, sizes within 1%, both bit-exact at the end.
  const manifest = (dir) => JSON.parse(readFileSync(join(app, dir, 'model.json'), 'utf8'));
  const [m, n] = [manifest('cal-npx'), manifest('cal-native')];
  assert.deepEqual(m.stages.map((s) => [s.kind, s.bits]), n.stages.map((s) => [s.kind, s.bits]));
  assert.deepEqual(m.tensors.map((t) => [t.name, t.base_bits]), n.tensors.map((t) => [t.name, t.base_bits]));
  for (const [i, s] of m.stages.entries()) {
    const ratio = s.cumulative_bytes / n.stages[i].cumulative_bytes;
    assert.ok(Math.abs(ratio - 1) < 0.01, `stage ${i}: ${s.cumulative_bytes} vs ${n.stages[i].cumulative_bytes} bytes`);
  }
  for (const dir of ['cal-npx', 'cal-native']) {
    const v = npx(['verify', 'model.onnx', dir, '--json']);
    assert.equal(v.status, 0, v.stderr);
    assert.equal(JSON.parse(v.stdout).ok, true);
  }
});
