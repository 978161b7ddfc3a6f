//! Sensitivity measurement and calibration on fixture models: the default
//! (data-free) allocation is deterministic, fits its served budget and
//! beats a uniform 4-bit base; GPTQ rounding from user data lowers the
//! output error; rate-ordered, mixed-precision streams still refine to the
//! exact original; a two-input (int64 ids + mask) model calibrates from
//! named arrays and from synthetic inputs; bad calibration input is rejected.

mod common;

use std::sync::Arc;

use common::*;
use p2u_encode::calibrate::{self, Calibration, InputData, Origin, SyntheticSpec, Values};
use p2u_encode::encoder::{BaseBudget, ChunkOrder};
use p2u::format::stream::read_all;
use p2u_encode::quant::{self, apply_codes, Grid};
use p2u_encode::EncodeOptions;
use tract_onnx::prelude::Tensor;

fn calibration(count: usize, seed: u64) -> Arc<Calibration> {
    Arc::new(Calibration::new(FIXTURE_INPUT[1..].to_vec(), smooth_items(count, seed)).unwrap())
}

fn calibrated(opts: EncodeOptions) -> EncodeOptions {
    EncodeOptions { calibration: Some(calibration(96, 1)), ..opts }
}

/// Mean squared difference of the base model's outputs from the fp32
/// model's on held-out smooth items.
fn base_output_mse(enc: &p2u_encode::Encoded) -> f64 {
    let model = fixture_model();
    let mut base = load_base(enc, &FIXTURE_INPUT);
    let items = smooth_items(24, 99);
    let item: usize = FIXTURE_INPUT.iter().product();
    let mut se = 0.0;
    for x in items.chunks(item) {
        let x = Tensor::from_shape(&FIXTURE_INPUT, x).unwrap();
        let want = values(&reference_outputs(&model, &FIXTURE_INPUT, &x)[0]);
        let got = values(&base.run(vec![x]).unwrap().outputs[0]);
        se += want.iter().zip(&got).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum::<f64>() / want.len() as f64;
    }
    se / 24.0
}

/// Served bytes of a base's weights: kept tensors as coded, exact ones at 4 bytes each.
fn served(enc: &p2u_encode::Encoded, model: &tract_onnx::pb::ModelProto) -> u64 {
    let weights = p2u_encode::onnx::extract_weights(model, 16).unwrap();
    let exact: u64 =
        enc.manifest.exact_in_base.iter().map(|n| 4 * weights.iter().find(|w| &w.name == n).unwrap().values.len() as u64).sum();
    enc.manifest.tensors.iter().map(|t| t.base_served_bytes).sum::<u64>() + exact
}

fn refines_to_the_original(enc: &p2u_encode::Encoded) {
    let x = input(&FIXTURE_INPUT, 7, -1.0, 1.0);
    let want = output_bits(&reference_outputs(&fixture_model(), &FIXTURE_INPUT, &x));
    let mut live = load_base(enc, &FIXTURE_INPUT);
    live.feed(&enc.stream).unwrap();
    assert!(live.status().exact);
    assert_eq!(output_bits(&live.run(vec![x]).unwrap().outputs), want, "outputs bit-identical to the fp32 original");
}

#[test]
fn data_free_allocation_is_deterministic_and_fits_its_budget() {
    let model = fixture_model();
    let a = encode(&model, "fixture", &fixture_options());
    let b = encode(&model, "fixture", &fixture_options());
    assert_eq!((&a.base, &a.stream), (&b.base, &b.stream), "same model, same bytes");
    assert!(a.notes.iter().all(|n| n.starts_with("base budget: ")), "{:?}", a.notes);

    let uniform = encode(&model, "fixture", &fixture_uniform(4));
    let budget: u64 = uniform.manifest.tensors.iter().map(|t| t.base_served_bytes).sum();
    assert!(served(&a, &model) <= budget, "mixed base {} B over the uniform 4-bit base's {budget} B", served(&a, &model));
    let kinds: std::collections::BTreeSet<(u8, u64)> =
        a.manifest.tensors.iter().map(|t| (t.base_bits, 8 * t.base_served_bytes / t.dims.iter().product::<usize>() as u64)).collect();
    assert!(kinds.len() >= 2 || !a.manifest.exact_in_base.is_empty(), "sensitivity should spread the widths: {kinds:?}");
    refines_to_the_original(&a);
}

