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

use std::collections::HashMap;
use std::path::Path;

use prost::Message;
use tract_onnx::pb::{
    self, tensor_proto::DataType, tensor_shape_proto, type_proto, ModelProto, NodeProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

use crate::error::{Error, Result};
use crate::quant::{apply_codes, DequantizeLayout, Grid};

mod shapes;
mod validate;
pub use shapes::check_shapes;
pub use validate::{check_model, check_tensor, MAX_ELEMENTS, MAX_WINDOW};

/// Prefix of the names of the `DequantizeLinear` nodes p2u writes.
pub const DQ_PREFIX: &str = "p2u/dq/";
/// Decodes an ONNX protobuf.
pub fn decode_model(bytes: &[u8]) -> Result<ModelProto> {
    ModelProto::decode(bytes).map_err(|e| Error::Onnx(format!("protobuf decode failed: {e}")))
}

/// Encodes an ONNX protobuf.
pub fn encode_model(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// Reads a model file and inlines any external data it references.
pub fn load_model(path: &Path) -> Result<ModelProto> {
    load_model_with_data(path).map(|(model, _)| model)
}

/// [`load_model`], also naming the external data files it read (each
/// once, as the model spells them, relative to its directory).
pub fn load_model_with_data(path: &Path) -> Result<(ModelProto, Vec<String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let mut model = decode_model(&bytes)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut files: Vec<String> = vec![];
    let mut inline = |t: &mut TensorProto| -> Result<()> {
        if let Some(location) = inline_external(t, dir)? {
            if !files.contains(&location) {
                files.push(location);
            }
        }
        Ok(())
    };
    if let Some(g) = model.graph.as_mut() {
        for t in &mut g.initializer {
            inline(t)?;
        }
        for n in &mut g.node {
            for a in &mut n.attribute {
                if let Some(t) = a.t.as_mut() {
                    inline(t)?;
                }
            }
        }
    }
    Ok((model, files))
}

/// Reads `t`'s external data into it; returns the file's location, if it had one.
fn inline_external(t: &mut TensorProto, dir: &Path) -> Result<Option<String>> {
    if t.data_location != Some(pb::tensor_proto::DataLocation::External as i32) {
        return Ok(None);
    }
    let get = |k: &str| t.external_data.iter().find(|e| e.key == k).map(|e| e.value.clone());
    let location = get("location").ok_or_else(|| Error::Onnx(format!("tensor {:?}: external data without a location", t.name)))?;
    let num = |k: &str| -> Result<Option<usize>> {
        get(k).map(|v| v.parse().map_err(|_| Error::Onnx(format!("tensor {:?}: bad external {k} {v:?}", t.name)))).transpose()
    };
    let (offset, length) = (num("offset")?.unwrap_or(0), num("length")?);
    let file = dir.join(&location);
    let data = std::fs::read(&file).map_err(|e| Error::io(format!("reading external data {}", file.display()), e))?;
    let end = match length {
        Some(l) => offset.checked_add(l),
        None => Some(data.len()),
    }
    .filter(|&e| e <= data.len() && offset <= e)
    .ok_or_else(|| Error::Onnx(format!("tensor {:?}: external range outside {}", t.name, file.display())))?;
    t.raw_data = data[offset..end].to_vec();
    t.data_location = None;
    t.external_data.clear();
    Ok(Some(location))
}

/// Shape of a tensor as `usize`s.
pub fn dims_of(t: &TensorProto) -> Result<Vec<usize>> {
    t.dims.iter().map(|&d| usize::try_from(d).map_err(|_| Error::Onnx(format!("tensor {:?} has dimension {d}", t.name)))).collect()
}

/// The f32 values of a FLOAT tensor (raw or `float_data`), or the exact
/// f32 upcasts of a FLOAT16/BFLOAT16 one.
pub fn tensor_f32(t: &TensorProto) -> Result<Vec<f32>> {
    if [DataType::Float16 as i32, DataType::Bfloat16 as i32].contains(&t.data_type) {
        return half_values(t);
    }
    if t.data_type != DataType::Float as i32 {
        return Err(Error::Onnx(format!("tensor {:?} is not FLOAT", t.name)));
    }
    let n: usize = dims_of(t)?.iter().product();
    let v: Vec<f32> = if !t.raw_data.is_empty() {
        t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect()
    } else {
        t.float_data.clone()
    };
    if v.len() != n {
        return Err(Error::Onnx(format!("tensor {:?}: {} values for {n} elements", t.name, v.len())));
    }
    Ok(v)
}

/// The f32 upcasts of a float16 or bfloat16 tensor's values (raw data, or
/// `int32_data` holding the 16 bits per value).
pub fn half_values(t: &TensorProto) -> Result<Vec<f32>> {
    let bf16 = t.data_type == DataType::Bfloat16 as i32;
    if !(bf16 || t.data_type == DataType::Float16 as i32) {
        return Err(Error::Onnx(format!("tensor {:?} is not FLOAT16 or BFLOAT16", t.name)));
    }
    let bits: Vec<u16> = if !t.raw_data.is_empty() {
        t.raw_data.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
    } else {
        t.int32_data.iter().map(|&v| v as u16).collect()
    };
    let n: usize = dims_of(t)?.iter().product();
    if bits.len() != n {
        return Err(Error::Onnx(format!("tensor {:?}: {} values for {n} elements", t.name, bits.len())));
    }
    let up = |b: u16| if bf16 { half::bf16::from_bits(b).to_f32() } else { half::f16::from_bits(b).to_f32() };
    Ok(bits.into_iter().map(up).collect())
}

/// A FLOAT initializer.
pub fn f32_tensor(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    raw_tensor(name, dims, DataType::Float, values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// An INT64 initializer.
pub fn int64_tensor(name: &str, dims: &[usize], values: &[i64]) -> TensorProto {
    raw_tensor(name, dims, DataType::Int64, values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

fn raw_tensor(name: &str, dims: &[usize], data_type: DataType, raw_data: Vec<u8>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: data_type as i32,
        raw_data,
        ..Default::default()
    }
}

/// Number of elements a tensor declares.
pub fn element_count(t: &TensorProto) -> usize {
    t.dims.iter().map(|&d| d.max(0) as usize).product()
}

/// An INT attribute of a node.
pub fn attr_int(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

/// An INTS attribute of a node.
pub fn attr_ints<'a>(node: &'a NodeProto, name: &str) -> Option<&'a [i64]> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.ints.as_slice())
}

/// A STRING attribute of a node.
pub fn attr_str<'a>(node: &'a NodeProto, name: &str) -> Option<&'a str> {
    node.attribute.iter().find(|a| a.name == name).and_then(|a| std::str::from_utf8(&a.s).ok())
}

/// Opset of the default ONNX domain.
pub fn opset(model: &ModelProto) -> i64 {
    model.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map(|o| o.version).unwrap_or(0)
}

/// Every top-level constant tensor: initializers, then `Constant` node
/// values (named by the node's output).
pub fn constant_tensors(g: &pb::GraphProto) -> Vec<(String, &TensorProto)> {
    let consts = g.node.iter().filter(|n| n.op_type == "Constant").filter_map(|n| {
        let t = n.attribute.iter().find(|a| a.name == "value")?.t.as_ref()?;
        Some((n.output.first()?.clone(), t))
    });
    g.initializer.iter().map(|t| (t.name.clone(), t)).chain(consts).collect()
}

/// [`constant_tensors`] of `g` and of every subgraph in it, at any depth
/// (a name may repeat across sibling subgraphs).
pub fn all_constant_tensors(g: &pb::GraphProto) -> Vec<(String, &TensorProto)> {
    let mut out = constant_tensors(g);
    for a in g.node.iter().flat_map(|n| &n.attribute) {
        for sub in a.g.iter().chain(&a.graphs) {
            out.extend(all_constant_tensors(sub));
        }
    }
    out
}

/// The nodes reading each value: `(node, input index)` by value name.
pub type Consumers<'a> = HashMap<&'a str, Vec<(&'a NodeProto, usize)>>;

/// Every node input, by value name: `(node, input index)`.
pub fn consumers(g: &pb::GraphProto) -> Consumers<'_> {
    let mut m: Consumers<'_> = HashMap::new();
    for n in &g.node {
        for (i, inp) in n.input.iter().enumerate() {
            m.entry(inp.as_str()).or_default().push((n, i));
        }
    }
    m
}

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

/// The skeleton with the given weights put back as FLOAT initializers.
pub fn assemble<'a>(skeleton: &ModelProto, weights: impl IntoIterator<Item = (&'a str, &'a [usize], &'a [f32])>) -> ModelProto {
    let mut m = skeleton.clone();
    if let Some(g) = m.graph.as_mut() {
        let mut inits: Vec<TensorProto> = weights.into_iter().map(|(n, d, v)| f32_tensor(n, d, v)).collect();
        inits.append(&mut g.initializer);
        g.initializer = inits;
    }
    m
}

