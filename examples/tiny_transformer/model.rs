//! A tiny text transformer as ONNX, built in code (shared by the example
//! and the tests): token and position embeddings (`Gather`, `Add`),
//! `LayerNormalization`, one single-head self-attention block (`MatMul`,
//! `Transpose`, the attention mask as an additive bias, `Softmax`), a ReLU
//! feed-forward block, mean pooling and a classifier. Two int64 inputs
//! `input_ids` and `attention_mask` of shape `[batch, 8]` (`batch`
//! symbolic); two outputs, `last_hidden_state` `[batch, 8, 64]` and
//! `logits` `[batch, 4]`. About 47k weights, deterministic values.

use p2u_encode::onnx::{f32_tensor, int64_tensor, value_info};
use tract_onnx::pb::tensor_shape_proto::{dimension::Value as Dim, Dimension};
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, ValueInfoProto,
};

/// Tokens per sequence.
pub const SEQUENCE: usize = 8;
/// Vocabulary size (token ids are `0..VOCAB`).
pub const VOCAB: usize = 100;
/// Width of the hidden state.
pub const HIDDEN: usize = 64;
/// Classes of `logits`.
pub const CLASSES: usize = 4;

/// The model (opset 17).
pub fn tiny_transformer() -> ModelProto {
    let (d, ff) = (HIDDEN, 2 * HIDDEN);
    let mut seed = 0x5eed_u64;
    let mut gauss = move |sigma: f32| {
        let mut uniform = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        ((-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos()) as f32 * sigma
    };
    let mut weight = |name: &str, dims: &[usize], sigma: f32, offset: f32| {
        let n: usize = dims.iter().product();
        f32_tensor(name, dims, &(0..n).map(|_| gauss(sigma) + offset).collect::<Vec<_>>())
    };
    let fan_in = |n: usize| 1.0 / (n as f32).sqrt();
    let mut initializer: Vec<TensorProto> = vec![
        weight("tokens", &[VOCAB, d], 0.5, 0.0),
        weight("positions", &[SEQUENCE, d], 0.1, 0.0),
        weight("w_ffn1", &[d, ff], fan_in(d), 0.0),
        weight("b_ffn1", &[ff], 0.05, 0.0),
        weight("w_ffn2", &[ff, d], fan_in(ff), 0.0),
        weight("b_ffn2", &[d], 0.05, 0.0),
        weight("w_classes", &[d, CLASSES], fan_in(d), 0.0),
        weight("b_classes", &[CLASSES], 0.05, 0.0),
        f32_tensor("scale", &[], &[fan_in(d)]),
        f32_tensor("one", &[], &[1.0]),
        f32_tensor("masked_out", &[], &[-10000.0]),
        int64_tensor("axis1", &[1], &[1]),
    ];
    for p in ["q", "k", "v", "o"] {
        initializer.push(weight(&format!("w_{p}"), &[d, d], fan_in(d), 0.0));
        initializer.push(weight(&format!("b_{p}"), &[d], 0.05, 0.0));
    }
    for n in 0..3 {
        initializer.push(weight(&format!("ln{n}_gamma"), &[d], 0.1, 1.0));
        initializer.push(weight(&format!("ln{n}_beta"), &[d], 0.05, 0.0));
    }
    let layer_norm = |n: usize, x: &str, y: &str| {
        node("LayerNormalization", &[x, &format!("ln{n}_gamma"), &format!("ln{n}_beta")], y, vec![int("axis", -1), float("epsilon", 1e-5)])
    };
    let dense = |x: &str, w: &str, b: &str, y: &str| {
        [node("MatMul", &[x, w], &format!("{y}_mm"), vec![]), node("Add", &[&format!("{y}_mm"), b], y, vec![])]
    };
    let mut nodes = vec![
        node("Gather", &["tokens", "input_ids"], "tok", vec![]),
        node("Add", &["tok", "positions"], "x0", vec![]),
        layer_norm(0, "x0", "h0"),
    ];
    for p in ["q", "k", "v"] {
        nodes.extend(dense("h0", &format!("w_{p}"), &format!("b_{p}"), p));
    }
    nodes.extend([
        node("Transpose", &["k"], "kt", vec![ints("perm", &[0, 2, 1])]),
        node("MatMul", &["q", "kt"], "scores_raw", vec![]),
        node("Mul", &["scores_raw", "scale"], "scores", vec![]),
        node("Cast", &["attention_mask"], "mask_f", vec![int("to", DataType::Float as i64)]),
        node("Sub", &["one", "mask_f"], "mask_inv", vec![]),
        node("Mul", &["mask_inv", "masked_out"], "mask_bias2", vec![]),
        node("Unsqueeze", &["mask_bias2", "axis1"], "mask_bias", vec![]),
        node("Add", &["scores", "mask_bias"], "scores_masked", vec![]),
        node("Softmax", &["scores_masked"], "attention", vec![int("axis", -1)]),
        node("MatMul", &["attention", "v"], "context", vec![]),
    ]);
    nodes.extend(dense("context", "w_o", "b_o", "attended"));
    nodes.extend([node("Add", &["x0", "attended"], "x1", vec![]), layer_norm(1, "x1", "h1")]);
    nodes.extend(dense("h1", "w_ffn1", "b_ffn1", "ffn_pre"));
    nodes.push(node("Relu", &["ffn_pre"], "ffn_act", vec![]));
    nodes.extend(dense("ffn_act", "w_ffn2", "b_ffn2", "ffn_out"));
    nodes.extend([
        node("Add", &["x1", "ffn_out"], "x2", vec![]),
        layer_norm(2, "x2", "last_hidden_state"),
        node("ReduceMean", &["last_hidden_state"], "pooled", vec![ints("axes", &[1]), int("keepdims", 0)]),
    ]);
    nodes.extend(dense("pooled", "w_classes", "b_classes", "logits"));
    let input = vec![batched("input_ids", DataType::Int64, &[SEQUENCE]), batched("attention_mask", DataType::Int64, &[SEQUENCE])];
    let output = vec![batched("last_hidden_state", DataType::Float, &[SEQUENCE, d]), batched("logits", DataType::Float, &[CLASSES])];
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        producer_name: "p2u-tiny-transformer".into(),
        graph: Some(GraphProto { node: nodes, name: "tiny_transformer".into(), initializer, input, output, ..Default::default() }),
        ..Default::default()
    }
}

/// A `[batch, …rest]` value of `elem_type`, `batch` symbolic.
fn batched(name: &str, elem_type: DataType, rest: &[usize]) -> ValueInfoProto {
    let mut v = value_info(name, elem_type, &[1]);
    if let Some(type_proto::Value::TensorType(t)) = v.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        if let Some(shape) = t.shape.as_mut() {
            shape.dim = std::iter::once(Dimension { value: Some(Dim::DimParam("batch".into())), ..Default::default() })
                .chain(rest.iter().map(|&n| Dimension { value: Some(Dim::DimValue(n as i64)), ..Default::default() }))
                .collect();
        }
    }
    v
}

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: format!("{op}_{output}"),
        op_type: op.into(),
        attribute,
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Ints as i32, ints: v.to_vec(), ..Default::default() }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: v, ..Default::default() }
}

fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Float as i32, f: v, ..Default::default() }
}
