//! The base file as the runtime reads it: the p2u `DequantizeLinear` form
//! of each quantized weight, decoded back to its stage-0 f32 values
//! ([`split_base`]).

use std::collections::HashMap;

use tract_onnx::pb::{tensor_proto::DataType, ModelProto, NodeProto, TensorProto};

use super::{attr_int, check_tensor, dims_of, tensor_f32};
use crate::quant::{apply_codes, DequantizeLayout, Grid};
use crate::error::{Error, Result};

/// Prefix of the names of the `DequantizeLinear` nodes p2u writes.
pub const DQ_PREFIX: &str = "p2u/dq/";

/// ONNX type code of UINT2 (newer than tract's protobuf definitions).
pub const UINT2: i32 = 25;
/// ONNX `INT2` (opset 25).
pub const INT2: i32 = 26;
/// The ONNX type and stored bit width of `bits`-bit codes in a base file.
pub fn storage(bits: u8) -> (i32, u8) {
    match bits {
        0..=2 => (UINT2, 2),
        3..=4 => (DataType::Uint4 as i32, 4),
        _ => (DataType::Uint8 as i32, 8),
    }
}

/// A weight decoded from a base file.
#[derive(Clone, Debug)]
pub struct DecodedWeight {
    /// Name.
    pub name: String,
    /// Shape.
    pub dims: Vec<usize>,
    /// Groups, as read from the `DequantizeLinear` layout.
    pub grid: Grid,
    /// Stage-0 values.
    pub values: Vec<f32>,
}

/// Splits a base into the graph without its p2u `DequantizeLinear` nodes
/// (the *skeleton*) and the decoded stage-0 weights, in node order.
pub fn split_base(mut base: ModelProto) -> Result<(ModelProto, Vec<DecodedWeight>)> {
    let g = base.graph.as_mut().ok_or_else(|| Error::Onnx("base has no graph".into()))?;
    let (dq, rest): (Vec<NodeProto>, Vec<NodeProto>) =
        std::mem::take(&mut g.node).into_iter().partition(|n| n.op_type == "DequantizeLinear" && n.name.starts_with(DQ_PREFIX));
    g.node = rest;
    let mut inits: HashMap<String, TensorProto> = HashMap::new();
    let used: std::collections::HashSet<&str> = dq.iter().flat_map(|n| n.input.iter().map(String::as_str)).collect();
    let mut kept = vec![];
    for t in std::mem::take(&mut g.initializer) {
        if used.contains(t.name.as_str()) {
            inits.insert(t.name.clone(), t);
        } else {
            kept.push(t);
        }
    }
    g.initializer = kept;
    let mut out = Vec::with_capacity(dq.len());
    for n in &dq {
        let get = |i: usize| {
            n.input
                .get(i)
                .and_then(|name| inits.get(name))
                .ok_or_else(|| Error::Onnx(format!("node {:?}: input {i} is not an initializer", n.name)))
        };
        let (q, scale, zero) = (get(0)?, get(1)?, get(2)?);
        let name = n.output.first().cloned().ok_or_else(|| Error::Onnx(format!("node {:?} has no output", n.name)))?;
        let dims = dims_of(q)?;
        let elements = check_tensor(q)?;
        if elements == 0 {
            return Err(Error::Corrupt(format!("weight {name:?}: shape {dims:?} has no elements")));
        }
        check_tensor(scale)?;
        check_tensor(zero)?;
        let bits = match q.data_type {
            UINT2 => 2,
            t if t == DataType::Uint4 as i32 => 4,
            t if t == DataType::Uint8 as i32 => 8,
            _ => return Err(Error::Onnx(format!("weight {name:?}: codes must be UINT2, UINT4 or UINT8"))),
        };
        if zero.data_type != q.data_type {
            return Err(Error::Onnx(format!("weight {name:?}: zero point type differs from the codes'")));
        }
        let layout = DequantizeLayout {
            scale_dims: dims_of(scale)?,
            axis: attr_int(n, "axis").map(|a| a as usize),
            block_size: attr_int(n, "block_size").unwrap_or(0) as usize,
        };
        let grid = Grid::from_dequantize(&dims, &layout)?;
        let scales = tensor_f32(scale)?;
        if let Some(bad) = scales.iter().find(|s| !s.is_finite()) {
            return Err(Error::Corrupt(format!("weight {name:?}: scale {bad} is not finite")));
        }
        let count = grid.len();
        if scales.len() != grid.groups()
            || q.raw_data.len() != crate::kernels::packed_len(count, bits)
            || zero.raw_data.len() != crate::kernels::packed_len(grid.groups(), bits)
        {
            return Err(Error::Onnx(format!("weight {name:?}: code, scale or zero-point sizes do not match its shape")));
        }
        let mut zeros_u8 = vec![0u8; grid.groups()];
        crate::kernels::unpack(&zero.raw_data, bits, 0, &mut zeros_u8);
        let zeros: Vec<i32> = zeros_u8.into_iter().map(i32::from).collect();
        let mut values = vec![0f32; count];
        apply_codes(&mut values, &grid, bits, &q.raw_data, &scales, &zeros);
        out.push(DecodedWeight { name, dims, grid, values });
    }
    Ok((base, out))
}
