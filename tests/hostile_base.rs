//! Hostile and damaged bases: each gets a typed error from `from_base`,
//! quickly and without a large allocation, never a panic.

mod common;

use std::time::{Duration, Instant};

use common::*;
use p2u_encode::onnx::{decode_model, encode_model, int64_tensor};
use p2u::{Error, ProgressiveModel, RuntimeOptions};
use tract_onnx::pb::{attribute_proto::AttributeType, AttributeProto, ModelProto, NodeProto, TensorProto};

/// Loads `model` as a base and returns the error, which must come fast.
fn rejected(model: &ModelProto) -> Error {
    let bytes = encode_model(model);
    let t = Instant::now();
    let r = ProgressiveModel::from_base(&bytes, RuntimeOptions { input_shapes: vec![FIXTURE_INPUT.to_vec()], ..Default::default() });
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    match r {
        Ok(_) => panic!("hostile base accepted"),
        Err(e) => e,
    }
}

fn assert_corrupt(model: &ModelProto, needle: &str) {
    let e = rejected(model);
    assert_eq!(e.kind(), "corrupt", "{e}");
    assert!(e.to_string().contains(needle), "{e:#} lacks {needle:?}");
}

/// The fixture's real base, decoded for editing.
fn real_base() -> ModelProto {
    decode_model(&encode(&fixture_model(), "fixture", &fixture_uniform(4)).base).unwrap()
}

