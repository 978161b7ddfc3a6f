// The live demo: a VGG16 brain-MRI classifier delivered progressively by p2u,
// running in a Web Worker. The local demo server (www/server.mjs) enforces
// the chosen bandwidth for real with a `/s/rate=…/` URL prefix.

import { loadInWorker } from '/pkg/p2u.js';
import { parseDicom, pixelRange } from './dicom.js';

const CLASSES = ['glioma', 'meningioma', 'no tumour', 'pituitary'];
const COLORS = ['#0b5fff', '#c2410c', '#146c2e', '#7c3aed'];
const SIZE = 240;
const DIMS = [1, SIZE, SIZE, 3];
const $ = (id) => document.getElementById(id);
const config = await (await fetch('/demo/demo.json')).json();

let input = null; // { kind: 'rgb', data: Uint8Array } | { kind: 'dicom', dicom, data: Int16Array|Uint16Array }
let session = null;

const mb = (b) => `${(b / 1e6).toFixed(2)} MB`;
const secs = (ms) => `${(ms / 1000).toFixed(1)} s`;

// ---------- inputs ----------

for (const s of config.samples) $('sample').add(new Option(`${s.file} (${CLASSES[s.label]})`, s.file));
for (const d of config.dicom) $('dicom').add(new Option(d.name, d.file));

function showTruth(text) {
  $('truth').textContent = text;
}

async function useImageBlob(blob, truth) {
  const bitmap = await createImageBitmap(blob);
  const ctx = $('preview').getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0, SIZE, SIZE);
  const rgba = ctx.getImageData(0, 0, SIZE, SIZE).data;
  const rgb = new Uint8Array(SIZE * SIZE * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4) {
    rgb[j++] = rgba[i];
    rgb[j++] = rgba[i + 1];
    rgb[j++] = rgba[i + 2];
  }
  input = { kind: 'rgb', data: rgb };
  $('window-box').hidden = true;
  showTruth(truth);
  rerun();
}

/** Nearest-neighbour resize of a 16-bit image to SIZE×SIZE×3 (same type). */
function resize16(d) {
  const out = new d.pixels.constructor(SIZE * SIZE * 3);
  for (let y = 0; y < SIZE; y++) {
    const sy = Math.min(d.rows - 1, Math.floor(((y + 0.5) * d.rows) / SIZE));
    for (let x = 0; x < SIZE; x++) {
      const sx = Math.min(d.cols - 1, Math.floor(((x + 0.5) * d.cols) / SIZE));
      const v = d.pixels[sy * d.cols + sx];
      const o = (y * SIZE + x) * 3;
      out[o] = out[o + 1] = out[o + 2] = v;
    }
  }
  return out;
}

/** The display window in stored pixel units (DICOM windows are in rescaled units). */
function storedWindow() {
  const { dicom } = input;
  const c = Number($('wc').value);
  const w = Number($('ww').value);
  return { center: (c - dicom.intercept) / dicom.slope, width: w / Math.abs(dicom.slope || 1) };
}

function drawDicom() {
  const { center, width } = storedWindow();
  const lo = center - width / 2;
  const ctx = $('preview').getContext('2d');
  const img = ctx.createImageData(SIZE, SIZE);
  for (let i = 0; i < SIZE * SIZE; i++) {
    const v = Math.max(0, Math.min(255, ((input.data[i * 3] - lo) / width) * 255));
    img.data.set([v, v, v, 255], i * 4);
  }
  ctx.putImageData(img, 0, 0);
}

