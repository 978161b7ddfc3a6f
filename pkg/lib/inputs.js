// Model inputs: shapes for the plan, and raw values (integer pixels,
// floats) mapped linearly to what the model expects (a type's full range,
// a value range or a DICOM window).

import { P2uError } from './errors.js';
import { isPixelInput } from './pixels.js';

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

/** The typed array each input element type takes (as onnxruntime-web's Tensor). */
const FEED_ARRAYS = { float32: Float32Array, int64: BigInt64Array, int32: Int32Array, uint8: Uint8Array, bool: Uint8Array };

/** True for `{ name: tensor }` feeds (as onnxruntime-web's `session.run`),
 * as opposed to one typed array or a pixel input. */
export const isFeeds = (x) => x !== null && typeof x === 'object' && !ArrayBuffer.isView(x) && !(x instanceof ArrayBuffer) && !isPixelInput(x);

/** Feeds as plain `{ name: { data, dims, type } }` records (an
 * onnxruntime-web Tensor keeps its values behind getters, which a
 * postMessage to a worker would drop). */
export function plainFeeds(feeds) {
  return Object.fromEntries(
    Object.entries(feeds).map(([name, f]) => [name, ArrayBuffer.isView(f) ? f : { data: f?.data, dims: f?.dims === undefined ? undefined : Array.from(f.dims), type: f?.type }]),
  );
}

const shapeText = (input) => `[${(input.dims ?? input.shape).map((d) => d ?? '?').join(', ')}]`;

/** `[values, types, dims, ranks]` for the runtime's `runTensors`, in the
 * model's input order, from `{ name: tensor }` feeds. A tensor is `{ data,
 * dims, type? }` (an onnxruntime-web Tensor fits) or a bare typed array
 * when the input's shape is fixed. Refuses, naming the input: a missing or
 * unknown name, the wrong array type, a shape without dims. */
export function feedArgs(feeds, inputs) {
  const names = inputs.map((i) => i.name);
  const list = () => inputs.map((i) => `${i.name} (${i.type} ${shapeText(i)})`).join(', ');
  for (const name of Object.keys(feeds)) {
    if (!names.includes(name)) throw new P2uError(`feeds: ${JSON.stringify(name)} is not an input of the model; its inputs are ${list()}`, 'invalid');
  }
  const values = [];
  const types = [];
  const dims = [];
  const ranks = [];
  for (const input of inputs) {
    const feed = feeds[input.name];
    if (feed === undefined || feed === null) throw new P2uError(`feeds: no value for input ${JSON.stringify(input.name)}; the model takes ${list()}`, 'invalid');
    const bare = ArrayBuffer.isView(feed);
    const data = bare ? feed : feed.data;
    const shape = bare ? input.dims : feed.dims;
    const want = FEED_ARRAYS[input.type];
    if (!want) throw new P2uError(`input ${JSON.stringify(input.name)} is ${input.type}: p2u takes float32, int64, int32, uint8 and bool inputs`, 'unsupported');
    if (!(data instanceof want)) {
      throw new P2uError(`input ${JSON.stringify(input.name)} is ${input.type}: give a ${want.name}, got ${data?.constructor?.name ?? typeof data}`, 'invalid');
    }
    if (!bare && feed.type !== undefined && feed.type !== input.type) {
      throw new P2uError(`input ${JSON.stringify(input.name)} is ${input.type}, the feed says ${feed.type}`, 'invalid');
    }
    if (!shape) throw new P2uError(`input ${JSON.stringify(input.name)} has a dynamic shape ${shapeText(input)}: give { data, dims }`, 'invalid');
    const count = Array.from(shape).reduce((a, b) => a * b, 1);
    if (data.length !== count) {
      throw new P2uError(`input ${JSON.stringify(input.name)}: ${data.length} values, dims [${Array.from(shape).join(', ')}] need ${count}`, 'invalid');
    }
    values.push(data);
    types.push(input.type);
    dims.push(...shape);
    ranks.push(shape.length);
  }
  return [values, types, Uint32Array.from(dims), Uint32Array.from(ranks)];
}
