// Image inputs: a description of 8-bit pixels (a canvas's ImageData, RGB
// or gray bytes) and how the model wants them. `run()` turns it into the
// input tensor inside the runtime (the rule the encoder's image
// calibration uses), on whichever thread the model lives.

import { P2uError } from './errors.js';

const CHANNELS = ['RGB', 'BGR', 'L'];
const LAYOUTS = ['NCHW', 'NHWC'];

/**
 * An image input for `model.run()`: `data` holds `height × width` pixels
 * of `stride` values (1 gray, 3 RGB, 4 RGBA; alpha is ignored).
 * `options`: `channels` the model takes ('RGB' default, 'BGR', 'L'),
 * `layout` ('NCHW' default, 'NHWC'), `scale` (default 1/255), `mean` and
 * `std` (one number, or one per channel). The input is `[1, c, h, w]` or
 * `[1, h, w, c]`; resize first (see {@link resizeImage}).
 */
export function fromPixels(data, { width, height, stride = 4, ...options } = {}) {
  if (!(data instanceof Uint8Array || data instanceof Uint8ClampedArray)) {
    throw new P2uError(`fromPixels takes 8-bit pixels (Uint8Array or Uint8ClampedArray), got ${data?.constructor?.name ?? typeof data}`, 'invalid');
  }
  if (!(width > 0 && height > 0 && Number.isInteger(width) && Number.isInteger(height))) {
    throw new P2uError(`fromPixels needs integer width and height, got ${width}×${height}`, 'invalid');
  }
  if (data.length !== width * height * stride) {
    throw new P2uError(`fromPixels: ${data.length} values for ${width}×${height} pixels of ${stride}`, 'invalid');
  }
  const channels = options.channels ?? 'RGB';
  const layout = options.layout ?? 'NCHW';
  if (!CHANNELS.includes(channels)) throw new P2uError(`channels must be one of ${CHANNELS.join(', ')}, got ${channels}`, 'invalid');
  if (!LAYOUTS.includes(layout)) throw new P2uError(`layout must be one of ${LAYOUTS.join(', ')}, got ${layout}`, 'invalid');
  const n = channels === 'L' ? 1 : 3;
  const perChannel = (v, fallback, what) => {
    const a = v === undefined ? Array(n).fill(fallback) : typeof v === 'number' ? Array(n).fill(v) : Array.from(v);
    if (a.length !== n) throw new P2uError(`${what} has ${a.length} values for ${n} channels (${channels})`, 'invalid');
    return a;
  };
  const c = n;
  return {
    pixels: data,
    width,
    height,
    stride,
    channels,
    layout,
    scale: options.scale ?? 1 / 255,
    mean: perChannel(options.mean, 0, 'mean'),
    std: perChannel(options.std, 1, 'std'),
    dims: layout === 'NCHW' ? [1, c, height, width] : [1, height, width, c],
  };
}

/** {@link fromPixels} of a canvas's `ImageData` (RGBA). */
export function fromImageData(image, options = {}) {
  return fromPixels(image.data, { ...options, width: image.width, height: image.height, stride: 4 });
}

/** Draws `source` (an image, bitmap, video frame or canvas) at
 * `width × height` with the browser's smoothing and returns its ImageData. */
export function resizeImage(source, width, height) {
  const canvas = typeof OffscreenCanvas === 'function' ? new OffscreenCanvas(width, height) : Object.assign(document.createElement('canvas'), { width, height });
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(source, 0, 0, width, height);
  return ctx.getImageData(0, 0, width, height);
}

/** True for what {@link fromPixels} returns. */
export const isPixelInput = (x) => x !== null && typeof x === 'object' && (x.pixels instanceof Uint8Array || x.pixels instanceof Uint8ClampedArray) && 'layout' in x;
