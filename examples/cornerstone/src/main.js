// A Cornerstone3D stack viewport shows a DICOM; a p2u model classifies what
// the viewport displays — its pixels under its VOI window — at once from
// the low-bit base, again at every stage, and finally with the exact
// weights. Change the window (drag, or the viewport API) and it reruns.
//
// URL parameters: ?dicom=URL (default /dicom/MR_small.dcm) &model=URL of a
// p2u manifest (default /model/Tumor_classification_vgg16.json).

import { RenderingEngine, Enums, init as initCornerstone, cache, utilities } from '@cornerstonejs/core';
import { init as initDicomLoader } from '@cornerstonejs/dicom-image-loader';
import { loadInWorker } from 'p2u-onnx';

const params = new URLSearchParams(location.search);
const dicomUrl = new URL(params.get('dicom') ?? '/dicom/MR_small.dcm', location.href);
const modelUrl = params.get('model') ?? '/model/Tumor_classification_vgg16.json';
const $ = (id) => document.getElementById(id);

await initCornerstone();
// the dataset-based metadata provider: Cornerstone 5.14's naturalized one
// found no pixel data in plain Part 10 files served by a Vite dev server
initDicomLoader({ maxWebWorkers: 1, useLegacyMetadataProvider: true });
const engine = new RenderingEngine('p2u-example');
const element = $('viewport');
engine.enableElement({ viewportId: 'dicom', type: Enums.ViewportType.STACK, element });
const viewport = engine.getViewport('dicom');
await viewport.setStack([`wadouri:${dicomUrl}`]);
viewport.render();

/** What the viewport displays, as the model's input: the stored pixels
 * resized to the model's size (nearest neighbour), gray repeated over its
 * channels, and the viewport's VOI window in stored units. */
function displayed(dims) {
  const [, h, w, c] = dims; // NHWC
  const image = cache.getImage(viewport.getCurrentImageId());
  const { lower, upper } = viewport.getProperties().voiRange; // DICOM LINEAR, modality units
  const { windowCenter, windowWidth } = utilities.windowLevel.toWindowLevel(lower, upper);
  const slope = image.slope || 1;
  const intercept = image.intercept || 0;
  const stored = image.getPixelData();
  const data = new stored.constructor(h * w * c);
  for (let y = 0; y < h; y++) {
    const row = Math.floor((y * image.rows) / h) * image.columns;
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * c;
      data.fill(stored[row + Math.floor((x * image.columns) / w)], i, i + c);
    }
  }
  const voi = { center: (windowCenter - intercept) / slope, width: windowWidth / Math.abs(slope) };
  $('voi').textContent = `center ${windowCenter.toFixed(1)}, width ${windowWidth.toFixed(1)}`;
  return { data, voi };
}

const softmax = (v) => {
  if (v.every((p) => p >= 0 && p <= 1) && Math.abs(v.reduce((a, b) => a + b, 0) - 1) < 1e-3) return Array.from(v);
  const m = Math.max(...v);
  const e = Array.from(v, (x) => Math.exp(x - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
};

let model;
let running = null;
let again = false;
const results = [];

async function classify() {
  if (running) return void (again = true);
  running = (async () => {
    do {
      again = false;
      const dims = model.inputMetadata[0].dims;
      const { data, voi } = displayed(dims);
      const r = await model.run(data, dims, { normalize: { window: voi } });
      const p = softmax(r.output);
      const names = model.labels ?? ['glioma', 'meningioma', 'no tumour', 'pituitary'];
      $('classes').replaceChildren(...p.map((v, i) => Object.assign(document.createElement('li'), { textContent: `${names[i] ?? i}: ${(100 * v).toFixed(1)}%` })));
      $('stage').className = r.final ? 'final' : 'preview';
      $('stage').textContent = r.final ? `final — exact original weights (stage ${r.stage})` : `preview — stage ${r.stage} of ${r.stages - 1}`;
      results.push({ stage: r.stage, final: r.final, top: p.indexOf(Math.max(...p)), voi });
    } while (again);
  })();
  try {
    await running;
  } finally {
    running = null;
  }
}

/** For tests and the console: the results so far, and a VOI setter. */
window.p2uExample = {
  results,
  setVoi: (lower, upper) => {
    viewport.setProperties({ voiRange: { lower, upper } });
    viewport.render();
  },
};

try {
  let lastStage = -1;
  model = await loadInWorker(modelUrl, {
    onStage: (s) => {
      if (model && s.stage !== lastStage) classify();
      lastStage = s.stage;
    },
  });
  await classify();
  element.addEventListener(Enums.Events.VOI_MODIFIED, () => classify());
  await model.finalized;
  await classify();
} catch (e) {
  $('error').textContent = `${e.kind ?? 'error'}: ${e.message}`;
}
