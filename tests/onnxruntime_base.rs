//! onnxruntime (Python, from PyPI) runs the base: it passes onnx.checker and
//! its outputs match p2u's stage-0 outputs in tract to 1e-4 of the output
//! range (the two engines sum in different orders; same weights, same
//! dequantization rule), with the same arg-max.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use p2u_encode::encoder::file_info;
use p2u_encode::EncodeOptions;
use tract_onnx::prelude::Tensor;

const TOLERANCE: &str = "1e-4";

fn check_with_onnxruntime(name: &str, enc: &p2u_encode::Encoded, shape: &[usize], lo: f32, hi: f32) {
    let x = input(shape, 9, lo, hi);
    let mut live = load_base(enc, shape);
    let out = live.run(vec![x.clone()]).unwrap();
    assert_eq!(out.status.stage, 0);
    compare_with_onnxruntime(name, &enc.base, &[("", &x)], &out.outputs[0], &[]);
}

/// onnxruntime runs `model` on `inputs` (by name; "" for the only input)
/// and its first output must match `p2u_output` (see tests/ort_check.py;
/// `flags` are passed on).
fn compare_with_onnxruntime(name: &str, model: &[u8], inputs: &[(&str, &Tensor)], p2u_output: &Tensor, flags: &[&str]) {
    compare_within(name, model, inputs, p2u_output, TOLERANCE, flags)
}

