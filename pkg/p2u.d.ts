/** Kinds of {@link P2uError}. */
export type P2uErrorKind =
  | 'network' | 'abort' | 'disposed' | 'internal'
  // the runtime kinds, Rust `Error::KINDS` (tests/bad_input.rs keeps the two in step)
  | 'onnx' | 'unsupported' | 'header' | 'corrupt' | 'truncated' | 'mismatch' | 'order' | 'engine' | 'invalid' | 'io';

/** Every error p2u throws or rejects with. */
export class P2uError extends Error {
  readonly name: 'P2uError';
  /** What went wrong, machine-readable. */
  readonly kind: P2uErrorKind;
}

/** Where the weights stand. */
export interface StageStatus {
  /** Highest stage every tensor has reached (0 = the low-bit base). */
  stage: number;
  /** Number of stages including the base (from the manifest until the
   * stream header arrives; then from the header). */
  stages: number;
  chunksApplied: number;
  chunksTotal: number;
  /** True when the weights are bit-identical to the original model's (hash-checked). */
  exact: boolean;
  /** Same as `exact`. */
  final: boolean;
  /** Where the files came from. */
  source: 'network' | 'cache' | 'mixed';
  /** Why the stream stopped early, if it did (the model keeps this stage). */
  error: string | null;
}

export interface Progress {
  file: 'base' | 'stream';
  loaded: number;
  /** 0 when unknown. */
  total: number;
}

export interface RetryInfo {
  /** Which download is retried. */
  file: 'manifest' | 'base' | 'stream';
  /** 1 for the first retry of this file. */
  attempt: number;
  /** Byte offset the resumed (Range) request starts at (0 for manifest and base). */
  offset: number;
  error: P2uError;
}

/** A cache entry that could not be written (quota, private mode) or that
 * failed verification and was deleted. The model keeps working. */
export interface CacheErrorInfo {
  url: string;
  error: P2uError;
}

export interface LoadOptions {
  /** Bytes received so far, per file. */
  onProgress?: (p: Progress) => void;
  /** Called when the base runs and after every applied chunk. */
  onStage?: (s: StageStatus) => void;
  /** Called before each retry after a network failure (of any file). */
  onRetry?: (r: RetryInfo) => void;
  /** Called when the cache could not store a file or held a damaged copy. */
  onCacheError?: (c: CacheErrorInfo) => void;
  /** Aborts the download: before the base runs `load()` rejects; after, the
   * model keeps its stage and `finalized` rejects with kind 'abort'. */
  signal?: AbortSignal;
  /** Concrete input shape(s), e.g. [1, 3, 224, 224] (default: as declared). */
  inputDims?: number[] | number[][];
  /** Cache API cache name, or false for none (default 'p2u-v1'). */
  cache?: string | boolean;
  /** Retries per file after network failures, 5xx, 408 and 429; the stream
   * resumes where it stopped (default 3). */
  retries?: number;
  /** Delay before retry n is 2^(n−1) × this, at most 30 s (default 500). */
  retryDelayMs?: number;
  /** A request that sends no headers or no bytes for this long fails as a
   * retriable network error (default 20000; 0 = never). */
  stallTimeoutMs?: number;
  /** With both files cached, resolve only once the exact model runs (default true). */
  waitForCached?: boolean;
  /** Target duration of one patching step (default 8 ms). */
  stepMs?: number;
  /** Work this long before yielding to the event loop (default 12 ms). */
  sliceMs?: number;
  /** Once exact, 'constants' (default) rebuilds the plan with constant
   * weights (fastest inference; one long task, run it in a worker) and
   * 'inputs' keeps the refining plan (no rebuild). */
  finalPlan?: 'constants' | 'inputs';
  /** Before exact: 'inputs' (default in `load`) serves from one plan with
   * the weights as inputs (no rebuild while refining, slower inference:
   * VGG16 1.66× the final plan); 'constants' (default in `loadInWorker`)
   * rebuilds a plan with constant weights each time the stage advances
   * (the final plan's speed at every stage; one long task per stage). */
  refiningPlan?: 'inputs' | 'constants';
  /** Where the .wasm file is (default: next to the package's JS, found by
   * bundlers through `new URL(…, import.meta.url)`). In `loadInWorker` a
   * URL or a Module. */
  wasm?: string | URL | Response | WebAssembly.Module;
}