async function useDicom(buffer, name) {
  let dicom;
  try {
    dicom = parseDicom(buffer);
  } catch (e) {
    return showError(`${name}: ${e.message}`);
  }
  input = { kind: 'dicom', dicom, data: resize16(dicom) };
  const win = dicom.window ?? (() => {
    const [lo, hi] = pixelRange(dicom.pixels).map((v) => v * dicom.slope + dicom.intercept);
    return { center: (lo + hi) / 2, width: Math.max(1, hi - lo) };
  })();
  $('wc').value = win.center;
  $('ww').value = win.width;
  $('window-box').hidden = false;
  drawDicom();
  showTruth(`${name}: ${dicom.modality || 'DICOM'} ${dicom.rows}×${dicom.cols}, ${dicom.pixels.BYTES_PER_ELEMENT * 8}-bit ${dicom.pixels instanceof Int16Array ? 'signed' : 'unsigned'} (unlabelled; not a brain-tumour MRI — shown for the viewer path)`);
  rerun();
}

$('sample').addEventListener('change', async () => {
  const s = config.samples.find((x) => x.file === $('sample').value);
  $('dicom').value = '';
  await useImageBlob(await (await fetch(`/demo/samples/${s.file}`)).blob(), `true class: ${CLASSES[s.label]}`);
});
$('dicom').addEventListener('change', async () => {
  const f = $('dicom').value;
  if (f) await useDicom(await (await fetch(`/demo/dicom/${f}`)).arrayBuffer(), f);
});
for (const id of ['wc', 'ww']) {
  $(id).addEventListener('change', () => {
    if (input?.kind === 'dicom' && Number($('ww').value) > 0) {
      drawDicom();
      rerun();
    }
  });
}

async function useFile(file) {
  if (!file) return;
  const head = new Uint8Array(await file.slice(128, 132).arrayBuffer());
  const isDicom = /\.dcm$/i.test(file.name) || String.fromCharCode(...head) === 'DICM';
  if (isDicom) await useDicom(await file.arrayBuffer(), file.name);
  else {
    try {
      await useImageBlob(file, `${file.name} (your image)`);
    } catch {
      showError(`${file.name} is neither an image the browser can decode nor a DICOM file`);
    }
  }
}
$('file').addEventListener('change', () => useFile($('file').files[0]));
const drop = $('drop');
drop.addEventListener('dragover', (e) => {
  e.preventDefault();
  drop.classList.add('over');
});
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  useFile(e.dataTransfer.files[0]);
});

// ---------- output ----------

function showError(message) {
  $('error').textContent = message;
  $('error').hidden = !message;
}

