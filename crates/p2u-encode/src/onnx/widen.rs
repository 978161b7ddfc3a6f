//! Half-precision models in: [`widen`] turns a float16/bfloat16 graph into
//! the same graph in float32 before any other work.
//!
//! Every float16 and bfloat16 tensor (initializers, `Constant` values,
//! tensor attributes such as `ConstantOfShape`'s) becomes its f32 upcast,
//! which is exact, and every declared type, `Cast` target and `dtype`
//! attribute of those formats becomes FLOAT, in subgraphs too. The model
//! then computes in f32 (its inputs and outputs are float32); its weights
//! stay the original's values, bit for bit once narrowed back, which is
//! what the exact stage restores ([`crate::quant::Precision`] codes them
//! among half-precision values, so restoring them costs half-precision
//! bits).

use tract_onnx::pb::{tensor_proto::DataType, type_proto, AttributeProto, GraphProto, ModelProto, TensorProto, TypeProto};

use super::f32_tensor;
use p2u::error::{Error, Result};

const HALF: [DataType; 2] = [DataType::Float16, DataType::Bfloat16];

fn is_half(data_type: i32) -> bool {
    HALF.iter().any(|&d| d as i32 == data_type)
}

/// Converts every float16/bfloat16 tensor and type of `m` to float32;
/// returns how many tensors it converted (0: the model had none and is
/// unchanged, types included).
pub fn widen(m: &mut ModelProto) -> Result<usize> {
    let g = m.graph.as_mut().ok_or_else(|| Error::Onnx("model has no graph".into()))?;
    widen_graph(g)
}