/// Suffix of the graph inputs that carry weights in [`weights_as_inputs`].
pub const WEIGHT_INPUT_SUFFIX: &str = "::w";

/// The skeleton with the given weights turned into extra graph inputs
/// (named `W::w`, appended after the model's own inputs) so one optimised
/// plan can serve any weight values. Fails if a weight is also a graph output.
pub fn weights_as_inputs<'a>(skeleton: &ModelProto, weights: impl IntoIterator<Item = (&'a str, &'a [usize])>) -> Result<ModelProto> {
    let mut m = skeleton.clone();
    let g = m.graph.as_mut().ok_or_else(|| Error::Onnx("model has no graph".into()))?;
    let mut renamed: HashMap<&str, String> = HashMap::new();
    for (name, dims) in weights {
        if g.output.iter().any(|o| o.name == name) {
            return Err(Error::Unsupported(format!("weight {name:?} is also a graph output")));
        }
        let input = format!("{name}{WEIGHT_INPUT_SUFFIX}");
        g.input.push(value_info(&input, DataType::Float, dims));
        renamed.insert(name, input);
    }
    for n in &mut g.node {
        for i in &mut n.input {
            if let Some(r) = renamed.get(i.as_str()) {
                *i = r.clone();
            }
        }
    }
    Ok(m)
}