function probabilities(out) {
  const sum = out.reduce((a, b) => a + b, 0);
  if (out.every((v) => v >= 0 && v <= 1) && Math.abs(sum - 1) < 1e-3) return Array.from(out);
  const m = Math.max(...out);
  const e = Array.from(out, (v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

function showPrediction(p, result) {
  const top = p.indexOf(Math.max(...p));
  $('prediction').replaceChildren(
    ...CLASSES.map((name, i) => {
      const row = document.createElement('div');
      row.className = `bar${i === top ? ' top' : ''}`;
      row.setAttribute('role', 'meter');
      row.setAttribute('aria-label', name);
      row.setAttribute('aria-valuemin', '0');
      row.setAttribute('aria-valuemax', '100');
      row.setAttribute('aria-valuenow', (p[i] * 100).toFixed(1));
      row.innerHTML = `<span>${name}</span><span class="track"><span class="fill" style="width:${(p[i] * 100).toFixed(1)}%"></span></span><span>${(p[i] * 100).toFixed(1)}%</span>`;
      return row;
    }),
  );
  const marker = $('marker');
  marker.hidden = false;
  marker.className = `marker ${result.final ? 'final' : 'preview'}`;
  marker.textContent = result.final
    ? `Final — exact original weights (stage ${result.stage})`
    : `Preview — not final (stage ${result.stage} of ${result.stages - 1})`;
}

function drawChart(s) {
  const svg = $('chart');
  const [W, H, L, R, T, B] = [640, 240, 44, 56, 12, 28];
  // one byte axis for p2u's files and the fp32 file the same link would bring
  const total = Math.max(s.totalBytes, s.totalBytes ? config.fp32Bytes : 0) || 1;
  const x = (b) => L + ((W - L - R) * b) / total;
  const y = (p) => T + (H - T - B) * (1 - p);
  const parts = [
    `<line x1="${L}" y1="${y(0)}" x2="${W - R}" y2="${y(0)}" stroke="#8c959f"/>`,
    `<line x1="${L}" y1="${y(0)}" x2="${L}" y2="${y(1)}" stroke="#8c959f"/>`,
    `<text x="${L - 6}" y="${y(1) + 4}" text-anchor="end" font-size="11">100%</text>`,
    `<text x="${L - 6}" y="${y(0) + 4}" text-anchor="end" font-size="11">0%</text>`,
    `<text x="${W - R}" y="${H - 8}" text-anchor="end" font-size="11">${mb(total)}</text>`,
    `<text x="${L}" y="${H - 8}" font-size="11">0 bytes received</text>`,
  ];
  // weight error per stage (from the manifest), log scale on the right
  const stages = s.manifest?.stages ?? [];
  const errs = stages.map((st) => Math.max(st.error.relative, 1e-7));
  const ly = (e) => y((Math.log10(e) + 7) / 7); // 1e-7 … 1
  if (errs.length) {
    let d = '';
    stages.forEach((st, i) => {
      const x0 = x(i === 0 ? 0 : stages[i - 1].cumulative_bytes);
      d += `${i ? 'L' : 'M'}${x(st.cumulative_bytes).toFixed(1)},${ly(errs[i]).toFixed(1)} `;
      if (i === 0) d = `M${x0.toFixed(1)},${ly(errs[0]).toFixed(1)} L${x(st.cumulative_bytes).toFixed(1)},${ly(errs[0]).toFixed(1)} `;
    });
    parts.push(`<path d="${d}" fill="none" stroke="#57606a" stroke-dasharray="5 4"/>`);
    // where each stage is complete
    stages.forEach((st) => {
      const xs = x(st.cumulative_bytes).toFixed(1);
      parts.push(`<line class="stage-mark" x1="${xs}" y1="${y(0)}" x2="${xs}" y2="${y(1)}" stroke="#8c959f" stroke-dasharray="1 3"/>`);
      parts.push(`<text x="${xs}" y="${y(0) - 4}" font-size="10" text-anchor="end" fill="#57606a">${st.stage === 0 ? 'base' : `stage ${st.stage}`}</text>`);
    });
    const xf = x(config.fp32Bytes).toFixed(1);
    parts.push(`<line class="fp32-mark" x1="${xf}" y1="${y(0)}" x2="${xf}" y2="${y(1)}" stroke="#6e7781" stroke-width="2" stroke-dasharray="2 2"/>`);
    parts.push(`<text x="${xf}" y="${y(0.5)}" font-size="10" text-anchor="end" fill="#6e7781" transform="rotate(-90 ${xf} ${y(0.5)})" dy="-4">fp32 file complete</text>`);
    parts.push(`<text x="${W - R + 4}" y="${y(1) + 4}" font-size="11">err 1</text><text x="${W - R + 4}" y="${y(0) + 4}" font-size="11">1e-7</text>`);
  }
  CLASSES.forEach((name, c) => {
    const pts = s.points.map((pt) => `${x(pt.bytes).toFixed(1)},${y(pt.p[c]).toFixed(1)}`);
    if (pts.length) parts.push(`<polyline points="${pts.join(' ')}" fill="none" stroke="${COLORS[c]}" stroke-width="2"/>`);
    parts.push(`<text x="${L + 8 + c * 110}" y="${T + 12}" font-size="11" fill="${COLORS[c]}">■ ${name}</text>`);
  });
  svg.innerHTML = parts.join('');
}

// ---------- loading ----------

async function classify(s) {
  if (!input || !s.model) return;
  if (s.running) {
    s.pending = true;
    return;
  }
  s.running = true;
  try {
    do {
      s.pending = false;
      const opts = input.kind === 'dicom' ? { normalize: { window: storedWindow() } } : {};
      const r = await s.model.run(input.data, DIMS, opts);
      if (session !== s) return;
      const p = probabilities(r.output);
      if (s.tFirst === undefined) {
        s.tFirst = performance.now() - s.t0;
        $('t-first').textContent = secs(s.tFirst);
      }
      s.points.push({ bytes: s.received(), p });
      showPrediction(p, r);
      drawChart(s);
      if (r.final && s.tFinal === undefined) {
        s.tFinal = performance.now() - s.t0;
        $('t-final').textContent = secs(s.tFinal);
      }
    } while (s.pending);
  } catch (e) {
    if (session === s) showError(e.message);
  } finally {
    s.running = false;
  }
}

function rerun() {
  if (session?.model) {
    session.points = [];
    classify(session);
  }
}

$('load').addEventListener('click', async () => {
  if (!input) return showError('choose an image first');
  showError('');
  session?.model?.dispose();
  clearInterval(session?.timer);
  const mbps = Number($('bandwidth').value);
  const rate = (mbps * 1e6) / 8;
  const url = mbps ? `/s/rate=${rate}/demo/model/${config.model}` : `/demo/model/${config.model}`;
  const bytes = { base: 0, stream: 0, baseTotal: 0, streamTotal: 0 };
  const s = { t0: performance.now(), points: [], totalBytes: 0, manifest: null, received: () => bytes.base + bytes.stream };
  session = s;
  for (const id of ['t-first', 't-final', 't-full']) $(id).textContent = '…';
  $('stage').textContent = 'loading the base…';
  $('marker').hidden = true;
  $('prediction').replaceChildren();
  drawChart(s);
  // the fp32 lane: the bytes-per-second measured on p2u's download (frozen
  // once p2u's files are complete), applied to the fp32 file's size
  let measured = 0;
  s.timer = setInterval(() => {
    const elapsed = (performance.now() - s.t0) / 1000;
    if (!s.totalBytes || s.received() < s.totalBytes) measured = s.received() / elapsed;
    if (!measured) return;
    const sent = Math.min(config.fp32Bytes, measured * elapsed);
    $('full-bar').value = sent / config.fp32Bytes;
    $('full-bytes').textContent = `${mb(sent)} of ${mb(config.fp32Bytes)}`;
    $('t-full').textContent = `≈ ${secs((config.fp32Bytes / measured) * 1000)}`;
    if (sent >= config.fp32Bytes) clearInterval(s.timer);
  }, 200);
  try {
    s.model = await loadInWorker(url, {
      inputDims: DIMS,
      cache: false,
      onProgress: (p) => {
        if (session !== s) return;
        bytes[p.file] = p.loaded;
        if (p.total) bytes[`${p.file}Total`] = p.total;
        $(`${p.file}-bar`).value = p.total ? p.loaded / p.total : 0;
        $(`${p.file}-bytes`).textContent = `${mb(p.loaded)}${p.total ? ` of ${mb(p.total)}` : ''}`;
      },
      onStage: (st) => {
        if (session !== s) return;
        const changed = st.stage !== s.lastStage || st.final || st.error;
        s.lastStage = st.stage;
        $('stage').textContent = st.error
          ? `stopped at stage ${st.stage}: ${st.error}`
          : `stage ${st.stage} of ${st.stages - 1} · ${st.chunksApplied}/${st.chunksTotal} chunks applied${st.final ? ' · exact' : ''}`;
        // a VGG16 inference takes the worker ~2 s: classify once per stage,
        // not per chunk, so that patching keeps up with the network
        if (changed) classify(s);
      },
    });
  } catch (e) {
    clearInterval(s.timer);
    return showError(`loading failed: ${e.message}`);
  }
  s.manifest = s.model.manifest;
  s.totalBytes = s.manifest.base.bytes + s.manifest.stream.bytes;
  classify(s);
  s.model.finalized.then(
    () => classify(s),
    (e) => session === s && showError(`the stream stopped (the model keeps its last stage): ${e.message}`),
  );
});

// start with the first sample
$('sample').dispatchEvent(new Event('change'));