fn tensor_attr(t: TensorProto) -> AttributeProto {
    AttributeProto { name: "value".into(), r#type: AttributeType::Tensor as i32, t: Some(t), ..Default::default() }
}

/// `y = ReduceSum(ConstantOfShape(shape))`, the shape given by `nodes`
/// that end in "shape".
fn bomb(shape_nodes: Vec<NodeProto>, init: Vec<TensorProto>) -> ModelProto {
    let mut nodes = shape_nodes;
    nodes.push(node("ConstantOfShape", &["shape"], "big", vec![]));
    nodes.push(node("ReduceSum", &["big"], "s", vec![int("keepdims", 0)]));
    nodes.push(node("Add", &["x", "s"], "y", vec![]));
    model("bomb", nodes, init, vec![value_info("x", &[1, 8, 16, 16])], vec![value_info("y", &[1, 8, 16, 16])])
}

#[test]
fn size_bombs_are_refused_before_tract_allocates() {
    // 183 bytes that ask for 4 GiB
    let m = bomb(vec![], vec![int64_tensor("shape", &[1], &[1 << 30])]);
    assert!(encode_model(&m).len() < 300);
    assert_corrupt(&m, "would make 1073741824 elements");
    // 2^40 elements: over every limit
    assert_corrupt(&bomb(vec![], vec![int64_tensor("shape", &[2], &[1 << 20, 1 << 20])]), "elements");
    // the same size computed from constants (tract folds it at load time)
    let konst = |name: &str, v: i64| node("Constant", &[], name, vec![tensor_attr(int64_tensor("", &[1], &[v]))]);
    let computed = bomb(vec![konst("a", 1 << 15), konst("b", 1 << 15), node("Mul", &["a", "b"], "shape", vec![])], vec![]);
    assert_corrupt(&computed, "would make");
    // a negative dimension
    assert_corrupt(&bomb(vec![], vec![int64_tensor("shape", &[1], &[-5])]), "dimension -5");
}

#[test]
fn broken_graphs_are_refused() {
    let mut m = real_base();
    m.graph.as_mut().unwrap().output[0].name = "nobody_makes_this".into();
    assert_corrupt(&m, "produced by no node");

    let mut m = real_base();
    let g = m.graph.as_mut().unwrap();
    let last = g.node.len() - 1;
    g.node[last].input[0] = "undefined_value".into();
    assert_corrupt(&m, "which nothing before it defines");

    // nodes out of topological order
    let mut m = real_base();
    m.graph.as_mut().unwrap().node.reverse();
    assert_corrupt(&m, "nothing before it defines");
}

fn first_conv(m: &mut ModelProto) -> &mut NodeProto {
    m.graph.as_mut().unwrap().node.iter_mut().find(|n| n.op_type == "Conv").unwrap()
}

fn set_ints(n: &mut NodeProto, name: &str, v: &[i64]) {
    n.attribute.retain(|a| a.name != name);
    n.attribute.push(ints(name, v));
}

#[test]
fn bad_conv_attributes_are_refused() {
    for (pads, needle) in [
        (&[][..], "0 pads for 2 spatial axes"),
        (&[1, 1, 1][..], "3 pads"),
        (&[1, 1, 1, 1 << 20][..], "pads"),
        (&[1, -1, 1, 1][..], "pads"),
    ] {
        let mut m = real_base();
        set_ints(first_conv(&mut m), "pads", pads);
        assert_corrupt(&m, needle);
    }
    let mut m = real_base();
    set_ints(first_conv(&mut m), "strides", &[0, 1]);
    assert_corrupt(&m, "strides");
    let mut m = real_base();
    set_ints(first_conv(&mut m), "dilations", &[1, 1, 1]);
    assert_corrupt(&m, "3 dilations for 2 spatial axes");
}

#[test]
fn a_flipped_bit_in_pads_is_refused_or_served_quickly() {
    // every single-bit flip of the first Conv's pads: a typed error or a model
    // that loads, each within the time bound
    for bit in 0..63 {
        let mut m = real_base();
        let conv = first_conv(&mut m);
        let a = conv.attribute.iter_mut().find(|a| a.name == "pads").unwrap();
        a.ints[1] ^= 1 << bit;
        let bytes = encode_model(&m);
        let t = Instant::now();
        let r = ProgressiveModel::from_base(&bytes, RuntimeOptions { input_shapes: vec![FIXTURE_INPUT.to_vec()], ..Default::default() });
        assert!(t.elapsed() < Duration::from_secs(5), "bit {bit}: {:?}", t.elapsed());
        if let Err(e) = r {
            assert!(["corrupt", "engine"].contains(&e.kind()), "bit {bit}: {e}");
        }
    }
}

#[test]
fn bad_code_tensors_are_refused() {
    let codes = |m: &mut ModelProto| -> TensorProto {
        m.graph.as_mut().unwrap().initializer.iter().find(|t| t.name.ends_with("::q")).unwrap().clone()
    };
    let replace = |m: &mut ModelProto, t: TensorProto| {
        let g = m.graph.as_mut().unwrap();
        let slot = g.initializer.iter_mut().find(|x| x.name == t.name).unwrap();
        *slot = t;
    };
    // a zero-size dimension
    let mut m = real_base();
    let mut q = codes(&mut m);
    q.dims[0] = 0;
    q.raw_data.clear();
    replace(&mut m, q);
    let e = rejected(&m);
    assert!(["corrupt", "unsupported"].contains(&e.kind()), "{e}");
    // dims whose product wraps a u64
    let mut m = real_base();
    let mut q = codes(&mut m);
    q.dims = vec![1 << 32, 1 << 32, 16];
    replace(&mut m, q);
    assert_corrupt(&m, "elements");
    // fewer code bytes than the shape needs
    let mut m = real_base();
    let mut q = codes(&mut m);
    q.raw_data.truncate(q.raw_data.len() / 2);
    replace(&mut m, q);
    assert_corrupt(&m, "data bytes");
    // a NaN scale
    let mut m = real_base();
    let g = m.graph.as_mut().unwrap();
    let s = g.initializer.iter_mut().find(|t| t.name.ends_with("::scale") && t.raw_data.len() >= 4).unwrap();
    s.raw_data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    assert_corrupt(&m, "not finite");
}

#[test]
fn every_truncation_of_a_real_base_is_a_typed_error() {
    let base = encode(&fixture_model(), "fixture", &fixture_uniform(4)).base;
    let opts = RuntimeOptions { input_shapes: vec![FIXTURE_INPUT.to_vec()], ..Default::default() };
    for cut in (0..base.len()).step_by(37) {
        if let Err(e) = ProgressiveModel::from_base(&base[..cut], opts.clone()) {
            assert!(["onnx", "corrupt", "unsupported", "engine"].contains(&e.kind()), "cut {cut}: {e}");
        }
    }
}

#[test]
fn nodes_missing_inputs_or_outputs_are_refused() {
    // found by the fuzzer: tract indexes a Flatten's outputs without checking
    let mut m = real_base();
    let g = m.graph.as_mut().unwrap();
    let f = g.node.iter_mut().find(|n| n.op_type == "Flatten").unwrap();
    f.output.clear();
    assert_corrupt(&m, "has no output");
    let mut m = real_base();
    let g = m.graph.as_mut().unwrap();
    g.node.iter_mut().find(|n| n.op_type == "MatMul").unwrap().input.truncate(1);
    assert_corrupt(&m, "has 1 inputs, needs 2");
}

#[test]
fn shapes_that_do_not_broadcast_are_refused_at_once() {
    // found by the fuzzer on MobileNetV2: an elementwise op on mismatched
    // shapes made tract build an expression doubling at every residual join
    // (minutes, gigabytes); it is refused before tract in milliseconds
    let mut m = real_base();
    let g = m.graph.as_mut().unwrap();
    g.node.iter_mut().find(|n| n.op_type == "Add").unwrap().input[1] = "W1".into();
    let t = Instant::now();
    assert_corrupt(&m, "do not broadcast");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[test]
fn an_axis_past_its_input_rank_is_refused() {
    // found by the fuzzer: tract's Flatten slices its input's shape at `axis`
    // unchecked (a scalar Constant flattened at axis 1 panicked)
    let mut m = real_base();
    let g = m.graph.as_mut().unwrap();
    let scalar = AttributeProto { name: "value_float".into(), r#type: AttributeType::Float as i32, f: 1.0, ..Default::default() };
    g.node.insert(0, node("Constant", &[], "one", vec![scalar]));
    g.node.iter_mut().find(|n| n.op_type == "Flatten").unwrap().input[0] = "one".into();
    assert_corrupt(&m, "axis 1 for an input of rank 0");
}
