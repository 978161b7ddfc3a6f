// A stock Vite 7 app — `npm create vite`-style files, no vite.config — that
// installs the `npm pack` tarball and imports the package by name. Under
// the dev server (which pre-bundles the package into node_modules/.vite/)
// and after `vite build` + `vite preview`, on the main thread and in a
// worker, the first result comes from the base and the last one is final.

import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, fixtures, packPackage, startVite } from './harness.mjs';
import { startServer } from '../../www/server.mjs';

const VITE = '7.3.8';

const INDEX_HTML = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><link rel="icon" href="data:,"><title>stock vite app</title></head>
<body><p id="first"></p><p id="final"></p><p id="error"></p>
<script type="module" src="/src/main.js"></script></body></html>`;

const MAIN_JS = `import { load, loadInWorker } from 'p2u-onnx';

const q = new URLSearchParams(location.search);
const worker = q.has('worker');
const show = (id, text) => (document.getElementById(id).textContent = text);
const top = (r) => r.output.indexOf(Math.max(...r.output));
try {
  const x = new Float32Array(await (await fetch('/mnv2_input.f32')).arrayBuffer());
  const model = await (worker ? loadInWorker : load)(q.get('model') ?? '/mnv2/mobilenetv2_imagenet.json', { cache: false });
  const [n, c, h, w] = model.inputMetadata[0].dims;
  const first = await model.run(x, [n, c, h, w]);
  show('first', 'class ' + top(first) + ' stage ' + first.stage + (first.final ? ' final' : ' preview'));
  await model.finalized;
  const last = await model.run(x, [n, c, h, w]);
  show('final', 'class ' + top(last) + ' stage ' + last.stage + (last.final ? ' final' : ' preview') + ' ' + model.outputNames[0]);
} catch (e) {
  show('error', (e.kind ?? '') + ': ' + e.message);
}
`;

let app;
let browser;
let fixtureServer;
/** The model, from the fixture server over a 2.5 MB/s link: the first
 * result comes from the base while the stream is still arriving. */
let modelParam;
const servers = [];

const vite = (args) => startVite(app, args, servers);

/** Opens `url` and returns what the app shows, with failed requests. */
async function visit(url, shot) {
  const page = await browser.newPage();
  const failed = [];
  page.on('response', (r) => r.status() >= 400 && failed.push(`${r.status()} ${r.url()}`));
  // (ERR_ABORTED: requests cut when the page closes, e.g. the throttled link's)
  page.on('requestfailed', (r) => r.failure()?.errorText !== 'net::ERR_ABORTED' && failed.push(`failed ${r.url()} (${r.failure()?.errorText})`));
  page.on('pageerror', (e) => failed.push(`page error ${e.message}`));
  await page.goto(url);
  await page.waitForFunction(() => document.querySelector('#final').textContent || document.querySelector('#error').textContent, null, { timeout: 180000 });
  const seen = { first: await page.textContent('#first'), final: await page.textContent('#final'), error: await page.textContent('#error'), failed };
  await page.screenshot({ path: join(process.env.P2U_ARTIFACTS ?? tmpdir(), shot) });
  await page.close();
  return seen;
}

before(async () => {
  app = mkdtempSync(join(tmpdir(), 'p2u-vite-app-'));
  const tarball = packPackage(app);
  writeFileSync(
    join(app, 'package.json'),
    JSON.stringify({ name: 'stock-vite-app', private: true, type: 'module', scripts: { dev: 'vite', build: 'vite build', preview: 'vite preview' } }),
  );
  execFileSync('npm', ['install', '--no-audit', '--no-fund', `vite@${VITE}`, `./${tarball}`], { cwd: app, stdio: 'pipe' });
  writeFileSync(join(app, 'index.html'), INDEX_HTML);
  mkdirSync(join(app, 'src'));
  writeFileSync(join(app, 'src', 'main.js'), MAIN_JS);
  mkdirSync(join(app, 'public'));
  cpSync(join(fixtures, 'mnv2_input.f32'), join(app, 'public', 'mnv2_input.f32'));
  fixtureServer = await startServer({ mounts: { '/fx/': fixtures } });
  modelParam = `model=${encodeURIComponent(`${fixtureServer.origin}/s/rate=2500000/fx/mnv2/mobilenetv2_imagenet.json`)}`;
  const profile = mkdtempSync(join(tmpdir(), 'p2u-chromium-'));
  browser = await chromium.launchPersistentContext(profile, { executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: CHROMIUM_ARGS, headless: true });
});

after(async () => {
  await browser?.close();
  await fixtureServer?.close();
  for (const s of servers) s.kill();
  if (app) rmSync(app, { recursive: true, force: true });
});

function assertServed(seen, where) {
  assert.equal(seen.error, '', `${where}: ${seen.error}`);
  assert.match(seen.first, /^class \d+ stage 0 preview$/, where);
  assert.match(seen.final, /^class \d+ stage 3 final \S+$/, where);
  assert.deepEqual(seen.failed, [], `${where}: failed requests`);
}

it('the Vite dev server serves the package with no config, on the main thread and in a worker', async () => {
  assert.ok(!readdirSync(app).some((f) => f.startsWith('vite.config')), 'the app has no Vite config');
  const url = await vite([]);
  assertServed(await visit(`${url}?${modelParam}`, 'p2u-vite-dev.png'), 'dev, main thread');
  assert.ok(existsSync(join(app, 'node_modules', '.vite', 'deps', '_metadata.json')), 'the dev server pre-bundled the package');
  assertServed(await visit(`${url}?worker&${modelParam}`, 'p2u-vite-dev-worker.png'), 'dev, worker');
});

it('vite build + vite preview serve the package with no config, on the main thread and in a worker', async () => {
  execFileSync(process.execPath, [join(app, 'node_modules', 'vite', 'bin', 'vite.js'), 'build'], { cwd: app, stdio: 'pipe' });
  const assets = readdirSync(join(app, 'dist', 'assets'));
  assert.ok(assets.some((f) => /^p2u_wasm_bg-.*\.wasm$/.test(f)), `the build ships the wasm: ${assets}`);
  assert.ok(assets.some((f) => /^worker-.*\.js$/.test(f)), `the build ships the worker as a file: ${assets}`);
  const url = await vite(['preview']);
  assertServed(await visit(`${url}?${modelParam}`, 'p2u-vite-preview.png'), 'preview, main thread');
  assertServed(await visit(`${url}?worker&${modelParam}`, 'p2u-vite-preview-worker.png'), 'preview, worker');
  console.log(`# screenshots: ${process.env.P2U_ARTIFACTS ?? tmpdir()}/p2u-vite-*.png`);
});
