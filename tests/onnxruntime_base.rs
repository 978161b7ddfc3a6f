//! onnxruntime (Python, from PyPI) runs the base: it passes onnx.checker and
//! its outputs match p2u's stage-0 outputs in tract to 1e-4 of the output
//! range (the two engines sum in different orders; same weights, same
//! dequantization rule), with the same arg-max.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use p2u::encoder::file_info;
use p2u::EncodeOptions;

const TOLERANCE: &str = "1e-4";

fn check_with_onnxruntime(name: &str, enc: &p2u::Encoded, shape: &[usize], lo: f32, hi: f32) {
    let dir = std::env::temp_dir().join(format!("p2u-ort-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let x = input(shape, 9, lo, hi);
    let mut live = load_base(enc, shape);
    let out = live.run(vec![x.clone()]).unwrap();
    assert_eq!(out.status.stage, 0);
    let f32s = |v: Vec<f32>| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(dir.join("base.onnx"), &enc.base).unwrap();
    std::fs::write(dir.join("input.f32"), f32s(values(&x))).unwrap();
    std::fs::write(dir.join("p2u.f32"), f32s(values(&out.outputs[0]))).unwrap();
    let shape_arg = shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ort_check.py");
    let result = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(script)
        .arg(dir.join("base.onnx"))
        .arg(dir.join("input.f32"))
        .arg(&shape_arg)
        .arg(dir.join("p2u.f32"))
        .arg(TOLERANCE)
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
    let model = p2u::onnx::load_model(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let enc = p2u::encode(&model, "mnv2", file_info("mnv2", &bytes), &EncodeOptions::default(), &mut |_| {}).unwrap();
    check_with_onnxruntime("mobilenetv2", &enc, &[1, 3, 224, 224], -2.0, 2.0);
}

#[test]
fn onnxruntime_runs_a_calibrated_mixed_precision_base() {
    let calib = p2u::calibrate::Calibration::new(FIXTURE_INPUT[1..].to_vec(), smooth_items(64, 3)).unwrap();
    let opts = EncodeOptions {
        calibration: Some(std::sync::Arc::new(calib)),
        base_budget: Some(p2u::encoder::BaseBudget::BitsPerWeight(2.5)),
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
