//! The `p2u` command line on real files: encode (single-file and external
//! data), inspect, export, verify, and clear errors for unsupported models.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use tract_onnx::pb::tensor_proto::DataType;

fn p2u(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2u")).args(args.iter().map(|a| a.as_ref())).output().expect("p2u runs")
}

/// p2u with `args` fails with exit code 1, says `needle` and does not panic.
fn refused(args: &[&dyn AsRef<std::ffi::OsStr>], needle: &str) {
    let o = p2u(args);
    let t = output_text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains(needle), "{t} lacks {needle:?}");
    assert!(!t.contains("panicked"), "{t}");
}

fn write_model(dir: &Path, name: &str, m: &tract_onnx::pb::ModelProto) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, p2u_encode::onnx::encode_model(m)).unwrap();
    p
}

#[test]
fn encode_inspect_export_verify() {
    let dir = scratch("roundtrip");
    let model = write_model(&dir, "fixture.onnx", &fixture_model());
    let out = dir.join("enc");
    let o = p2u(&[&"encode", &model, &"-o", &out, &"--min-elements", &"16", &"--stages", &"4,8"]);
    assert!(o.status.success(), "{}", output_text(&o));
    for f in ["fixture.base.onnx", "fixture.p2u", "fixture.json"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let o = p2u(&[&"inspect", &out]);
    assert!(o.status.success(), "{}", output_text(&o));
    let t = output_text(&o);
    assert!(t.contains("exact") && t.contains("W1") && t.contains("refine"), "{t}");

    let o = p2u(&[&"verify", &model, &out]);
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(output_text(&o).contains("bit-identical"));

    // export stage 0 and the final stage; the final export has the original weights
    let final_onnx = dir.join("final.onnx");
    let o = p2u(&[&"export", &out, &"--stage", &"3", &"-o", &final_onnx]);
    assert!(o.status.success(), "{}", output_text(&o));
    let exported = p2u_encode::onnx::load_model(&final_onnx).unwrap();
    let orig = p2u_encode::onnx::extract_weights(&fixture_model(), 1).unwrap();
    let got = p2u_encode::onnx::extract_weights(&exported, 1).unwrap();
    for w in &orig {
        let g = got.iter().find(|g| g.name == w.name).unwrap_or_else(|| panic!("{} missing", w.name));
        assert_eq!(g.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), w.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }
    let stage0 = dir.join("stage0.onnx");
    assert!(p2u(&[&"export", &out, &"--stage", &"0", &"-o", &stage0]).status.success());
    let s0 = p2u_encode::onnx::extract_weights(&p2u_encode::onnx::load_model(&stage0).unwrap(), 1).unwrap();
    let w1 = s0.iter().find(|w| w.name == "W1").unwrap();
    assert_ne!(w1.values, orig.iter().find(|w| w.name == "W1").unwrap().values, "stage 0 is the 4-bit base");
    assert!(!p2u(&[&"export", &out, &"--stage", &"9", &"-o", &stage0]).status.success());

    // verify against another model fails with a non-zero exit code
    let mut other = fixture_model();
    let g = other.graph.as_mut().unwrap();
    g.initializer.iter_mut().find(|t| t.name == "P").unwrap().raw_data[5] ^= 0x40;
    let other_path = write_model(&dir, "other.onnx", &other);
    let o = p2u(&[&"verify", &other_path, &out]);
    assert!(!o.status.success());
    assert!(output_text(&o).contains("differs"), "{}", output_text(&o));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn external_data_models_encode_and_verify() {
    let dir = scratch("external");
    let mut m = fixture_model();
    let mut blob = vec![];
    for t in &mut m.graph.as_mut().unwrap().initializer {
        let offset = blob.len();
        blob.extend_from_slice(&t.raw_data);
        let entry = |k: &str, v: String| tract_onnx::pb::StringStringEntryProto { key: k.into(), value: v };
        t.external_data = vec![
            entry("location", "weights.bin".into()),
            entry("offset", offset.to_string()),
            entry("length", t.raw_data.len().to_string()),
        ];
        t.data_location = Some(tract_onnx::pb::tensor_proto::DataLocation::External as i32);
        t.raw_data.clear();
    }
    std::fs::write(dir.join("weights.bin"), &blob).unwrap();
    let model = write_model(&dir, "ext.onnx", &m);
    let out = dir.join("enc");
    let o = p2u(&[&"encode", &model, &"-o", &out, &"--min-elements", &"16"]);
    assert!(o.status.success(), "{}", output_text(&o));
    let o = p2u(&[&"verify", &model, &out]);
    assert!(o.status.success(), "{}", output_text(&o));
    // the manifest's original covers the weights file too
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("ext.json")).unwrap()).unwrap();
    let data = &manifest["original_data"];
    assert_eq!(data.as_array().map(Vec::len), Some(1), "{manifest}");
    assert_eq!(data[0]["file"], "weights.bin");
    assert_eq!(data[0]["bytes"], blob.len() as u64);
    assert_eq!(data[0]["sha256"], p2u::format::hex(&p2u::format::sha256(&blob)));
    let o = p2u(&[&"inspect", &out]);
    let t = output_text(&o);
    assert!(t.contains("external data weights.bin"), "{t}");
    let last: f64 = t
        .lines()
        .find(|l| l.trim_start().starts_with("3 "))
        .and_then(|l| l.split_whitespace().nth(5))
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap();
    assert!(last < 150.0, "the exact stage's share of the fp32 model (stub + weights; the stub alone made it 7×): {last}%\n{t}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `value_info` of `name` with `dims`, where `None` is the symbol `N`.
fn symbolic(name: &str, dims: &[Option<i64>]) -> tract_onnx::pb::ValueInfoProto {
    use tract_onnx::pb::{tensor_shape_proto::dimension::Value, tensor_shape_proto::Dimension, type_proto, TensorShapeProto, TypeProto};
    let dim = |d: &Option<i64>| Dimension {
        value: Some(match d {
            Some(n) => Value::DimValue(*n),
            None => Value::DimParam("N".into()),
        }),
        ..Default::default()
    };
    let shape = TensorShapeProto { dim: dims.iter().map(dim).collect() };
    let tensor = type_proto::Tensor { elem_type: DataType::Float as i32, shape: Some(shape) };
    tract_onnx::pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto { value: Some(type_proto::Value::TensorType(tensor)), ..Default::default() }),
        ..Default::default()
    }
}