/// True if `m` holds a float16/bfloat16 tensor, type or type attribute
/// anywhere (what [`widen`] would change).
pub fn has_half(m: &ModelProto) -> bool {
    fn attribute(a: &AttributeProto) -> bool {
        ((a.name == "to" || a.name == "dtype") && is_half(a.i as i32))
            || a.t.iter().chain(&a.tensors).any(|t| is_half(t.data_type))
            || a.g.iter().chain(&a.graphs).any(graph)
    }
    fn graph(g: &GraphProto) -> bool {
        let half_type = |t: &TypeProto| matches!(&t.value, Some(type_proto::Value::TensorType(tt)) if is_half(tt.elem_type));
        g.initializer.iter().any(|t| is_half(t.data_type))
            || g.sparse_initializer.iter().any(|s| s.values.as_ref().is_some_and(|v| is_half(v.data_type)))
            || g.node.iter().flat_map(|n| &n.attribute).any(attribute)
            || g.input.iter().chain(&g.output).chain(&g.value_info).filter_map(|v| v.r#type.as_ref()).any(half_type)
    }
    m.graph.as_ref().is_some_and(graph)
}

fn widen_tensor(t: &mut TensorProto) -> Result<bool> {
    if !is_half(t.data_type) {
        return Ok(false);
    }
    if t.data_location == Some(1) || !t.external_data.is_empty() {
        return Err(Error::Unsupported(format!("tensor {:?}: float16 external data (load it into the model first)", t.name)));
    }
    let values = p2u::onnx::tensor_f32(t)?;
    let dims = p2u::onnx::dims_of(t)?;
    let mut wide = f32_tensor(&t.name, &dims, &values);
    wide.doc_string = std::mem::take(&mut t.doc_string);
    *t = wide;
    Ok(true)
}

fn widen_type(t: &mut TypeProto) {
    if let Some(type_proto::Value::TensorType(tt)) = t.value.as_mut() {
        if is_half(tt.elem_type) {
            tt.elem_type = DataType::Float as i32;
        }
    }
}

fn widen_attribute(a: &mut AttributeProto) -> Result<usize> {
    let mut n = 0;
    // a target type: Cast's `to`, the `dtype` of EyeLike, Random*, …
    if (a.name == "to" || a.name == "dtype") && is_half(a.i as i32) {
        a.i = DataType::Float as i64;
    }
    for t in a.t.iter_mut().chain(a.tensors.iter_mut()) {
        n += widen_tensor(t)? as usize;
    }
    for g in a.g.iter_mut().chain(a.graphs.iter_mut()) {
        n += widen_graph(g)?;
    }
    Ok(n)
}

fn widen_graph(g: &mut GraphProto) -> Result<usize> {
    let mut n = 0;
    for t in &mut g.initializer {
        n += widen_tensor(t)? as usize;
    }
    if let Some(s) = g.sparse_initializer.iter().find(|s| s.values.as_ref().is_some_and(|v| is_half(v.data_type))) {
        let name = s.values.as_ref().map_or("", |v| v.name.as_str());
        return Err(Error::Unsupported(format!("sparse float16 initializer {name:?}")));
    }
    for node in &mut g.node {
        for a in &mut node.attribute {
            n += widen_attribute(a)?;
        }
    }
    for v in g.input.iter_mut().chain(&mut g.output).chain(&mut g.value_info) {
        v.r#type.iter_mut().for_each(widen_type);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{tensor_f32, value_info};
    use tract_onnx::pb::{attribute_proto::AttributeType, NodeProto};

    fn half_tensor(name: &str, values: &[f32]) -> TensorProto {
        let raw = values.iter().flat_map(|&v| half::f16::from_f32(v).to_bits().to_le_bytes()).collect();
        TensorProto { name: name.into(), dims: vec![values.len() as i64], data_type: DataType::Float16 as i32, raw_data: raw, ..Default::default() }
    }

    #[test]
    fn a_float16_graph_becomes_float32_with_exact_values() {
        let values = [0.1f32, -2.5, 65504.0, -0.0, 6e-8];
        let mut cast = NodeProto { op_type: "Cast".into(), input: vec!["x".into()], output: vec!["y".into()], ..Default::default() };
        cast.attribute.push(AttributeProto { name: "to".into(), r#type: AttributeType::Int as i32, i: DataType::Float16 as i64, ..Default::default() });
        let mut constant = NodeProto { op_type: "Constant".into(), output: vec!["c".into()], ..Default::default() };
        constant.attribute.push(AttributeProto { name: "value".into(), r#type: AttributeType::Tensor as i32, t: Some(half_tensor("c", &values)), ..Default::default() });
        let mut bf = half_tensor("b", &[1.0]);
        bf.data_type = DataType::Bfloat16 as i32;
        bf.raw_data = half::bf16::from_f32(1.5).to_bits().to_le_bytes().to_vec();
        let mut m = ModelProto {
            graph: Some(GraphProto {
                node: vec![cast, constant],
                initializer: vec![half_tensor("w", &values), bf],
                input: vec![value_info("x", DataType::Float16, &[5])],
                output: vec![value_info("y", DataType::Float16, &[5])],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(has_half(&m));
        assert_eq!(widen(&mut m).unwrap(), 3);
        assert!(!has_half(&m));
        let g = m.graph.as_ref().unwrap();
        let up: Vec<u32> = values.iter().map(|&v| half::f16::from_f32(v).to_f32().to_bits()).collect();
        assert_eq!(tensor_f32(&g.initializer[0]).unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>(), up);
        assert_eq!(tensor_f32(&g.initializer[1]).unwrap(), [1.5]);
        assert_eq!(tensor_f32(g.node[1].attribute[0].t.as_ref().unwrap()).unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>(), up);
        assert_eq!(g.node[0].attribute[0].i, DataType::Float as i64);
        let elem = |v: &tract_onnx::pb::ValueInfoProto| match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => t.elem_type,
            _ => 0,
        };
        assert_eq!((elem(&g.input[0]), elem(&g.output[0])), (DataType::Float as i32, DataType::Float as i32));
        // nothing to do the second time
        assert_eq!(widen(&mut m).unwrap(), 0);
    }
}