/// The real ResNet-20 on real Fashion-MNIST test images: the default,
/// data-free mixed base moves the logits less than a uniform 4-bit base of
/// the same served size, and classifies at least as well.
#[test]
fn data_free_allocation_beats_uniform_4_bit_on_a_real_model() {
    let path = require(shared_models().join("resnet_fmnist.onnx"));
    let model = p2u_encode::onnx::load_model(&path).unwrap();
    let data = std::fs::read(require(shared_models().join("fmnist_test.bin"))).unwrap();
    let n = 400;
    let x: Vec<f32> = data[..n * 784].iter().map(|&p| (p as f32 / 255.0 - 0.2860) / 0.3530).collect();
    let labels = &data[10_000 * 784..10_000 * 784 + n];
    let x = Tensor::from_shape(&[n, 1, 28, 28], &x).unwrap();
    let rt = p2u::RuntimeOptions { input_shapes: vec![vec![n, 1, 28, 28]], ..Default::default() };
    let fp32 = values(&p2u::runtime::build_plan(&model, &rt).unwrap().run(vec![x.clone()]).unwrap()[0]);
    let score = |opts: &EncodeOptions| {
        let enc = encode(&model, "resnet", opts);
        let y = values(&p2u::ProgressiveModel::from_base(&enc.base, rt.clone()).unwrap().run(vec![x.clone()]).unwrap().outputs[0]);
        let mse = y.iter().zip(&fp32).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum::<f64>() / y.len() as f64;
        let correct =
            (0..n).filter(|&i| (0..10).max_by(|&a, &b| y[i * 10 + a].total_cmp(&y[i * 10 + b])) == Some(labels[i] as usize)).count();
        (mse, correct)
    };
    let (mixed, flat) = (score(&EncodeOptions::default()), score(&EncodeOptions::uniform(4)));
    assert!(mixed.0 < flat.0, "logit MSE of the data-free mixed base {} vs uniform 4-bit {}", mixed.0, flat.0);
    assert!(mixed.1 >= flat.1, "correct of {n}: mixed {} vs uniform {}", mixed.1, flat.1);
}

#[test]
fn the_default_budget_is_the_smallest_ladder_base_within_its_tolerance() {
    let model = fixture_model();
    let fit = |tolerance| EncodeOptions { base_budget: Some(BaseBudget::Fit { max_bits: 4.0, tolerance }), ..fixture_options() };
    // every output change accepted: the ladder's smallest budget, a uniform 3-bit base's size
    let loose = encode(&model, "fixture", &fit(1e9));
    let three: u64 = encode(&model, "fixture", &fixture_uniform(3)).manifest.tensors.iter().map(|t| t.base_served_bytes).sum();
    assert!(served(&loose, &model) <= three, "fitted base {} B over the 3-bit size {three} B", served(&loose, &model));
    assert!(loose.notes.iter().any(|n| n.starts_with("base budget: 3 bits per weight, the smallest")), "{:?}", loose.notes);
    // none accepted: the 4-bit size, the very base that fixed budget gives
    let strict = encode(&model, "fixture", &fit(1e-30));
    let four = encode(&model, "fixture", &EncodeOptions { base_budget: Some(BaseBudget::BitsPerWeight(4.0)), ..fixture_options() });
    assert_eq!(strict.base, four.base);
    assert!(strict.notes.iter().any(|n| n.starts_with("base budget: 4 bits per weight (every smaller")), "{:?}", strict.notes);
    // the default lies between the two and says which it chose
    let default = encode(&model, "fixture", &fixture_options());
    let bytes = served(&default, &model);
    assert!(served(&loose, &model) <= bytes && bytes <= served(&four, &model), "default base {bytes} B");
    assert!(default.notes.iter().any(|n| n.contains("base budget")), "{:?}", default.notes);
    assert!(fit(0.0).validate().unwrap_err().to_string().contains("tolerance"));
}

