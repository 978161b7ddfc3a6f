//! # p2u-encode — the offline encoder of p2u
//!
//! Turns an fp32 (or fp16/bf16) ONNX model into what the `p2u` runtime
//! serves: a low-bit base (a real ONNX file), a residual stream that refines
//! it stage by stage to the original bits, and a manifest. It replays the
//! runtime's own float operations ([`p2u::quant::apply_codes`],
//! [`p2u::quant::exact`]) to know the client's weights bit for bit.
//!
//! * [`encoder`]: fp32 ONNX → base + stream + manifest ([`encode`]).
//! * [`calibrate`]: statistics from running the fp32 model on sample or synthetic inputs.
//! * [`quant`]: how each stage's codes and scales are chosen (GPTQ included).
//! * [`onnx`]: finding weights, writing the base, preparing graphs (opset, fp16, subgraphs).
//! * [`parallel`]: work over the machine's cores with thread-count-independent results.

#![deny(missing_docs)]

pub mod calibrate;
pub mod encoder;
pub mod onnx;
pub mod parallel;
pub mod quant;

pub use encoder::{encode, Clipping, EncodeOptions, Encoded};
