//! # p2u — Progressive Precision Update
//!
//! The runtime side of p2u, what ships to the browser: a small low-bit
//! **base** (a real ONNX file) plus **residual streams** that refine the
//! weights stage by stage up to the original bits, applied to a live tract
//! model while it serves. The encoder that writes them is the
//! `p2u-encode` crate; the browser bindings are `p2u-wasm`; the CLI is
//! `p2u-cli`.
//!
//! * [`format`]: the stream container, manifest and hashes (`docs/FORMAT.md`).
//! * [`quant`]: stage codes, groups, the rule that applies codes, the exact stage.
//! * [`kernels`]: the dequantize-and-add loop (scalar, SSE2, simd128).
//! * [`onnx`]: reading and checking models, turning a base into a plain graph for tract.
//! * [`runtime`]: [`ProgressiveModel`], the live, patchable model.

#![deny(missing_docs)]

pub mod error;
pub mod format;
pub mod kernels;
pub mod onnx;
pub mod quant;
pub mod runtime;

pub use error::{Error, Result};
pub use runtime::{Inference, Normalization, ProgressiveModel, Runner, RuntimeOptions, StageStatus};