#[test]
fn dynamic_batch_models_verify_export_and_run_at_any_batch() {
    let dir = scratch("dynamic");
    let mut m = fixture_model();
    let g = m.graph.as_mut().unwrap();
    g.input[0] = symbolic("x", &[None, Some(8), Some(16), Some(16)]);
    let out_name = g.output[0].name.clone();
    g.output[0] = symbolic(&out_name, &[None, Some(32)]);
    // what shape inference writes for a dynamic batch: symbolic value_info
    g.value_info = vec![symbolic("r", &[None, Some(16), Some(16), Some(16)]), symbolic("f", &[None, Some(16)])];
    let model = write_model(&dir, "dyn.onnx", &m);
    let out = dir.join("enc");
    for args in [
        vec![&"encode" as &dyn AsRef<std::ffi::OsStr>, &model, &"-o", &out, &"--min-elements", &"16", &"-q"],
        vec![&"verify", &model, &out],
    ] {
        let o = p2u(&args);
        assert!(o.status.success(), "{}", output_text(&o));
    }
    // export keeps the original's symbolic signature
    let exported = dir.join("s0.onnx");
    let o = p2u(&[&"export", &out, &"--stage", &"0", &"-o", &exported]);
    assert!(o.status.success(), "{}", output_text(&o));
    let e = p2u_encode::onnx::load_model(&exported).unwrap();
    let inputs = p2u_encode::onnx::declared_inputs(&e).unwrap();
    assert_eq!(inputs[0].dims, [None, Some(8), Some(16), Some(16)]);
    assert_eq!(inputs[0].symbols[0].as_deref(), Some("N"));
    // run at batch 3, exact stage: the fp32 original's outputs, bit for bit
    let shape = [3, 8, 16, 16];
    let x = input(&shape, 4, -1.0, 1.0);
    let xf = dir.join("x.f32");
    std::fs::write(&xf, values(&x).iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let yf = dir.join("y.f32");
    let o = p2u(&[&"run", &out, &"--input", &xf, &"--dims", &"3,8,16,16", &"--stage", &"3", &"-o", &yf]);
    assert!(o.status.success(), "{}", output_text(&o));
    let got: Vec<u32> = std::fs::read(&yf).unwrap().chunks(4).map(|b| u32::from_le_bytes(b.try_into().unwrap())).collect();
    assert_eq!(got, output_bits(&reference_outputs(&fixture_model(), &shape, &x)));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn input_shape_gives_synthetic_inputs_the_shape_a_dynamic_model_needs() {
    let dir = scratch("input-shape");
    // a symbolic H and W that a Reshape pins to 16 × 16
    let mut r = Rng(8);
    let w: Vec<f32> = (0..2048 * 16).map(|_| r.gauss(0.05)).collect();
    let shape = p2u_encode::onnx::f32_tensor("shape", &[], &[]);
    let shape = tract_onnx::pb::TensorProto {
        dims: vec![2],
        data_type: DataType::Int64 as i32,
        raw_data: [1i64, 2048].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..shape
    };
    let m = model(
        "pinned",
        vec![node("Reshape", &["x", "shape"], "flat", vec![]), node("MatMul", &["flat", "W"], "y", vec![])],
        vec![shape, p2u_encode::onnx::f32_tensor("W", &[2048, 16], &w)],
        vec![symbolic("x", &[Some(1), Some(8), None, None])],
        vec![value_info("y", &[1, 16])],
    );
    let path = write_model(&dir, "pinned.onnx", &m);
    let out = dir.join("enc");
    let o = p2u(&[&"encode", &path, &"-o", &out]);
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(output_text(&o).contains("could not be measured") && output_text(&o).contains("--input-shape"), "{}", output_text(&o));
    let o = p2u(&[&"encode", &path, &"-o", &out, &"--input-shape", &"1,8,16,16"]);
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(!output_text(&o).contains("could not be measured") && output_text(&o).contains("base budget"), "{}", output_text(&o));
    // verify compares weights: it needs no shape the model runs at (1 × 1 here would not)
    let o = p2u(&[&"verify", &path, &out]);
    assert!(o.status.success(), "{}", output_text(&o));
    for (bad, needle) in [
        ("1,8,x", "--input-shape: \"1,8,x\""),
        ("1,8,16", "input shape [1, 8, 16] for \"x\", which is declared"),
        ("y=1,8,16,16", "the model's inputs are [\"x\"]"),
    ] {
        refused(&[&"encode", &path, &"-o", &out, &"--input-shape", &bad], needle);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn run_takes_named_typed_inputs_and_writes_every_output_as_npy() {
    let dir = scratch("run-named");
    let m = text_fixture();
    let path = write_model(&dir, "text.onnx", &m);
    let out = dir.join("enc");
    let o = p2u(&[&"encode", &path, &"-o", &out, &"--min-elements", &"16", &"-q"]);
    assert!(o.status.success(), "{}", output_text(&o));
    let ids: Vec<i64> = (0..TEXT_LEN as i64).map(|i| (i * 7 + 3) % 50).collect();
    let mask: Vec<i64> = (0..TEXT_LEN as i64).map(|i| (i < 6) as i64).collect();
    let int64s = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(dir.join("ids.npy"), npy_bytes("<i8", "(1, 8)", &int64s(&ids))).unwrap();
    std::fs::write(dir.join("mask.npy"), npy_bytes("<i8", "(1, 8)", &int64s(&mask))).unwrap();
    let (ids_arg, mask_arg) = (format!("ids={}", dir.join("ids.npy").display()), format!("mask={}", dir.join("mask.npy").display()));
    // named, in the other order than the model's
    let ys = dir.join("ys");
    let o = p2u(&[&"run", &out, &"--input", &mask_arg, &"--input", &ids_arg, &"--outputs", &ys, &"--json"]);
    assert!(o.status.success(), "{}", output_text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["exact"], true);
    assert_eq!(j["outputs"][0]["name"], "y");
    assert_eq!(j["outputs"][0]["dims"], serde_json::json!([1, 4]));
    let (dims, values) = p2u_encode::calibrate::data::read_npy_array(&std::fs::read(ys.join("y.npy")).unwrap(), "y.npy").unwrap();
    assert_eq!(dims, [1, 4]);
    let shape = [1, TEXT_LEN];
    let reference = p2u::runtime::build_plan(&m, &p2u::RuntimeOptions { input_shapes: vec![shape.to_vec(); 2], ..Default::default() })
        .unwrap()
        .run(vec![
            tract_onnx::prelude::Tensor::from_shape(&shape, &ids).unwrap(),
            tract_onnx::prelude::Tensor::from_shape(&shape, &mask).unwrap(),
        ])
        .unwrap();
    let p2u_encode::calibrate::Values::F32(got) = values else { panic!("y.npy is float32") };
    assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), output_bits(&reference), "the original's outputs, bit for bit");
    // what a wrong call gets
    let unnamed_f32 = dir.join("x.f32");
    std::fs::write(&unnamed_f32, [0u8; 32]).unwrap();
    for (args, needle) in [
        (vec![ids_arg.clone()], "the model takes 2 inputs [\"ids\", \"mask\"]; --input was given 1 times"),
        (vec![ids_arg.clone(), format!("token_type={}", dir.join("mask.npy").display())], "--input token_type=…: the model's inputs are"),
        (vec![ids_arg.clone(), unnamed_f32.display().to_string()], "needs --dims"),
    ] {
        let mut a: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"run", &out, &"-o", &"y.f32"];
        for v in &args {
            a.push(&"--input");
            a.push(v);
        }
        refused(&a, needle);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn unsupported_models_get_a_clear_message() {
    let dir = scratch("unsupported");
    let out = dir.join("enc");
    // float64 weights
    let mut fp64 = fixture_model();
    let w = fp64.graph.as_mut().unwrap().initializer.iter_mut().find(|t| t.name == "W1").unwrap();
    w.data_type = DataType::Double as i32;
    w.raw_data = w.raw_data.chunks_exact(4).flat_map(|c| (f32::from_le_bytes(c.try_into().unwrap()) as f64).to_le_bytes()).collect();
    // already quantized
    let mut quantized = fixture_model();
    quantized.graph.as_mut().unwrap().node[1].op_type = "QLinearConv".into();
    // already quantized by hand: INT8 codes → Cast → Mul by a scale
    let mut cast = fixture_model();
    let g = cast.graph.as_mut().unwrap();
    let w = g.initializer.iter_mut().find(|t| t.name == "W1").unwrap();
    let count: i64 = w.dims.iter().product();
    w.name = "W1_codes".into();
    w.data_type = DataType::Int8 as i32;
    w.raw_data = (0..count).map(|i| (i % 15) as u8).collect();
    w.float_data.clear();
    g.initializer.push(p2u_encode::onnx::f32_tensor("W1_scale", &[], &[0.01]));
    let to_float = tract_onnx::pb::AttributeProto { name: "to".into(), i: DataType::Float as i64, ..Default::default() };
    let node = |op: &str, inputs: &[&str], output: &str, attribute| tract_onnx::pb::NodeProto {
        op_type: op.into(),
        name: format!("{op}_{output}"),
        input: inputs.iter().map(|i| i.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    };
    g.node.insert(0, node("Mul", &["W1_float", "W1_scale"], "W1", vec![]));
    g.node.insert(0, node("Cast", &["W1_codes"], "W1_float", vec![to_float]));
    // a weight inside a subgraph
    let mut sub = fixture_model();
    let body = tract_onnx::pb::GraphProto {
        initializer: vec![p2u_encode::onnx::f32_tensor("inner_w", &[64, 64], &vec![0.5; 4096])],
        ..Default::default()
    };
    let g = sub.graph.as_mut().unwrap();
    g.node.push(tract_onnx::pb::NodeProto {
        op_type: "If".into(),
        name: "branch".into(),
        input: vec!["cond".into()],
        output: vec!["z".into()],
        attribute: vec![tract_onnx::pb::AttributeProto { name: "then_branch".into(), g: Some(body), ..Default::default() }],
        ..Default::default()
    });
    for (name, m, needle) in [
        ("fp64", fp64, "weight \"W1\" is DOUBLE: p2u encodes float32, float16 and bfloat16 weights"),
        ("quantized", quantized, "already quantized"),
        ("cast", cast, "weight \"W1_codes\" is INT8 read by Cast node \"Cast_W1_float\": the model is already quantized"),
        ("subgraph", sub, "\"inner_w\""),
    ] {
        let path = write_model(&dir, &format!("{name}.onnx"), &m);
        let o = p2u(&[&"encode", &path, &"-o", &out, &"--min-elements", &"16"]);
        let t = output_text(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {t}");
        assert!(t.contains("p2u: error: unsupported model") && t.contains(needle), "{name}: {t}");
        assert!(!t.contains("panicked"), "{name}: {t}");
    }
    let o = p2u(&[&"encode", &dir.join("missing.onnx"), &"-o", &out]);
    assert_eq!(o.status.code(), Some(1));
    assert!(output_text(&o).contains("missing.onnx"), "{}", output_text(&o));
    let o = p2u(&[&"encode", &dir.join("missing.onnx"), &"-o", &out, &"--base-bits", &"9"]);
    assert!(output_text(&o).contains("base bits 9"), "options are checked before any file is read: {}", output_text(&o));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn calibrated_mixed_precision_encode_from_npy_verifies() {
    let dir = scratch("calibrated");
    let model = write_model(&dir, "fixture.onnx", &fixture_model());
    let calib = dir.join("calib.npy");
    std::fs::write(&calib, npy("<f4", "(48, 8, 16, 16)", &smooth_items(48, 5))).unwrap();
    let out = dir.join("enc");
    let o = p2u(&[&"encode", &model, &"-o", &out, &"--min-elements", &"16", &"--calibration", &calib, &"--base-budget", &"3b"]);
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(output_text(&o).contains("calibrating") && output_text(&o).contains("measuring sensitivity"), "{}", output_text(&o));
    let o = p2u(&[&"verify", &model, &out]);
    assert!(o.status.success() && output_text(&o).contains("bit-identical"), "{}", output_text(&o));
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("fixture.json")).unwrap()).unwrap();
    let widths: std::collections::BTreeSet<u64> = manifest["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            8 * t["base_served_bytes"].as_u64().unwrap()
                / t["dims"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).product::<u64>()
        })
        .collect();
    assert!(widths.len() >= 2, "mixed widths (served bits per weight): {widths:?}");

    let o = p2u(&[&"encode", &model, &"-o", &out, &"--preprocess", &"{}"]);
    assert!(!o.status.success() && output_text(&o).contains("--calibration"), "{}", output_text(&o));
    let o = p2u(&[&"encode", &model, &"-o", &out, &"--input-range", &"1,0"]);
    assert!(!o.status.success() && output_text(&o).contains("LO,HI"), "{}", output_text(&o));
    std::fs::write(&calib, b"not numpy").unwrap();
    let o = p2u(&[&"encode", &model, &"-o", &out, &"--calibration", &calib]);
    assert!(!o.status.success() && output_text(&o).contains(".npy"), "{}", output_text(&o));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn hostile_manifests_and_closed_pipes_are_errors_not_panics() {
    let dir = scratch("hostile");
    let model = write_model(&dir, "fixture.onnx", &fixture_model());
    let out = dir.join("enc");
    let o = p2u(&[&"encode", &model, &"-o", &out, &"--base-bits", &"4", &"--order", &"layer"]);
    assert!(o.status.success(), "{}", output_text(&o));
    let manifest_path = out.join("fixture.json");
    let good = std::fs::read_to_string(&manifest_path).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
        f(&mut v);
        std::fs::write(&manifest_path, serde_json::to_string(&v).unwrap()).unwrap();
    };
    // a stage that does not exist, for run and export
    let x = dir.join("x.f32");
    std::fs::write(&x, vec![0u8; 4 * FIXTURE_INPUT.iter().product::<usize>()]).unwrap();
    refused(&[&"run", &out, &"--input", &x, &"--dims", &"1,8,16,16", &"--stage", &"99", &"-o", &dir.join("y.f32")], "--stage 99");
    refused(&[&"export", &out, &"--stage", &"99", &"-o", &dir.join("y.onnx")], "--stage 99");
    // a short hash prints; a base file outside the directory is refused
    edit(&|v| v["original"]["sha256"] = "ab".into());
    let o = p2u(&[&"inspect", &out]);
    assert!(o.status.success(), "{}", output_text(&o));
    edit(&|v| v["base"]["file"] = "../../etc/passwd".into());
    refused(&[&"inspect", &out], "not a plain file name");
    edit(&|v| v["stages"] = serde_json::json!([]));
    refused(&[&"export", &out, &"--stage", &"0", &"-o", &dir.join("y.onnx")], "need stages 0, 1");
    // a base that is not the manifest's
    std::fs::write(&manifest_path, &good).unwrap();
    let base = out.join("fixture.base.onnx");
    let mut bytes = std::fs::read(&base).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&base, &bytes).unwrap();
    refused(&[&"verify", &model, &out], "SHA-256");
    // a closed stdout ends the process quietly
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_p2u"))
        .args(["inspect".as_ref(), out.as_os_str()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success() && !err.contains("panicked"), "{status:?} {err}");
}

#[test]
fn help_usage_errors_quiet_and_json_output() {
    // per-subcommand help is not an error, and says what the flags are
    for cmd in ["encode", "inspect", "export", "verify", "run"] {
        let o = p2u(&[&cmd, &"--help"]);
        assert!(o.status.success(), "{cmd} --help: {}", output_text(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("Usage: p2u {cmd}")), "{}", output_text(&o));
    }
    let o = p2u(&[&"encode", &"--base-bitz", &"4"]);
    assert_eq!(o.status.code(), Some(2), "a usage error: {}", output_text(&o));
    assert!(output_text(&o).contains("--base-bitz") && output_text(&o).contains("Usage: p2u encode"), "{}", output_text(&o));
    let o = p2u(&[&"encode", &"m.onnx", &"-o", &"out", &"--base-bits", &"4", &"--base-budget", &"3b"]);
    assert_eq!(o.status.code(), Some(2), "conflicting flags: {}", output_text(&o));

    // --quiet: nothing on stderr; --json: one JSON document on stdout
    let dir = scratch("json");
    let model = write_model(&dir, "fixture.onnx", &fixture_model());
    let out = dir.join("enc");
    let o = p2u(&[&"--quiet", &"encode", &model, &"-o", &out, &"--min-elements", &"16", &"--json"]);
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(o.stderr.is_empty(), "--quiet printed: {}", String::from_utf8_lossy(&o.stderr));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).expect("encode --json prints the manifest");
    assert_eq!(m["name"], "fixture");
    let o = p2u(&[&"inspect", &out, &"--json"]);
    let i: serde_json::Value = serde_json::from_slice(&o.stdout).expect("inspect --json");
    assert_eq!(i["stages"], m["stages"]);
    let o = p2u(&[&"verify", &model, &out, &"--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("verify --json");
    assert!(o.status.success() && v["ok"] == true && v["float_tensors"].as_u64().unwrap() > 0, "{v}");
    let x = dir.join("x.f32");
    std::fs::write(&x, vec![0u8; 4 * FIXTURE_INPUT.iter().product::<usize>()]).unwrap();
    let dims = FIXTURE_INPUT.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",");
    let o = p2u(&[&"run", &out, &"--input", &x, &"--dims", &dims, &"--stage", &"0", &"-o", &dir.join("y.f32"), &"--json"]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("run --json");
    assert!(o.status.success() && r["stage"] == 0 && r["exact"] == false, "{r}");
    // a progress bar is for terminals: a log gets whole lines, no carriage returns
    let o = p2u(&[&"encode", &model, &"-o", &out, &"--min-elements", &"16"]);
    assert!(o.status.success() && !o.stderr.contains(&b'\r'), "{}", output_text(&o));
}

#[test]
fn labels_and_model_card_reach_the_manifest() {
    let dir = scratch("labels");
    let model = write_model(&dir, "fixture.onnx", &fixture_model());
    let classes = p2u_encode::onnx::declared_outputs(&fixture_model()).unwrap()[0].dims.last().copied().flatten().expect("fixed classes");
    let labels = dir.join("labels.txt");
    std::fs::write(&labels, (0..classes).map(|i| format!("class {i}\n")).collect::<String>()).unwrap();
    let card = dir.join("card.json");
    std::fs::write(&card, r#"{"intended_use": "tests", "license": "MIT"}"#).unwrap();
    let out = dir.join("enc");
    let o = p2u(&[&"encode", &model, &"-o", &out, &"--min-elements", &"16", &"--labels", &labels, &"--card", &card]);
    assert!(o.status.success(), "{}", output_text(&o));
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("fixture.json")).unwrap()).unwrap();
    assert_eq!(m["labels"].as_array().unwrap().len(), classes);
    assert_eq!(m["labels"][0], "class 0");
    assert_eq!(m["card"]["intended_use"], "tests");
    // a label count that is not the model's class count is refused before any work
    std::fs::write(&labels, "only\none\n").unwrap();
    let o = p2u(&[&"encode", &model, &"-o", &out, &"--labels", &labels]);
    assert_eq!(o.status.code(), Some(1));
    assert!(output_text(&o).contains(&format!("2 labels, but the model's first output has {classes} classes")), "{}", output_text(&o));
}

#[test]
fn verify_proves_a_float16_model_restored_to_its_own_bits() {
    let dir = scratch("fp16");
    let half = half_model(&fixture_model(), DataType::Float16);
    let path = write_model(&dir, "half.onnx", &half);
    let out = dir.join("enc");
    let o = p2u(&[&"encode", &path, &"-o", &out, &"--min-elements", &"16"]);
    assert!(o.status.success() && output_text(&o).contains("converted the float16/bfloat16 graph to float32"), "{}", output_text(&o));
    let o = p2u(&[&"verify", &path, &out]);
    assert!(o.status.success() && output_text(&o).contains("of them float16/bfloat16, served as their exact float32 upcasts"), "{}", output_text(&o));
    // one half-precision step off in one weight of the original is caught
    let mut other = half.clone();
    let w = other.graph.as_mut().unwrap().initializer.iter_mut().find(|t| t.name == "W1").unwrap();
    w.raw_data[0] ^= 1;
    let other_path = write_model(&dir, "other.onnx", &other);
    let o = p2u(&[&"verify", &other_path, &out]);
    assert!(!o.status.success() && output_text(&o).contains("tensor \"W1\" differs from the original"), "{}", output_text(&o));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn verify_covers_weights_lifted_out_of_subgraphs() {
    let dir = scratch("subgraph-verify");
    let m = branching_model();
    let path = write_model(&dir, "branching.onnx", &m);
    let out = dir.join("enc");
    // shapes given per input; `cond=` is the scalar
    let o = p2u(&[&"encode", &path, &"-o", &out, &"--min-elements", &"16", &"--input-shape", &"x=1,16", &"--input-shape", &"cond="]);
    assert!(o.status.success() && output_text(&o).contains("lifted 2 weights out of the subgraphs of \"branch\""), "{}", output_text(&o));
    let o = p2u(&[&"verify", &path, &out, &"--json"]);
    assert!(o.status.success(), "{}", output_text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((j["float_tensors"].as_u64(), j["quantized"].as_u64()), (Some(3), Some(3)), "{j}");
    // a change to a weight inside a branch is caught
    let mut other = m.clone();
    let g = other.graph.as_mut().unwrap();
    let then = g.node[0].attribute[0].g.as_mut().unwrap();
    then.initializer[0].raw_data[5] ^= 1;
    let other_path = write_model(&dir, "other.onnx", &other);
    let o = p2u(&[&"verify", &other_path, &out]);
    assert!(!o.status.success() && output_text(&o).contains("tensor \"Wt\" differs from the original"), "{}", output_text(&o));
    std::fs::remove_dir_all(&dir).ok();
}
