// The Cornerstone3D example (examples/cornerstone) against the `npm pack`
// tarball: a stack viewport shows pydicom's 16-bit MR sample, the demo's
// VGG16 classifies the displayed pixels under the viewport's VOI window,
// first from the base (the model streamed over a rate-limited link), at
// last with the exact weights; a new VOI classifies again with that window.

import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { open, packPackage, repo, startVite } from './harness.mjs';

const assets = process.env.P2U_DEMO_ASSETS ?? join(homedir(), '.cache', 'p2u', 'demo-web');
let app;
const children = [];
let h;

before(async () => {
  app = mkdtempSync(join(tmpdir(), 'p2u-cornerstone-'));
  cpSync(join(repo, 'examples', 'cornerstone'), app, { recursive: true, filter: (p) => !p.includes('node_modules') && !p.includes(`${join('cornerstone', 'public')}`) });
  const tarball = packPackage(app);
  const pkg = JSON.parse(readFileSync(join(app, 'package.json'), 'utf8'));
  pkg.dependencies['p2u-onnx'] = `file:./${tarball}`;
  writeFileSync(join(app, 'package.json'), JSON.stringify(pkg, null, 2));
  execFileSync('npm', ['install', '--no-audit', '--no-fund'], { cwd: app, stdio: 'pipe' });
  mkdirSync(join(app, 'public', 'dicom'), { recursive: true });
  cpSync(join(assets, 'dicom', 'MR_small.dcm'), join(app, 'public', 'dicom', 'MR_small.dcm'));
  h = await open({ '/demo/': assets });
});

after(async () => {
  for (const c of children) c.kill();
  await h?.close();
  if (app) rmSync(app, { recursive: true, force: true });
});

it('a Cornerstone3D viewport and p2u: the displayed DICOM classified as a preview, then exact; a new VOI reruns with that window', async () => {
  const url = await startVite(app, [], children);
  const { page } = h;
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // 8 MB/s: the 16 MB base in ~2 s, the 48 MB stream in ~6 s more
  const model = `${h.origin}/s/rate=8000000/demo/model/Tumor_classification_vgg16.json`;
  await page.goto(`${url}?model=${encodeURIComponent(model)}`);
  await page.waitForFunction(() => document.querySelector('#stage').className === 'final' || document.querySelector('#error').textContent, null, { timeout: 180000 });
  assert.equal(await page.textContent('#error'), '');
  const results = await page.evaluate(() => window.p2uExample.results);
  assert.ok(results.length >= 2, JSON.stringify(results));
  assert.equal(results[0].final, false, 'the first result is a preview');
  assert.ok(results[0].stage < 3);
  assert.deepEqual([results.at(-1).stage, results.at(-1).final], [3, true]);
  const shot = join(process.env.P2U_ARTIFACTS ?? tmpdir(), 'p2u-cornerstone.png');
  await page.screenshot({ path: shot });
  console.log(`# cornerstone example screenshot: ${shot}`);

  // a window set on the viewport is the window the model gets (DICOM LINEAR)
  const n = results.length;
  // (MR_small has no rescale: stored units are modality units; LINEAR's
  // lower/upper 100.5/499.5 are centre 300.5, width 400: c − 0.5 ∓ (w − 1)/2)
  await page.evaluate(() => window.p2uExample.setVoi(100.5, 499.5));
  await page.waitForFunction((n) => window.p2uExample.results.slice(n).some((r) => r.voi.width === 400), n, { timeout: 60000 });
  const after = await page.evaluate((n) => window.p2uExample.results.slice(n).find((r) => r.voi.width === 400), n);
  assert.equal(after.final, true);
  assert.deepEqual(after.voi, { center: 300.5, width: 400 });
  assert.deepEqual(errors, []);
});