#[test]
fn without_any_sensitivity_source_rate_order_and_budgets_are_refused() {
    for opts in [
        EncodeOptions { synthetic: None, base_budget: None, ..fixture_options() },
        EncodeOptions { synthetic: None, order: ChunkOrder::Layer, base_budget: Some(BaseBudget::Bytes(1000)), ..fixture_options() },
    ] {
        let e = opts.validate().unwrap_err().to_string();
        assert!(e.contains("synthetic") && e.contains("calibration"), "{e}");
    }
    let tiny = EncodeOptions { base_budget: Some(BaseBudget::Bytes(10)), ..fixture_options() };
    let bytes = p2u_encode::onnx::encode_model(&fixture_model());
    let e = p2u_encode::encode(&fixture_model(), "f", p2u_encode::encoder::file_info("f", &bytes), &tiny, &mut |_| {}).err().unwrap().to_string();
    assert!(e.contains("below the smallest base"), "{e}");
}

#[test]
fn calibration_lowers_layer_and_model_output_error_over_data_free() {
    let model = fixture_model();
    let weights = p2u_encode::onnx::extract_weights(&model, 16).unwrap();
    let calib = calibration(96, 1);
    let stats = calibrate::input_stats(&model, &weights, &calib).unwrap();
    let with_stats = stats.iter().filter(|s| s.is_some()).count();
    assert_eq!(with_stats, 6, "W1 (Conv), W2 (depthwise), G (Gemm), P, Q, K (MatMul)");
    let (mut free_total, mut gptq_total) = (0.0, 0.0);
    for (w, s) in weights.iter().zip(&stats) {
        let Some(s) = s else { continue };
        assert!(s.fits(w.values.len()) && s.samples > 0, "{}: {s:?}", w.name);
        let grid = Grid::choose(&w.dims, w.channel_axis, 0);
        let decode = |c: &quant::StageCodes| {
            let mut v = vec![0f32; w.values.len()];
            apply_codes(&mut v, &grid, c.bits, &c.packed(), &c.scales, &c.zeros);
            v
        };
        let free = s.output_error(&w.values, &decode(&quant::quantize_base(&w.values, &grid, 3, Some(4))));
        let code = quant::BaseCode::Clipped(3);
        let gptq = s.output_error(
            &w.values,
            &decode(&quant::quantize_base_calibrated(&w.values, &grid, code, Some(4), s, &quant::gptq::factors(s))),
        );
        assert!(gptq <= free * 1.001, "{}: GPTQ {gptq} vs data-free {free}", w.name);
        free_total += free;
        gptq_total += gptq;
    }
    assert!(gptq_total < 0.9 * free_total, "layer output error: GPTQ {gptq_total} vs data-free {free_total}");

    let base_only = |calib| EncodeOptions { refine_bits: vec![], calibration: calib, ..fixture_uniform(3) };
    let free = base_output_mse(&encode(&model, "fixture", &base_only(None)));
    let gptq = base_output_mse(&encode(&model, "fixture", &base_only(Some(calibration(96, 1)))));
    assert!(gptq < free, "model output error: GPTQ {gptq} vs data-free {free}");
}

#[test]
fn calibrated_encoding_is_deterministic() {
    let opts = calibrated(EncodeOptions { base_budget: Some(BaseBudget::BitsPerWeight(3.0)), ..fixture_options() });
    let a = encode(&fixture_model(), "fixture", &opts);
    let b = encode(&fixture_model(), "fixture", &opts);
    assert_eq!(a.base, b.base);
    assert_eq!(a.stream, b.stream);
}

#[test]
fn rate_ordered_mixed_precision_stream_reaches_the_exact_original() {
    let model = fixture_model();
    let budget = BaseBudget::BitsPerWeight(3.0);
    let enc = encode(&model, "fixture", &calibrated(EncodeOptions { base_budget: Some(budget), ..fixture_options() }));

    // the base fits the served size of a uniform 3-bit base (same calibration, same GPTQ codes)
    let uniform = encode(&model, "fixture", &calibrated(fixture_uniform(3)));
    let limit: u64 = uniform.manifest.tensors.iter().map(|t| t.base_served_bytes).sum();
    assert!(served(&enc, &model) <= limit, "base {} B over its budget {limit} B", served(&enc, &model));
    let widths: std::collections::BTreeSet<u64> =
        enc.manifest.tensors.iter().map(|t| 8 * t.base_served_bytes / t.dims.iter().product::<usize>() as u64).collect();
    assert!(widths.len() >= 2, "sensitivity should spread the widths: {widths:?}");

    // the chunks are not in stage order, and each tensor's stages still ascend
    let (_, chunks) = read_all(&enc.stream).unwrap();
    let stages: Vec<u8> = chunks.iter().map(|c| c.stage).collect();
    assert!(stages.windows(2).any(|w| w[0] > w[1]), "rate order interleaves stages: {stages:?}");
    for t in 0..enc.manifest.tensors.len() as u32 {
        let mine: Vec<u8> = chunks.iter().filter(|c| c.tensor == t).map(|c| c.stage).collect();
        assert_eq!(mine, (1..=mine.len() as u8).collect::<Vec<_>>());
    }
    // the last stage's chunks come last: they buy no accuracy
    let last = *stages.iter().max().unwrap();
    let first_exact = stages.iter().position(|&s| s == last).unwrap();
    assert!(stages[first_exact..].iter().all(|&s| s == last), "{stages:?}");
    refines_to_the_original(&enc);
}