/** Raw inputs are mapped to floats: `range` (default for integer arrays:
 * the type's full range; a Float32Array without `normalize` is used as is)
 * or a display `window` onto `to` (default [0, 1]). */
export interface Normalize {
  range?: [number, number];
  /** The DICOM VOI LUT function LINEAR (PS3.3 C.11.2.1.2.1): values at or
   * below c − 0.5 − (w − 1)/2 map to `to[0]`, above c − 0.5 + (w − 1)/2 to
   * `to[1]`, linearly between; `width` ≥ 1. Use the viewport's VOI. */
  window?: { center: number; width: number };
  to?: [number, number];
  /** Clamp into `to` (always on for `window`). */
  clamp?: boolean;
}

export interface RunOptions {
  normalize?: Normalize;
}

/** Values of an output: float32 outputs (and any type p2u casts, such as
 * float16) as a Float32Array, int64 as a BigInt64Array, int32 as an
 * Int32Array, uint8 and bool (0/1) as a Uint8Array. */
export type OutputData = Float32Array | BigInt64Array | Int32Array | Uint8Array;

export interface Output {
  /** The output's name in the model. */
  name: string;
  /** Element type of `data`: 'float32', 'int64', 'int32', 'uint8' or 'bool'. */
  type: 'float32' | 'int64' | 'int32' | 'uint8' | 'bool';
  data: OutputData;
  dims: number[];
}

/** One input's values for {@link ProgressiveModel.run}'s feeds: the typed
 * array of the input's type (float32: Float32Array, int64: BigInt64Array,
 * int32: Int32Array, uint8 and bool: Uint8Array) and its shape. An
 * onnxruntime-web `Tensor` fits. */
export interface FeedTensor {
  data: Float32Array | BigInt64Array | Int32Array | Uint8Array;
  dims: readonly number[];
  /** If given, must be the input's declared type. */
  type?: string;
}

/** `{ inputName: tensor }` for every input, as onnxruntime-web's
 * `session.run(feeds)`; a bare typed array serves an input of fixed shape. */
export type Feeds = Record<string, FeedTensor | Float32Array | BigInt64Array | Int32Array | Uint8Array>;

/** An input or output as the model declares it (as onnxruntime-web's
 * `inputMetadata`). */
export interface ValueMetadata {
  name: string;
  /** Element type: 'float32', 'int64', 'uint8', … */
  type: string;
  /** Declared shape: numbers for fixed dimensions, the symbol (or null) for dynamic ones. */
  shape: (number | string | null)[];
  /** Inputs: the shape the model runs with (dynamic dimensions resolved
   * from `inputDims`, else 1). */
  dims?: number[];
}

/** An image for `run()` (from {@link fromPixels} or {@link fromImageData}):
 * turned into the input tensor inside the runtime. */
export interface PixelInput {
  pixels: Uint8Array | Uint8ClampedArray;
  width: number;
  height: number;
  /** Values per pixel: 1 gray, 3 RGB, 4 RGBA (alpha ignored). */
  stride: 1 | 3 | 4;
  channels: 'RGB' | 'BGR' | 'L';
  layout: 'NCHW' | 'NHWC';
  scale: number;
  mean: number[];
  std: number[];
  /** The input's shape, [1, c, h, w] or [1, h, w, c]. */
  dims: number[];
}

export interface PixelOptions {
  /** Channel order the model takes (default 'RGB'). */
  channels?: 'RGB' | 'BGR' | 'L';
  /** Axis order the model takes (default 'NCHW'). */
  layout?: 'NCHW' | 'NHWC';
  /** Applied to the 0..255 values first (default 1/255). */
  scale?: number;
  /** Subtracted after scaling: one value or one per channel (default 0). */
  mean?: number | number[];
  /** Divides after the mean: one value or one per channel (default 1). */
  std?: number | number[];
}

/** Describes `height × width` pixels of `stride` 8-bit values as a model input. */
export function fromPixels(data: Uint8Array | Uint8ClampedArray, options: PixelOptions & { width: number; height: number; stride?: 1 | 3 | 4 }): PixelInput;
/** {@link fromPixels} of a canvas's RGBA ImageData. */
export function fromImageData(image: ImageData, options?: PixelOptions): PixelInput;
/** Draws an image at `width × height` (browser smoothing) and returns its ImageData. */
export function resizeImage(source: CanvasImageSource, width: number, height: number): ImageData;

/** One inference and the stage of the weights that produced it
 * (`final`: produced by the exact original weights). */