/// `model` without intermediate shape annotations (`value_info`) and
/// without the output shapes (their element types stay): tract infers them
/// from the input shapes it is given, where stale or symbolic annotations
/// could contradict them.
pub fn without_shape_annotations(model: &ModelProto) -> ModelProto {
    fn strip(g: &mut pb::GraphProto) {
        g.value_info.clear();
        for o in &mut g.output {
            if let Some(type_proto::Value::TensorType(t)) = o.r#type.as_mut().and_then(|t| t.value.as_mut()) {
                t.shape = None;
            } else {
                o.r#type = None;
            }
        }
        // subgraphs (If branches, Scan bodies) carry the same stale dims
        for a in g.node.iter_mut().flat_map(|n| &mut n.attribute) {
            a.g.iter_mut().chain(a.graphs.iter_mut()).for_each(strip);
        }
    }
    let mut m = model.clone();
    if let Some(g) = m.graph.as_mut() {
        strip(g);
    }
    m
}

/// A tensor-typed `ValueInfoProto` with a fixed shape.
pub fn value_info(name: &str, dtype: DataType, dims: &[usize]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| tensor_shape_proto::Dimension {
            value: Some(tensor_shape_proto::dimension::Value::DimValue(d as i64)),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: dtype as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A graph input (or output) as the model declares it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeclaredInput {
    /// Name.
    pub name: String,
    /// Element type (ONNX `DataType` value).
    pub elem_type: i32,
    /// Dimensions: `Some(n)` fixed, `None` symbolic or unknown.
    pub dims: Vec<Option<usize>>,
    /// Per dimension, the symbol a dynamic dimension is declared with
    /// (`"batch"`), if any.
    pub symbols: Vec<Option<String>>,
}

impl DeclaredInput {
    /// The element type's name as onnxruntime-web spells it (`float32`,
    /// `int64`, …; `unknown` when undeclared).
    pub fn type_name(&self) -> &'static str {
        match DataType::try_from(self.elem_type).unwrap_or(DataType::Undefined) {
            DataType::Float => "float32",
            DataType::Uint8 => "uint8",
            DataType::Int8 => "int8",
            DataType::Uint16 => "uint16",
            DataType::Int16 => "int16",
            DataType::Int32 => "int32",
            DataType::Int64 => "int64",
            DataType::String => "string",
            DataType::Bool => "bool",
            DataType::Float16 => "float16",
            DataType::Double => "float64",
            DataType::Uint32 => "uint32",
            DataType::Uint64 => "uint64",
            DataType::Bfloat16 => "bfloat16",
            _ => "unknown",
        }
    }
}

/// The graph inputs that are not initializers, in order (what tract numbers
/// as the model's inputs).
pub fn declared_inputs(model: &ModelProto) -> Result<Vec<DeclaredInput>> {
    let g = model.graph.as_ref().ok_or_else(|| Error::Onnx("model has no graph".into()))?;
    Ok(free_inputs(g).map(declared).collect())
}

/// The graph inputs that are not initializers (old exporters list those as
/// inputs too): the ones a caller feeds, in order.
pub fn free_inputs(g: &pb::GraphProto) -> impl Iterator<Item = &ValueInfoProto> {
    g.input.iter().filter(|i| !g.initializer.iter().any(|t| t.name == i.name))
}

/// What a graph input or output declares: its name, element type and dims.
pub fn declared(i: &ValueInfoProto) -> DeclaredInput {
    use tensor_shape_proto::dimension::Value as Dim;
    let (elem_type, dims, symbols) = match i.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => {
            let dims = t.shape.as_ref().map_or(&[][..], |s| s.dim.as_slice());
            let fixed = dims
                .iter()
                .map(|d| match d.value {
                    Some(Dim::DimValue(v)) if v > 0 => Some(v as usize),
                    _ => None,
                })
                .collect();
            let symbols = dims
                .iter()
                .map(|d| match &d.value {
                    Some(Dim::DimParam(p)) if !p.is_empty() => Some(p.clone()),
                    _ => None,
                })
                .collect();
            (t.elem_type, fixed, symbols)
        }
        _ => (0, vec![], vec![]),
    };
    DeclaredInput { name: i.name.clone(), elem_type, dims, symbols }
}

/// The graph outputs as the model declares them, in order.
pub fn declared_outputs(model: &ModelProto) -> Result<Vec<DeclaredInput>> {
    let g = model.graph.as_ref().ok_or_else(|| Error::Onnx("model has no graph".into()))?;
    Ok(g.output.iter().map(declared).collect())
}

/// Reads a `metadata_props` entry.
pub fn metadata<'a>(model: &'a ModelProto, key: &str) -> Option<&'a str> {
    model.metadata_props.iter().find(|e| e.key == key).map(|e| e.value.as_str())
}
