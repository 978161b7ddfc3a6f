//! ONNX as the runtime needs it: reading models (external data included),
//! checking untrusted ones ([`check_model`], [`check_shapes`]), and turning
//! a base back into a plain fp32 graph for tract ([`split_base`],
//! [`assemble`], [`weights_as_inputs`]).
//!
//! In a base a quantized weight `W` is three initializers `W::q` (UINT2,
//! UINT4 or UINT8 codes: the narrowest that holds them), `W::scale` (f32)
//! and `W::zero` (codes' type) and one `DequantizeLinear` node named
//! `p2u/dq/W` whose output is `W`, so every consumer is unchanged (the
//! encoder crate, `p2u_encode::onnx`, writes it).

mod base;
mod read;
mod shapes;
mod surgery;
mod validate;
pub use base::*;
pub use read::*;
pub use surgery::*;
pub use shapes::check_shapes;
pub use validate::{check_model, check_tensor, MAX_ELEMENTS, MAX_WINDOW};