fn text_items(count: usize, seed: u64) -> (Vec<i64>, Vec<i64>) {
    let mut r = Rng(seed);
    let ids = (0..count * TEXT_LEN).map(|_| r.below(50) as i64).collect();
    // variable lengths: a prefix of ones
    let mask = (0..count).flat_map(|_| {
        let len = 2 + r.below(TEXT_LEN - 1);
        (0..TEXT_LEN).map(move |i| (i < len) as i64)
    });
    (ids, mask.collect())
}

fn text_outputs(model: &tract_onnx::pb::ModelProto, ids: &[i64], mask: &[i64]) -> Vec<u32> {
    let shape = [1, TEXT_LEN];
    let plan =
        p2u::runtime::build_plan(model, &p2u::RuntimeOptions { input_shapes: vec![shape.to_vec(); 2], ..Default::default() }).unwrap();
    let y = plan.run(vec![Tensor::from_shape(&shape, ids).unwrap(), Tensor::from_shape(&shape, mask).unwrap()]).unwrap();
    output_bits(&y)
}

#[test]
fn a_two_input_text_model_calibrates_from_named_int64_arrays_and_from_synthetic_ids() {
    let model = text_fixture();
    let (ids, mask) = text_items(40, 3);
    let calib = Calibration::from_inputs(
        vec![
            InputData { name: Some("mask".into()), item_dims: vec![TEXT_LEN], values: Values::I64(mask) },
            InputData { name: Some("ids".into()), item_dims: vec![TEXT_LEN], values: Values::I64(ids) },
        ],
        Origin::Data,
    )
    .unwrap();
    let weights = p2u_encode::onnx::extract_weights(&model, 16).unwrap();
    let names: Vec<&str> = weights.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["E", "W", "C"], "the 1-D bias stays f32");
    let stats = calibrate::input_stats(&model, &weights, &calib).unwrap();
    assert!(stats[0].is_none() && stats[1].is_some() && stats[2].is_some(), "MatMul weights get Gram matrices, the Gather table does not");
    let d = calibrate::Distortion::new(&model, &weights, &calib, 16).unwrap();
    assert_eq!(d.items(), 16);
    let zeroed: Vec<Option<Vec<f32>>> = weights.iter().map(|w| Some(vec![0.0; w.values.len()])).collect();
    let per = d.per_tensor(&zeroed, &mut |_| {}).unwrap();
    assert!(per.iter().all(|&x| x > 0.0), "zeroing any weight moves the outputs: {per:?}");
    let joint = d.of(&[(1, zeroed[1].as_deref().unwrap())]).unwrap();
    assert!((joint - per[1]).abs() <= 1e-6 * per[1].max(1.0), "the cut and the whole model agree: {joint} vs {}", per[1]);

    let (x_ids, x_mask) = text_items(1, 99);
    let want = text_outputs(&model, &x_ids, &x_mask);
    for opts in [EncodeOptions { calibration: Some(Arc::new(calib.clone())), ..fixture_options() }, fixture_options()] {
        let enc = encode(&model, "text", &opts);
        assert!(enc.notes.iter().all(|n| n.starts_with("base budget: ")), "{:?}", enc.notes);
        let mut live = p2u::ProgressiveModel::from_base(
            &enc.base,
            p2u::RuntimeOptions { input_shapes: vec![vec![1, TEXT_LEN]; 2], ..Default::default() },
        )
        .unwrap();
        live.feed(&enc.stream).unwrap();
        let shape = [1, TEXT_LEN];
        let got = live.run(vec![Tensor::from_shape(&shape, &x_ids).unwrap(), Tensor::from_shape(&shape, &x_mask).unwrap()]).unwrap();
        assert!(got.status.exact);
        assert_eq!(output_bits(&got.outputs), want, "bit-identical to the original");
    }

    // synthetic inputs: token ids within the embedding table, masks of ones
    let s = calibrate::synthetic(&model, &SyntheticSpec::default()).unwrap();
    assert_eq!(s.origin(), Origin::Synthetic);
    for i in s.inputs() {
        let Values::I64(v) = &i.values else { panic!("{i:?}") };
        assert_eq!(i.item_dims, vec![TEXT_LEN]);
        match i.name.as_deref() {
            Some("ids") => assert!(v.iter().all(|&t| (0..50).contains(&t)) && v.iter().any(|&t| t > 25)),
            Some("mask") => assert!(v.iter().all(|&t| t == 1)),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn calibration_inputs_must_match_the_model() {
    let model = text_fixture();
    let (ids, mask) = text_items(4, 1);
    let one = |name: &str, v: Vec<i64>| InputData { name: Some(name.into()), item_dims: vec![TEXT_LEN], values: Values::I64(v) };
    let cases: Vec<(Result<Calibration, p2u::Error>, &str)> = vec![
        (Calibration::from_inputs(vec![one("ids", ids.clone())], Origin::Data), "no values for input \"mask\""),
        (
            Calibration::from_inputs(vec![one("ids", ids.clone()), one("mask", mask.clone()), one("extra", mask.clone())], Origin::Data),
            "extra",
        ),
        (Calibration::from_inputs(vec![one("ids", ids.clone()), one("mask", mask[..TEXT_LEN * 3].to_vec())], Origin::Data), "4 items"),
        (
            Calibration::from_inputs(
                vec![
                    one("ids", ids.clone()),
                    InputData { name: Some("mask".into()), item_dims: vec![TEXT_LEN], values: Values::F32(vec![1.0; 32]) },
                ],
                Origin::Data,
            ),
            "takes INT64",
        ),
        (
            Calibration::from_inputs(
                vec![one("mask", mask.clone()), InputData { name: Some("ids".into()), item_dims: vec![4, 2], values: Values::I64(ids) }],
                Origin::Data,
            ),
            "calibration items are [4, 2]",
        ),
    ];
    for (c, why) in cases {
        let e = c.and_then(|c| c.bind(&model).map(|_| ())).unwrap_err().to_string();
        assert!(e.contains(why), "expected {why:?} in {e:?}");
    }
}

#[test]
fn npy_calibration_files_are_read_or_rejected_clearly() {
    let v: Vec<f32> = (0..24).map(|i| i as f32 * 0.5).collect();
    let c = Calibration::from_npy(&npy("<f4", "(2, 3, 4)", &v), None).unwrap();
    assert_eq!((c.len(), c.item_dims()), (2, &[3usize, 4][..]));
    let cases = [
        (b"not numpy at all".to_vec(), "not a readable .npy"),
        (npy("<f8", "(2, 3, 4)", &v), "float32"),
        (npy("<f4", "(2, 3, 5)", &v), "truncated"),
        (npy("<f4", "(24,)", &v), "count"),
        (npy("<f4", "(2, 3, 4)", &v)[..40].to_vec(), "not a readable .npy"),
    ];
    for (bytes, why) in cases {
        let e = Calibration::from_npy(&bytes, None).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(why), "expected {why:?} in {e:?}");
    }
    let mut nan = v.clone();
    nan[5] = f32::NAN;
    assert!(Calibration::from_npy(&npy("<f4", "(2, 3, 4)", &nan), None).unwrap_err().to_string().contains("NaN"));
    // int64 arrays (token ids) keep their type
    let ids = npy_bytes("<i8", "(2, 4)", &(0..8i64).flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>());
    let c = Calibration::from_npy(&ids, Some("input_ids")).unwrap();
    assert_eq!(c.inputs()[0].values, Values::I64((0..8).collect()));
    assert_eq!(c.inputs()[0].name.as_deref(), Some("input_ids"));
}
