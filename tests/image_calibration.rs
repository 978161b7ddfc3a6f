//! Calibration from a folder of images: Fashion-MNIST test images written as
//! PNG files calibrate the real ResNet-20 (`../shared/models`) through a
//! declared preprocessing; the values match the documented preprocessing,
//! the calibrated base classifies held-out images within a point of fp32,
//! the stream still ends bit-exact, and bad folders or declarations give
//! clear errors.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use p2u_encode::calibrate::images::{self, Preprocess};
use p2u_encode::calibrate::Values;
use p2u::{ProgressiveModel, RuntimeOptions};
use p2u_encode::EncodeOptions;
use tract_onnx::prelude::Tensor;

const MEAN: f32 = 0.2860;
const STD: f32 = 0.3530;

fn fmnist() -> (Vec<u8>, Vec<u8>) {
    let bytes = std::fs::read(require(shared_models().join("fmnist_test.bin"))).unwrap();
    let (images, labels) = bytes.split_at(10_000 * 784);
    (images.to_vec(), labels.to_vec())
}

fn resnet() -> tract_onnx::pb::ModelProto {
    p2u_encode::onnx::load_model(&require(shared_models().join("resnet_fmnist.onnx"))).unwrap()
}

/// Writes images `range` as 28×28 grayscale PNGs.
fn write_pngs(dir: &Path, images: &[u8], range: std::ops::Range<usize>) {
    for i in range {
        let img = image::GrayImage::from_raw(28, 28, images[i * 784..(i + 1) * 784].to_vec()).unwrap();
        img.save(dir.join(format!("img{i:04}.png"))).unwrap();
    }
}

#[test]
fn pngs_calibrate_the_real_resnet_as_declared_and_the_stream_stays_exact() {
    let (images, labels) = fmnist();
    let dir = scratch("ok");
    write_pngs(&dir, &images, 9000..9064);
    let model = resnet();
    let spec = Preprocess::from_json(&format!(r#"{{"mean": [{MEAN}], "std": [{STD}]}}"#)).unwrap();
    let resolved = images::resolve(&spec, &model).unwrap();
    assert_eq!((resolved.size, resolved.channels, resolved.layout), ([28, 28], images::Channels::Gray, images::Layout::Nchw));
    let files = images::image_files(&dir).unwrap();
    assert_eq!(files.len(), 64);
    let calib = images::from_images(&files, &resolved).unwrap();
    assert_eq!((calib.len(), calib.item_dims()), (64, &[1usize, 28, 28][..]));
    let Values::F32(v) = &calib.inputs()[0].values else { panic!() };
    for (k, (&got, &px)) in v.iter().zip(&images[9000 * 784..9064 * 784]).enumerate() {
        let want = (px as f32 / 255.0 - MEAN) / STD;
        assert!((got - want).abs() < 1e-5, "value {k}: {got} vs {want}");
    }

    let opts = EncodeOptions { calibration: Some(Arc::new(calib)), ..EncodeOptions::default() };
    let bytes = std::fs::read(shared_models().join("resnet_fmnist.onnx")).unwrap();
    let enc = p2u_encode::encode(&model, "resnet", p2u_encode::encoder::file_info("resnet.onnx", &bytes), &opts, &mut |_| {}).unwrap();

    // held-out images (not among the calibration ones): the base within a point of fp32
    let n = 500;
    let x: Vec<f32> = images[..n * 784].iter().map(|&p| (p as f32 / 255.0 - MEAN) / STD).collect();
    let x = Tensor::from_shape(&[n, 1, 28, 28], &x).unwrap();
    let rt = RuntimeOptions { input_shapes: vec![vec![n, 1, 28, 28]], ..Default::default() };
    let accuracy = |y: &Tensor| {
        let y = values(y);
        (0..n).filter(|&i| (0..10).max_by(|&a, &b| y[i * 10 + a].total_cmp(&y[i * 10 + b])) == Some(labels[i] as usize)).count() as f64
            / n as f64
    };
    let fp32 = accuracy(&p2u::runtime::build_plan(&model, &rt).unwrap().run(vec![x.clone()]).unwrap()[0]);
    let mut live = ProgressiveModel::from_base(&enc.base, rt).unwrap();
    let base = accuracy(&live.run(vec![x.clone()]).unwrap().outputs[0]);
    assert!(base >= fp32 - 0.01, "calibrated base {base} vs fp32 {fp32}");
    live.feed(&enc.stream).unwrap();
    let exact = live.run(vec![x]).unwrap();
    assert!(exact.status.exact);
    assert_eq!(accuracy(&exact.outputs[0]), fp32);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resizing_and_cropping_follow_the_declaration() {
    let (images, _) = fmnist();
    let dir = scratch("resize");
    write_pngs(&dir, &images, 0..2);
    let model = resnet();
    let spec = Preprocess::from_json(r#"{"resize_shorter": 32, "crop": [28, 28], "scale": 1.0}"#).unwrap();
    let r = images::resolve(&spec, &model).unwrap();
    let item = images::load_image(&images::image_files(&dir).unwrap()[0], &r).unwrap();
    assert_eq!(item.len(), 784);
    assert!(item.iter().all(|&v| (0.0..=255.0).contains(&v)) && item.iter().any(|&v| v > 1.0), "scale 1 keeps 0..255");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_images_and_declarations_are_clear_errors() {
    let (images, _) = fmnist();
    let model = resnet();
    let err = |r: p2u::Result<()>| r.unwrap_err().to_string();
    assert!(err(Preprocess::from_json(r#"{"mean": [0.5], "sdt": [1]}"#).map(|_| ())).contains("unknown field `sdt`"));
    let resolve = |json: &str| err(images::resolve(&Preprocess::from_json(json).unwrap(), &model).map(|_| ()));
    assert!(resolve(r#"{"channels": "RGB"}"#).contains("1 channels"));
    assert!(resolve(r#"{"crop": [32, 32]}"#).contains("28×28"));
    assert!(resolve(r#"{"mean": [0.1, 0.2]}"#).contains("mean has 2"));
    assert!(resolve(r#"{"input": "pixels"}"#).contains("the model's inputs are"));
    assert!(resolve(r#"{"resize": [20, 20], "crop": [28, 28]}"#).contains("smaller than the crop"));

    let empty = scratch("empty");
    assert!(err(
        images::from_images(&images::image_files(&empty).unwrap(), &images::resolve(&Preprocess::default(), &model).unwrap()).map(|_| ())
    )
    .contains("no calibration image"));
    let dir = scratch("bad");
    write_pngs(&dir, &images, 0..1);
    std::fs::write(dir.join("broken.png"), b"this is not a png").unwrap();
    let r = images::resolve(&Preprocess::default(), &model).unwrap();
    let e = err(images::from_images(&images::image_files(&dir).unwrap(), &r).map(|_| ()));
    assert!(e.contains("broken.png"), "{e}");
    let tiny = scratch("tiny");
    image::GrayImage::from_raw(8, 8, vec![0; 64]).unwrap().save(tiny.join("small.png")).unwrap();
    let e = err(images::from_images(
        &images::image_files(&tiny).unwrap(),
        &images::resolve(&Preprocess::from_json(r#"{"crop": [28, 28]}"#).unwrap(), &model).unwrap(),
    )
    .map(|_| ()));
    assert!(e.contains("smaller than the crop"), "{e}");
    for d in [empty, dir, tiny] {
        std::fs::remove_dir_all(d).unwrap();
    }
}
