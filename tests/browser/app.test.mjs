// A fresh web app installs the `npm pack` tarball of pkg/ and uses it the
// way the package README says: first result from the base, then the final one.

import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { open, packPackage } from './harness.mjs';

const APP_HTML = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>scratch app</title>
<script type="importmap">{ "imports": { "p2u-onnx": "./node_modules/p2u-onnx/p2u.js" } }</script></head>
<body>
<p id="status">loading…</p><p id="first"></p><p id="final"></p>
<script type="module">
  import { load } from 'p2u-onnx';
  const q = new URLSearchParams(location.search);
  const dims = [1, 3, 224, 224];
  const x = new Float32Array(await (await fetch(q.get('input'))).arrayBuffer());
  const top = (r) => r.output.indexOf(Math.max(...r.output));
  const model = await load(q.get('model'), {
    inputDims: dims,
    onStage: (s) => (document.querySelector('#status').textContent = 'stage ' + s.stage + '/' + (s.stages - 1) + (s.final ? ' final' : ' preview')),
  });
  const first = await model.run(x, dims);
  document.querySelector('#first').textContent = 'first: class ' + top(first) + ' at stage ' + first.stage + (first.final ? ' final' : ' preview');
  await model.finalized;
  const last = await model.run(x, dims);
  document.querySelector('#final').textContent = 'final: class ' + top(last) + ' at stage ' + last.stage + (last.final ? ' final' : ' preview');
</script>
</body></html>`;

let app;
let h;
before(async () => {
  app = mkdtempSync(join(tmpdir(), 'p2u-scratch-app-'));
  const tarball = packPackage(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'scratch-app', private: true, type: 'module' }));
  execFileSync('npm', ['install', '--no-audit', '--no-fund', `./${tarball}`], { cwd: app, stdio: 'pipe' });
  writeFileSync(join(app, 'index.html'), APP_HTML);
  h = await open({ '/app/': app });
});
after(async () => {
  await h?.close();
  rmSync(app, { recursive: true, force: true });
});

it('a scratch app using the npm tarball shows a first result, then the final one', async () => {
  const { page, origin } = h;
  await page.goto(`${origin}/app/?model=/s/rate=2500000/fx/mnv2/mobilenetv2_imagenet.json&input=/fx/mnv2_input.f32`);
  await page.waitForFunction(() => document.querySelector('#first').textContent !== '', null, { timeout: 60000 });
  const first = await page.textContent('#first');
  const finalAtFirst = await page.textContent('#final');
  assert.match(first, /^first: class \d+ at stage 0 preview$/);
  assert.equal(finalAtFirst, '', 'the first result came before the model was final');
  await page.waitForFunction(() => document.querySelector('#final').textContent !== '', null, { timeout: 120000 });
  assert.match(await page.textContent('#final'), /^final: class \d+ at stage 3 final$/);
  assert.match(await page.textContent('#status'), /final/);
  const shot = join(process.env.P2U_ARTIFACTS ?? tmpdir(), 'p2u-scratch-app.png');
  await page.screenshot({ path: shot });
  console.log(`# screenshot: ${shot}`);
  assert.deepEqual(h.offsite, []);
});
