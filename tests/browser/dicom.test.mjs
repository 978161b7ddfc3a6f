// www/dicom.js against pydicom (the reference reader) on the demo's sample
// DICOM files: size, stored pixels, rescale and window.

import { it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { homedir } from 'node:os';
import { parseDicom } from '../../www/dicom.js';

const dir = join(process.env.P2U_DEMO_ASSETS ?? join(homedir(), '.cache', 'p2u', 'demo-web'), 'dicom');

const REFERENCE = `
import sys, json, pydicom
d = pydicom.dcmread(sys.argv[1])
px = d.pixel_array
wc, ww = d.get("WindowCenter"), d.get("WindowWidth")
first = lambda v: None if v is None else float(v[0] if isinstance(v, pydicom.multival.MultiValue) else v)
print(json.dumps({"rows": int(d.Rows), "cols": int(d.Columns), "signed": int(d.PixelRepresentation) == 1,
  "sum": int(px.astype("int64").sum()), "first": [int(v) for v in px.reshape(-1)[:16]],
  "slope": float(d.get("RescaleSlope", 1)), "intercept": float(d.get("RescaleIntercept", 0)),
  "center": first(wc), "width": first(ww)}))
`;

it('reads the sample DICOMs as pydicom does', () => {
  const files = readdirSync(dir).filter((f) => f.endsWith('.dcm'));
  assert.ok(files.length >= 2, `sample DICOMs in ${dir}`);
  for (const f of files) {
    const ref = JSON.parse(execFileSync('python3', ['-c', REFERENCE, join(dir, f)], { encoding: 'utf8' }));
    const d = parseDicom(readFileSync(join(dir, f)));
    assert.equal(d.rows, ref.rows, f);
    assert.equal(d.cols, ref.cols, f);
    assert.equal(d.pixels instanceof Int16Array, ref.signed, f);
    assert.deepEqual(Array.from(d.pixels.subarray(0, 16)), ref.first, f);
    assert.equal(d.pixels.reduce((a, b) => a + b, 0), ref.sum, f);
    assert.equal(d.slope, ref.slope, f);
    assert.equal(d.intercept, ref.intercept, f);
    assert.deepEqual(d.window, ref.center === null ? null : { center: ref.center, width: ref.width }, f);
  }
});

it('refuses what it cannot read with a clear message', () => {
  assert.throws(() => parseDicom(new Uint8Array(200)), /no pixel data|image size|runs past/);
  const bytes = readFileSync(join(dir, 'MR_small.dcm'));
  assert.throws(() => parseDicom(bytes.subarray(0, bytes.length - 4000)), /shorter than the image size|runs past/);
});