/// [`compare_with_onnxruntime`] within `tolerance` of the output range.
fn compare_within(name: &str, model: &[u8], inputs: &[(&str, &Tensor)], p2u_output: &Tensor, tolerance: &str, flags: &[&str]) {
    let dir = std::env::temp_dir().join(format!("p2u-ort-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f32s = |v: Vec<f32>| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(dir.join("base.onnx"), model).unwrap();
    let mut feeds = vec![];
    for (i, (input_name, x)) in inputs.iter().enumerate() {
        let file = dir.join(format!("input{i}.npy"));
        std::fs::write(&file, tensor_npy(x)).unwrap();
        feeds.push(if input_name.is_empty() { file.display().to_string() } else { format!("{input_name}={}", file.display()) });
    }
    std::fs::write(dir.join("p2u.f32"), f32s(values(p2u_output))).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ort_check.py");
    let result = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(script)
        .arg(dir.join("base.onnx"))
        .arg(feeds.join(","))
        .arg(dir.join("p2u.f32"))
        .arg(tolerance)
        .args(flags)
        .output()
        .expect("python3 must be installed (see .ci/run)");
    let text = String::from_utf8_lossy(&result.stdout).to_string() + &String::from_utf8_lossy(&result.stderr);
    eprintln!("{name}: {text}");
    if std::env::var_os("P2U_KEEP_TEMP").is_none() {
        std::fs::remove_dir_all(&dir).ok();
    }
    assert!(result.status.success(), "onnxruntime check failed for {name}:\n{text}");
}

#[test]
fn onnxruntime_runs_the_mobilenetv2_base() {
    let path = require(shared_models().join("mobilenetv2_imagenet.onnx"));
    let model = p2u_encode::onnx::load_model(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let enc = p2u_encode::encode(&model, "mnv2", file_info("mnv2", &bytes), &EncodeOptions::default(), &mut |_| {}).unwrap();
    check_with_onnxruntime("mobilenetv2", &enc, &[1, 3, 224, 224], -2.0, 2.0);
}

#[test]
fn onnxruntime_runs_a_calibrated_mixed_precision_base() {
    let calib = p2u_encode::calibrate::Calibration::new(FIXTURE_INPUT[1..].to_vec(), smooth_items(64, 3)).unwrap();
    let opts = EncodeOptions {
        calibration: Some(std::sync::Arc::new(calib)),
        base_budget: Some(p2u_encode::encoder::BaseBudget::BitsPerWeight(2.5)),
        ..fixture_options()
    };
    let enc = encode(&fixture_model(), "fixture", &opts);
    let widths: std::collections::BTreeSet<u8> = enc.manifest.tensors.iter().map(|t| t.base_bits).collect();
    assert!(widths.len() >= 2, "mixed containers: {widths:?}");
    check_with_onnxruntime("fixture-mixed", &enc, &FIXTURE_INPUT, -1.0, 1.0);
}

#[test]
fn onnxruntime_runs_fixture_bases_of_every_layout() {
    for (bits, block) in [(4u8, 0usize), (4, 16), (2, 0), (3, 8), (8, 0)] {
        let opts = EncodeOptions { block, ..fixture_uniform(bits) };
        let enc = encode(&fixture_model(), "fixture", &opts);
        check_with_onnxruntime(&format!("fixture-{bits}bit-block{block}"), &enc, &FIXTURE_INPUT, -1.0, 1.0);
    }
}

/// An opset-8 model using the operators whose signature changed before
/// opset 13 (attributes that became inputs, Upsample with scales, spatial
/// BatchNormalization, Dropout's ratio, 2-D-coercing Softmax).
fn opset8_model() -> tract_onnx::pb::ModelProto {
    use p2u_encode::onnx::f32_tensor;
    use tract_onnx::pb::{attribute_proto::AttributeType, AttributeProto};
    let mut r = Rng(5);
    let mut weights = |name: &str, dims: &[usize], scale: f32| {
        let n: usize = dims.iter().product();
        f32_tensor(name, dims, &(0..n).map(|_| (r.uniform() as f32 * 2.0 - 1.0) * scale).collect::<Vec<_>>())
    };
    let float = |name: &str, f: f32| AttributeProto { name: name.into(), r#type: AttributeType::Float as i32, f, ..Default::default() };
    let floats = |name: &str, floats: &[f32]| AttributeProto {
        name: name.into(),
        r#type: AttributeType::Floats as i32,
        floats: floats.to_vec(),
        ..Default::default()
    };
    let string =
        |name: &str, s: &str| AttributeProto { name: name.into(), r#type: AttributeType::String as i32, s: s.into(), ..Default::default() };
    let init = vec![
        weights("W1", &[8, 3, 3, 3], 0.4),
        weights("B1", &[8], 0.1),
        f32_tensor("bn_s", &[8], &[1.1; 8]),
        f32_tensor("bn_b", &[8], &[0.05; 8]),
        f32_tensor("bn_m", &[8], &[0.02; 8]),
        f32_tensor("bn_v", &[8], &[0.9; 8]),
        weights("W2", &[8, 8, 3, 3], 0.2),
        weights("G", &[10, 8], 0.5),
        weights("Gb", &[10], 0.1),
    ];
    let nodes = vec![
        node("Conv", &["x", "W1", "B1"], "c1", vec![ints("pads", &[1, 1, 1, 1])]),
        node("BatchNormalization", &["c1", "bn_s", "bn_b", "bn_m", "bn_v"], "bn", vec![int("spatial", 1)]),
        node("Clip", &["bn"], "clip", vec![float("min", 0.0), float("max", 6.0)]),
        node("Upsample", &["clip"], "up", vec![string("mode", "nearest"), floats("scales", &[1.0, 1.0, 2.0, 2.0])]),
        node("Pad", &["up"], "pad", vec![ints("pads", &[0, 0, 1, 1, 0, 0, 1, 1]), float("value", 0.5)]),
        node("Slice", &["pad"], "sl", vec![ints("starts", &[1, 0]), ints("ends", &[17, 16]), ints("axes", &[2, 3])]),
        node("Conv", &["sl", "W2"], "c2", vec![ints("strides", &[2, 2])]),
        node("ReduceMean", &["c2"], "gap", vec![ints("axes", &[2, 3])]),
        node("Squeeze", &["gap"], "sq", vec![ints("axes", &[2, 3])]),
        node("Unsqueeze", &["sq"], "us", vec![ints("axes", &[1])]),
        node("Flatten", &["us"], "f", vec![int("axis", 1)]),
        node("Gemm", &["f", "G", "Gb"], "g", vec![int("transB", 1)]),
        tract_onnx::pb::NodeProto {
            output: vec!["g1".into(), "g2".into()],
            ..node("Split", &["g"], "g1", vec![int("axis", 1), ints("split", &[4, 6])])
        },
        node("Concat", &["g2", "g1"], "gc", vec![int("axis", 1)]),
        node("Dropout", &["gc"], "d", vec![float("ratio", 0.3)]),
        node("Softmax", &["d"], "y", vec![int("axis", 1)]),
    ];
    let mut m = model("opset8", nodes, init, vec![value_info("x", &[1, 3, 8, 8])], vec![value_info("y", &[1, 10])]);
    m.ir_version = 4;
    m.opset_import[0].version = 8;
    m
}

#[test]
fn an_opset_8_model_is_converted_and_served_bit_exact() {
    let original = opset8_model();
    let shape = [1, 3, 8, 8];
    let enc = encode(&original, "opset8", &fixture_options());
    assert!(enc.notes.iter().any(|n| n.contains("from opset 8 to 13")), "{:?}", enc.notes);
    // the base is valid ONNX at opset 21 and onnxruntime computes what p2u does
    check_with_onnxruntime("opset8-base", &enc, &shape, -1.0, 1.0);
    // the last stage holds the original's weights (hash-checked) ...
    let x = input(&shape, 3, -1.0, 1.0);
    let mut live = load_base(&enc, &shape);
    live.feed(&enc.stream).unwrap();
    let got = live.run(vec![x.clone()]).unwrap();
    assert!(got.status.exact);
    // ... and onnxruntime on the opset-8 original computes its outputs: the
    // conversion kept the graph's meaning (tract itself has no Upsample)
    compare_with_onnxruntime("opset8-original", &p2u_encode::onnx::encode_model(&original), &[("", &x)], &got.outputs[0], &["--plain"]);
}

#[test]
fn opsets_p2u_cannot_convert_are_refused_before_any_work() {
    let mut old = opset8_model();
    old.opset_import[0].version = 6;
    let e =
        p2u_encode::encode(&old, "old", file_info("old", &[]), &fixture_options(), &mut |_| panic!("no work before the refusal")).err().unwrap();
    assert!(e.to_string().contains("opset 6: p2u converts opset 7 and newer"), "{e}");
    let mut per_activation = opset8_model();
    let bn = per_activation.graph.as_mut().unwrap().node.iter_mut().find(|n| n.op_type == "BatchNormalization").unwrap();
    bn.attribute = vec![int("spatial", 0)];
    let e = p2u_encode::encode(&per_activation, "bn", file_info("bn", &[]), &fixture_options(), &mut |_| panic!("no work before the refusal"))
        .err()
        .unwrap();
    assert!(e.to_string().contains("BatchNormalization node \"BatchNormalization_bn\""), "{e}");
}

#[path = "../examples/tiny_transformer/model.rs"]
mod transformer;

/// The text model of `examples/tiny_transformer` at batch 2, padded: token
/// ids and an attention mask (int64), named.
fn transformer_feeds() -> [(&'static str, Tensor); 2] {
    use transformer::{SEQUENCE, VOCAB};
    let ids: Vec<i64> = (0..2 * SEQUENCE as i64).map(|i| (i * 37 + 5) % VOCAB as i64).collect();
    let mask: Vec<i64> = (0..2 * SEQUENCE).map(|i| (i % SEQUENCE < 6 || i >= SEQUENCE) as i64).collect();
    [
        ("input_ids", Tensor::from_shape(&[2, SEQUENCE], &ids).unwrap()),
        ("attention_mask", Tensor::from_shape(&[2, SEQUENCE], &mask).unwrap()),
    ]
}

#[test]
fn a_text_transformer_with_two_int64_inputs_is_served_and_refined_to_the_exact_model() {
    let original = transformer::tiny_transformer();
    let enc = p2u_encode::encode(&original, "text", file_info("text.onnx", &[]), &EncodeOptions::default(), &mut |_| {}).unwrap();
    let feeds = transformer_feeds();
    let named: Vec<(&str, &Tensor)> = feeds.iter().map(|(n, t)| (*n, t)).collect();
    let tensors = || feeds.iter().map(|(_, t)| t.clone()).collect::<Vec<_>>();
    let options = p2u::RuntimeOptions { input_shapes: vec![vec![2, transformer::SEQUENCE]; 2], ..Default::default() };
    let mut live = p2u::ProgressiveModel::from_base(&enc.base, options.clone()).unwrap();
    assert_eq!(live.inputs().iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["input_ids", "attention_mask"]);
    let stage0 = live.run(tensors()).unwrap();
    assert_eq!((stage0.status.stage, stage0.outputs.len()), (0, 2));
    assert_eq!(stage0.outputs[1].shape(), [2, transformer::CLASSES]);
    // onnxruntime computes what p2u computes on the base …
    compare_with_onnxruntime("transformer-base", &enc.base, &named, &stage0.outputs[0], &[]);
    live.feed(&enc.stream).unwrap();
    let last = live.run(tensors()).unwrap();
    assert!(last.status.exact);
    // … and the last stage is the original model, bit for bit
    let want = p2u::runtime::build_plan(&original, &options).unwrap().run(tensors()).unwrap();
    assert_eq!(output_bits(&last.outputs), output_bits(&want));
    compare_with_onnxruntime("transformer-original", &p2u_encode::onnx::encode_model(&original), &named, &last.outputs[0], &["--plain"]);
}

#[test]
fn a_float16_model_is_served_in_float32_and_restored_to_its_half_precision_bits() {
    use p2u::format::stream::StreamHeader;
    use p2u_encode::quant::Precision;
    use tract_onnx::pb::tensor_proto::DataType;
    let wide = fixture_model();
    for (half, precision) in [(DataType::Float16, Precision::F16), (DataType::Bfloat16, Precision::Bf16)] {
        let original = half_model(&wide, half);
        let enc = encode(&original, "half", &fixture_options());
        assert!(enc.notes.iter().any(|n| n.contains("converted the float16/bfloat16 graph to float32")), "{:?}", enc.notes);
        let header = StreamHeader::parse(&enc.stream).unwrap();
        assert!(header.tensors.iter().all(|t| t.precision == precision), "{half:?}");
        // one 4-bit refinement, then the exact stage
        assert_eq!(header.stages.len(), 3);
        let mut live = load_base(&enc, &FIXTURE_INPUT);
        live.feed(&enc.stream).unwrap();
        let x = input(&FIXTURE_INPUT, 4, -1.0, 1.0);
        let last = live.run(vec![x.clone()]).unwrap();
        assert!(last.status.exact);
        // every weight is the original's half-precision value, upcast
        let g = original.graph.as_ref().unwrap();
        for name in live.weight_names().map(str::to_owned).collect::<Vec<_>>() {
            let constant = g.node.iter().filter(|n| n.output[0] == name).find_map(|n| n.attribute[0].t.as_ref());
            let t = g.initializer.iter().find(|t| t.name == name).or(constant).unwrap();
            assert_eq!(t.data_type, half as i32);
            let want: Vec<u32> = p2u_encode::onnx::tensor_f32(t).unwrap().iter().map(|v| v.to_bits()).collect();
            assert_eq!(live.weight(&name).unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want, "{name}");
        }
        // the exact stage costs half-precision bits, not f32 ones
        let mut as_f32 = original.clone(); // the same values in an f32 model
        p2u_encode::onnx::widen::widen(&mut as_f32).unwrap();
        let f32_enc = encode(&as_f32, "wide", &EncodeOptions { half_refine_bits: vec![4], refine_bits: vec![4], ..fixture_options() });
        let exact = |e: &p2u_encode::Encoded| e.manifest.stages.last().unwrap().bytes;
        assert_eq!(exact(&f32_enc), exact(&enc), "an f32 model holding half-precision values is coded the same");
        let f32_model = encode(&wide, "f32", &EncodeOptions { refine_bits: vec![4], ..fixture_options() });
        assert!(exact(&enc) * 2 < exact(&f32_model), "exact stage {} vs {} bytes for f32 weights", exact(&enc), exact(&f32_model));
        if half == DataType::Float16 {
            // onnxruntime computes the fp16 original in fp16: agreement to fp16 rounding
            compare_within("fp16-original", &p2u_encode::onnx::encode_model(&original), &[("", &x)], &last.outputs[0], "2e-2", &["--plain"]);
        }
    }
}

#[test]
fn weights_inside_if_branches_are_lifted_quantized_and_refined_to_the_exact_model() {
    let original = branching_model();
    let enc = encode(&original, "branching", &fixture_options());
    assert!(enc.notes.iter().any(|n| n.contains("lifted 2 weights out of the subgraphs of \"branch\"")), "{:?}", enc.notes);
    let quantized: Vec<&str> = enc.manifest.tensors.iter().map(|t| t.name.as_str()).collect();
    assert!(quantized.contains(&"Wt") && quantized.contains(&"We"), "{quantized:?}");
    let x = input(&[1, 16], 2, -1.0, 1.0);
    let feeds = |c: bool| vec![x.clone(), Tensor::from(c)];
    let options = p2u::RuntimeOptions::default();
    let reference = p2u::runtime::build_plan(&original, &options).unwrap();
    let mut live = p2u::ProgressiveModel::from_base(&enc.base, options).unwrap();
    let stage0 = live.run(feeds(true)).unwrap();
    assert_eq!(stage0.status.stage, 0);
    // onnxruntime runs the base (its If reads the lifted, dequantized weight from the main graph)
    let cond = Tensor::from(true);
    compare_with_onnxruntime("if-base", &enc.base, &[("x", &x), ("cond", &cond)], &stage0.outputs[0], &[]);
    live.feed(&enc.stream).unwrap();
    for c in [true, false] {
        let got = live.run(feeds(c)).unwrap();
        assert!(got.status.exact);
        assert_eq!(output_bits(&got.outputs), output_bits(&reference.run(feeds(c)).unwrap()), "cond {c}");
    }
    assert_ne!(output_bits(&stage0.outputs), output_bits(&reference.run(feeds(true)).unwrap()));
    // at batch 3 the branches' declared output shapes ([1, 32]) no longer hold: dropped there too
    let at3 = p2u::RuntimeOptions { input_shapes: vec![vec![3, 16], vec![]], ..Default::default() };
    let x3 = input(&[3, 16], 5, -1.0, 1.0);
    let mut live = p2u::ProgressiveModel::from_base(&enc.base, at3.clone()).unwrap();
    live.feed(&enc.stream).unwrap();
    let got = live.run(vec![x3.clone(), Tensor::from(false)]).unwrap();
    assert_eq!(got.outputs[0].shape(), [3, 4]);
    let want = p2u::runtime::build_plan(&original, &at3).unwrap().run(vec![x3, Tensor::from(false)]).unwrap();
    assert_eq!(output_bits(&got.outputs), output_bits(&want));
}

#[test]
fn weights_in_a_subgraph_tract_cannot_run_are_refused_before_any_work() {
    use p2u_encode::onnx::{f32_tensor, value_info};
    use tract_onnx::pb::{attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, GraphProto};
    // a Loop (tract has no Loop) whose body multiplies by a weight
    let body = GraphProto {
        name: "body".into(),
        initializer: vec![f32_tensor("Wl", &[8, 8], &[0.1; 64])],
        node: vec![node("Identity", &["cond_in"], "cond_out", vec![]), node("MatMul", &["v_in", "Wl"], "v_out", vec![])],
        input: vec![value_info("i", DataType::Int64, &[]), value_info("cond_in", DataType::Bool, &[]), value_info("v_in", DataType::Float, &[1, 8])],
        output: vec![value_info("cond_out", DataType::Bool, &[]), value_info("v_out", DataType::Float, &[1, 8])],
        ..Default::default()
    };
    let mut lp = node("Loop", &["n", "", "v"], "out", vec![AttributeProto { name: "body".into(), r#type: AttributeType::Graph as i32, g: Some(body), ..Default::default() }]);
    lp.name = "repeat".into();
    let looping = model(
        "looping",
        vec![lp],
        vec![p2u_encode::onnx::int64_tensor("n", &[], &[3])],
        vec![value_info("v", DataType::Float, &[1, 8])],
        vec![value_info("out", DataType::Float, &[1, 8])],
    );
    let e = p2u_encode::encode(&looping, "looping", file_info("looping", &[]), &fixture_options(), &mut |_| panic!("no work before the refusal"))
        .err()
        .unwrap();
    let text = e.to_string();
    assert!(matches!(e, p2u::Error::Unsupported(_)), "{text}");
    assert!(
        text.contains("the graph has subgraphs (Loop \"repeat\") (1 weights inside them: \"Wl\") and tract cannot run it"),
        "{text}"
    );
}
