//! Reading ONNX: model files (external data inlined), tensors, attributes,
//! and what a graph declares (inputs, outputs, metadata).

use std::collections::HashMap;
use std::path::Path;

use prost::Message;
use tract_onnx::pb::{
    self, tensor_proto::DataType, tensor_shape_proto, type_proto, ModelProto, NodeProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

use crate::error::{Error, Result};

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
