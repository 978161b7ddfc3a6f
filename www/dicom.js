// A small DICOM reader for the demo: uncompressed single-frame grayscale
// images (explicit or implicit VR little endian), 8- or 16-bit, with the
// rescale and window attributes a viewer needs. Compressed transfer syntaxes
// are refused with a clear message.

const IMPLICIT_LE = '1.2.840.10008.1.2';
const EXPLICIT_LE = '1.2.840.10008.1.2.1';
const LONG_VRS = new Set(['OB', 'OD', 'OF', 'OL', 'OW', 'SQ', 'UC', 'UN', 'UR', 'UT', 'OV', 'SV', 'UV']);

const tag = (g, e) => ((g << 16) | e) >>> 0;
const T = {
  transferSyntax: tag(0x0002, 0x0010),
  modality: tag(0x0008, 0x0060),
  samples: tag(0x0028, 0x0002),
  photometric: tag(0x0028, 0x0004),
  frames: tag(0x0028, 0x0008),
  rows: tag(0x0028, 0x0010),
  cols: tag(0x0028, 0x0011),
  bitsAllocated: tag(0x0028, 0x0100),
  pixelRepresentation: tag(0x0028, 0x0103),
  windowCenter: tag(0x0028, 0x1050),
  windowWidth: tag(0x0028, 0x1051),
  intercept: tag(0x0028, 0x1052),
  slope: tag(0x0028, 0x1053),
  pixelData: tag(0x7fe0, 0x0010),
};

/** Parses a DICOM file. Returns `{ rows, cols, pixels (Int16Array |
 * Uint16Array | Uint8Array), slope, intercept, window: {center, width} |
 * null, modality, photometric }`; throws an Error saying what is unsupported. */
export function parseDicom(buffer) {
  const bytes = new Uint8Array(buffer);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const text = (o, n) => new TextDecoder('latin1').decode(bytes.subarray(o, o + n)).replace(/[\0 ]+$/, '').trim();
  let pos = 0;
  if (bytes.length >= 132 && text(128, 4) === 'DICM') pos = 132;
  const values = new Map();
  let syntax = EXPLICIT_LE;
  let pixelAt = -1;
  let pixelLen = 0;
  let inMeta = pos === 132;
  while (pos + 8 <= bytes.length) {
    const g = view.getUint16(pos, true);
    const e = view.getUint16(pos + 2, true);
    const t = tag(g, e);
    if (inMeta && g !== 0x0002) {
      inMeta = false;
      syntax = values.get(T.transferSyntax) ?? EXPLICIT_LE;
      if (syntax !== EXPLICIT_LE && syntax !== IMPLICIT_LE) {
        throw new Error(`DICOM transfer syntax ${syntax} (compressed or big-endian) is not supported by this viewer`);
      }
    }
    const explicit = g === 0x0002 || syntax === EXPLICIT_LE;
    const vr = explicit ? text(pos + 4, 2) : '';
    let len;
    let at;
    if (explicit && /^[A-Z]{2}$/.test(vr)) {
      if (LONG_VRS.has(vr)) {
        len = view.getUint32(pos + 8, true);
        at = pos + 12;
      } else {
        len = view.getUint16(pos + 6, true);
        at = pos + 8;
      }
    } else {
      len = view.getUint32(pos + 4, true);
      at = pos + 8;
    }
    if (t === T.pixelData) {
      if (len === 0xffffffff) throw new Error('encapsulated (compressed) pixel data is not supported');
      pixelAt = at;
      pixelLen = len;
      break;
    }
    if (len === 0xffffffff) {
      // undefined-length sequence: skip to its delimiter (FFFE,E0DD)
      let p = at;
      while (p + 8 <= bytes.length && !(view.getUint16(p, true) === 0xfffe && view.getUint16(p + 2, true) === 0xe0dd)) p += 2;
      pos = p + 8;
      continue;
    }
    if (at + len > bytes.length) throw new Error(`DICOM element (${g.toString(16)},${e.toString(16)}) runs past the end of the file`);
    const vrOf = vr || implicitVr(t);
    if (vrOf === 'US') values.set(t, view.getUint16(at, true));
    else if (['UI', 'CS', 'DS', 'IS', 'LO', 'SH'].includes(vrOf)) values.set(t, text(at, len));
    pos = at + len;
  }
  if (pixelAt < 0) throw new Error('no pixel data in this DICOM file');
  const rows = values.get(T.rows);
  const cols = values.get(T.cols);
  const bits = values.get(T.bitsAllocated);
  const signed = values.get(T.pixelRepresentation) === 1;
  const samples = values.get(T.samples) ?? 1;
  if (!rows || !cols) throw new Error('DICOM file has no image size');
  if (samples !== 1) throw new Error(`only grayscale DICOM images are supported (this one has ${samples} samples per pixel)`);
  const n = rows * cols;
  if (pixelAt + n * (bits / 8) > bytes.length || pixelLen < n * (bits / 8)) throw new Error('DICOM pixel data is shorter than the image size');
  let pixels;
  const copy = bytes.slice(pixelAt, pixelAt + n * (bits / 8)).buffer;
  if (bits === 16) pixels = signed ? new Int16Array(copy) : new Uint16Array(copy);
  else if (bits === 8) pixels = new Uint8Array(copy);
  else throw new Error(`${bits}-bit DICOM pixels are not supported`);
  const num = (t, d) => {
    const v = values.get(t);
    return v === undefined || v === '' ? d : Number(String(v).split('\\')[0]);
  };
  const center = num(T.windowCenter, NaN);
  const width = num(T.windowWidth, NaN);
  return {
    rows,
    cols,
    pixels,
    slope: num(T.slope, 1),
    intercept: num(T.intercept, 0),
    window: Number.isFinite(center) && Number.isFinite(width) && width > 0 ? { center, width } : null,
    modality: values.get(T.modality) ?? '',
    photometric: values.get(T.photometric) ?? '',
  };
}

function implicitVr(t) {
  switch (t) {
    case T.rows: case T.cols: case T.bitsAllocated: case T.pixelRepresentation: case T.samples:
      return 'US';
    case T.windowCenter: case T.windowWidth: case T.intercept: case T.slope:
      return 'DS';
    case T.modality: case T.photometric:
      return 'CS';
    case T.frames:
      return 'IS';
    default:
      return '';
  }
}

/** Min and max of the stored pixel values (for a default window). */
export function pixelRange(pixels) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of pixels) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}
