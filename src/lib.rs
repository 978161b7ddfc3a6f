//! # p2u — Progressive Precision Update
//!
//! Turns an fp32 ONNX model into a small low-bit **base** (a real ONNX file)
//! plus **residual streams** that refine the weights stage by stage up to the
//! original bits, and runs the model in tract while it refines.
//!
//! * [`encoder`]: fp32 ONNX → base + stream + manifest.
//! * [`calibrate`]: statistics from running the fp32 model on sample inputs.
//! * [`format`]: the stream container, manifest and hashes (`docs/FORMAT.md`).
//! * [`quant`]: how codes and scales are chosen and applied.
//! * [`kernels`]: the dequantize-and-add loop (scalar, SSE2, simd128).
//! * [`onnx`]: model surgery (weights, base graph, plain graph for tract).
//! * [`runtime`]: [`ProgressiveModel`], the live, patchable model.
//! * `web` (wasm32 in the browser only): the wasm-bindgen layer the npm package wraps.

pub mod calibrate;
pub mod encoder;
pub mod error;
pub mod format;
pub mod kernels;
pub mod onnx;
pub mod parallel;
pub mod quant;
pub mod runtime;
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
pub mod web;

pub use encoder::{encode, Clipping, EncodeOptions, Encoded};
pub use error::{Error, Result};
pub use runtime::{Inference, Normalization, ProgressiveModel, Runner, RuntimeOptions, StageStatus};
