// Model inputs: shapes for the plan, and raw values (integer pixels,
// floats) mapped linearly to what the model expects (a type's full range,
// a value range or a DICOM window).

import { P2uError } from './errors.js';

/** `inputDims` (one shape or one per input) as the runtime takes them. */
export function inputShapes(inputDims) {
  if (!inputDims) return { dims: new Uint32Array(0), ranks: new Uint32Array(0) };
  const shapes = Array.isArray(inputDims[0]) ? inputDims : [inputDims];
  return { dims: Uint32Array.from(shapes.flat()), ranks: Uint32Array.from(shapes.map((s) => s.length)) };
}

const RAW_RANGES = {
  Uint8Array: [0, 255],
  Uint8ClampedArray: [0, 255],
  Uint16Array: [0, 65535],
  Int16Array: [-32768, 32767],
  Float32Array: null,
};

/** `[lo, hi, to0, to1, clamp]` of a linear map of `input`'s values, or
 * null for a Float32Array without `normalize` (used as is). `window` is
 * the DICOM VOI LINEAR function (`dicomWindow` from the runtime). */
export function normalizationArgs(input, normalize, dicomWindow) {
  const to = normalize?.to ?? [0, 1];
  if (normalize?.window) {
    const { center, width } = normalize.window;
    const [lo, hi] = dicomWindow(center, width);
    return [lo, hi, to[0], to[1], true];
  }
  const range = normalize?.range ?? RAW_RANGES[input.constructor.name];
  if (range === undefined) {
    throw new P2uError(`input must be a Float32Array, Uint8Array, Uint8ClampedArray, Uint16Array or Int16Array, got ${input?.constructor?.name ?? typeof input}`, 'invalid');
  }
  if (range === null) {
    if (normalize && (normalize.to || normalize.clamp)) {
      throw new P2uError('normalize for a Float32Array needs a range or a window (the values to map onto `to`)', 'invalid');
    }
    return null;
  }
  return [range[0], range[1], to[0], to[1], normalize?.clamp ?? false];
}