export interface RunResult extends Omit<StageStatus, 'error'> {
  /** First output's values and shape. */
  output: OutputData;
  dims: number[];
  /** Every output, in model order. */
  outputs: Output[];
  /** The outputs by name (as onnxruntime-web's results). */
  byName: Record<string, Output>;
}

export type ModelInput = Float32Array | Uint8Array | Uint8ClampedArray | Uint16Array | Int16Array | PixelInput;

/** A model usable now that refines itself as its stream arrives. */
export interface ProgressiveModel {
  readonly status: StageStatus;
  readonly stage: number;
  readonly final: boolean;
  /** Resolves once exact; rejects with a P2uError if the stream failed for good. */
  readonly finalized: Promise<StageStatus>;
  readonly manifest: unknown | null;
  /** Class names of the first output, from the manifest (`p2u encode --labels`), or null. */
  readonly labels: string[] | null;
  /** The model card from the manifest (`p2u encode --card`): a JSON object or text, or null. */
  readonly card: Record<string, unknown> | string | null;
  readonly source: 'network' | 'cache' | 'mixed';
  /** Milliseconds from load() until the model could run. */
  readonly timeToFirstRun: number;
  /** Why the stream stopped early, if it did. */
  readonly error: P2uError | null;
  /** Set when final: how long the final constant-weights rebuild took. */
  readonly rebuildMs?: number;
  /** Set when final: the longest single patching step, in ms. */
  readonly longestStepMs?: number;
  /** The inputs, in order: name, type, declared shape, the dims it runs with. */
  readonly inputMetadata: ValueMetadata[];
  /** The outputs, in order. */
  readonly outputMetadata: ValueMetadata[];
  readonly inputNames: string[];
  readonly outputNames: string[];
  /** Runs on one input; `dims` may be left out for a {@link PixelInput}.
   * Wrong dims or types are refused naming the input and what it expects. */
  run(input: ModelInput, dims?: ArrayLike<number>, options?: RunOptions): Promise<RunResult>;
  /** Runs on named inputs of any type p2u takes (text models: token ids
   * and masks as BigInt64Array), as onnxruntime-web's `session.run`. A
   * missing or unknown name, a wrong array type or dims are refused
   * naming the input. */
  run(feeds: Feeds): Promise<RunResult>;
  /** Stops downloading; the model keeps serving its current stage. */
  stop(reason?: unknown): void;
  /** Stops and frees everything. */
  dispose(): void;
}

/** The model returned by {@link load} (the class is exported for `instanceof`). */
export interface P2uModel extends ProgressiveModel {}
export declare const P2uModel: abstract new (...args: never[]) => P2uModel;

/** The model returned by {@link loadInWorker}: same API, living in a Web Worker. */
export interface P2uWorkerModel extends ProgressiveModel {}
export declare const P2uWorkerModel: abstract new (...args: never[]) => P2uWorkerModel;

/** A manifest URL (NAME.json) or the two file URLs. */
export type ModelSource = string | URL | { base: string | URL; stream: string | URL };

/** Loads progressively; resolves once the base runs. */
export function load(source: ModelSource, options?: LoadOptions): Promise<P2uModel>;

/** As {@link load}, with the model in a module Web Worker. */
export function loadInWorker(source: ModelSource, options?: Omit<LoadOptions, 'wasm'> & { wasm?: string | URL | WebAssembly.Module; workerUrl?: string | URL }): Promise<P2uWorkerModel>;

/** Starts loading the wasm runtime early (load() does it anyway). */
export function init(wasm?: string | URL | Response | WebAssembly.Module): Promise<unknown>;

export const version: string;
export const DEFAULT_CACHE: string;

/** A plain (non-progressive) ONNX model in the same tract-wasm runtime. */
export interface PlainModel {
  /** The inputs, in order. */
  readonly inputMetadata: ValueMetadata[];
  run(input: Float32Array, dims: ArrayLike<number>): Promise<{ outputs: Output[]; byName: Record<string, Output> }>;
  run(feeds: Feeds): Promise<{ outputs: Output[]; byName: Record<string, Output> }>;
  dispose(): void;
}

/** Builds a plain ONNX model in tract-wasm (a baseline for comparisons). */
export function loadOnnx(bytes: Uint8Array | ArrayBuffer, options?: { inputDims?: number[] | number[][]; wasm?: string | URL | Response | WebAssembly.Module }): Promise<PlainModel>;
