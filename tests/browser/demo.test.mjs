// The live demo page (www/) served by the demo server, driven like a
// person would: pick a sample, choose a bandwidth, press load.

import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { homedir, tmpdir } from 'node:os';
import { open, repo } from './harness.mjs';

const assets = process.env.P2U_DEMO_ASSETS ?? join(homedir(), '.cache', 'p2u', 'demo-web');
let h;
before(async () => {
  h = await open({ '/': join(repo, 'www'), '/demo/': assets }, { viewport: { width: 1280, height: 720 } });
});
after(async () => {
  await h?.close();
});

it('the demo shows a preview prediction before the stream ends, then the final one', async () => {
  const { page, origin } = h;
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => m.type() === 'error' && errors.push(`console: ${m.text()}`));
  const stageLabels = [];
  await page.exposeFunction('recordStage', (t) => stageLabels.push(t));
  await page.goto(`${origin}/`);
  await page.selectOption('#sample', 'Te-me_0017.jpg');
  await page.waitForFunction(() => document.querySelector('#truth').textContent.includes('meningioma'));
  await page.selectOption('#bandwidth', '50');
  await page.evaluate(() => new MutationObserver(() => window.recordStage(document.querySelector('#stage').textContent))
    .observe(document.querySelector('#stage'), { childList: true, characterData: true, subtree: true }));
  await page.click('#load');
  await page.waitForSelector('#marker.preview', { timeout: 120000 });
  // at 1280×720 the prediction is on screen without scrolling
  const bars = await page.evaluate(() => [...document.querySelectorAll('#prediction .bar, #marker')].map((e) => e.getBoundingClientRect().bottom));
  assert.ok(bars.length === 5 && Math.max(...bars) <= 720, `prediction bottom at ${Math.max(...bars)} px`);
  const atPreview = await page.evaluate(() => ({
    marker: document.querySelector('#marker').textContent,
    stream: document.querySelector('#stream-bar').value,
    bars: document.querySelectorAll('#prediction .bar').length,
  }));
  assert.match(atPreview.marker, /Preview — not final/);
  assert.ok(atPreview.stream < 1, `the first prediction came at ${atPreview.stream} of the stream`);
  assert.equal(atPreview.bars, 4);
  await page.waitForSelector('#marker.final', { timeout: 240000 });
  const done = await page.evaluate(() => ({
    marker: document.querySelector('#marker').textContent,
    preview: document.querySelectorAll('#marker.preview').length,
    stream: document.querySelector('#stream-bar').value,
    stage: document.querySelector('#stage').textContent,
    lines: document.querySelectorAll('#chart polyline').length,
    tFirst: document.querySelector('#t-first').textContent,
    tFinal: document.querySelector('#t-final').textContent,
  }));
  assert.match(done.marker, /Final — exact original weights/);
  assert.equal(done.preview, 0, 'the preview marker is gone');
  assert.equal(done.stream, 1);
  assert.match(done.stage, /exact/);
  assert.equal(done.lines, 4);
  // stage labels count the stages from the first event on
  const stageTexts = stageLabels.filter((t) => t.startsWith('stage'));
  assert.ok(stageTexts.length > 0 && stageTexts.every((t) => /^stage \d of 3 /.test(t)), stageTexts.slice(0, 3).join(' | '));
  assert.equal(await page.locator('#chart .stage-mark').count(), 4, 'a boundary per stage');
  assert.equal(await page.locator('#chart .fp32-mark').count(), 1, 'the fp32 lane on the same axis');
  const shot = join(process.env.P2U_ARTIFACTS ?? tmpdir(), 'p2u-demo.png');
  await page.screenshot({ path: shot });
  console.log(`# demo screenshot: ${shot} (first prediction ${done.tFirst}, final ${done.tFinal})`);

  // the DICOM path: a 16-bit sample, windowed, classified by the same model
  await page.selectOption('#dicom', 'MR_small.dcm');
  await page.waitForFunction(() => document.querySelector('#truth').textContent.includes('16-bit'));
  assert.equal(await page.isVisible('#window-box'), true);
  await page.fill('#ww', '500');
  await page.dispatchEvent('#ww', 'change');
  await page.waitForFunction(() => document.querySelectorAll('#prediction .bar').length === 4);
  assert.deepEqual(errors, []);
  assert.deepEqual(h.offsite, [], 'no request left the demo server on 127.0.0.1');
});
