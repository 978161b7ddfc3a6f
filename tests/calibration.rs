//! The calibration-aware encoder on the fixture model: GPTQ rounding lowers
//! the output error against data-free rounding, the encoder stays
//! deterministic, the rate-ordered stream and mixed-precision bases still
//! refine to the exact original, and bad calibration input is rejected.

mod common;

use std::sync::Arc;

use common::*;
use p2u::calibrate::{self, Calibration};
use p2u::encoder::{BaseBudget, ChunkOrder};
use p2u::format::stream::read_all;
use p2u::quant::{self, apply_codes, Grid};
use p2u::EncodeOptions;

fn calibration(count: usize, seed: u64) -> Arc<Calibration> {
    Arc::new(Calibration::new(FIXTURE_INPUT[1..].to_vec(), smooth_items(count, seed)).unwrap())
}

fn calibrated(opts: EncodeOptions) -> EncodeOptions {
    EncodeOptions { calibration: Some(calibration(96, 1)), ..opts }
}

/// Mean squared difference of the base model's outputs from the fp32
/// model's on held-out smooth items.
fn base_output_mse(enc: &p2u::Encoded) -> f64 {
    let model = fixture_model();
    let mut base = load_base(enc, &FIXTURE_INPUT);
    let items = smooth_items(24, 99);
    let item: usize = FIXTURE_INPUT.iter().product();
    let mut se = 0.0;
    for x in items.chunks(item) {
        let x = tract_onnx::prelude::Tensor::from_shape(&FIXTURE_INPUT, x).unwrap();
        let want = values(&reference_outputs(&model, &FIXTURE_INPUT, &x)[0]);
        let got = values(&base.run(vec![x]).unwrap().outputs[0]);
        se += want.iter().zip(&got).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum::<f64>() / want.len() as f64;
    }
    se / 24.0
}

#[test]
fn calibration_lowers_layer_and_model_output_error_over_data_free() {
    let model = fixture_model();
    let weights = p2u::onnx::extract_weights(&model, 16).unwrap();
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
        let gptq =
            s.output_error(&w.values, &decode(&quant::quantize_base_calibrated(&w.values, &grid, 3, Some(4), s, &quant::gptq::factors(s))));
        assert!(gptq <= free * 1.001, "{}: GPTQ {gptq} vs data-free {free}", w.name);
        free_total += free;
        gptq_total += gptq;
    }
    assert!(gptq_total < 0.9 * free_total, "layer output error: GPTQ {gptq_total} vs data-free {free_total}");

    let base_only = |calib| EncodeOptions { base_bits: 3, refine_bits: vec![], calibration: calib, ..fixture_options() };
    let free = base_output_mse(&encode(&model, "fixture", &base_only(None)));
    let gptq = base_output_mse(&encode(&model, "fixture", &base_only(Some(calibration(96, 1)))));
    assert!(gptq < free, "model output error: GPTQ {gptq} vs data-free {free}");
}

#[test]
fn calibrated_encoding_is_deterministic() {
    let opts =
        calibrated(EncodeOptions { order: ChunkOrder::Rate, base_budget: Some(BaseBudget::BitsPerWeight(3.0)), ..fixture_options() });
    let a = encode(&fixture_model(), "fixture", &opts);
    let b = encode(&fixture_model(), "fixture", &opts);
    assert_eq!(a.base, b.base);
    assert_eq!(a.stream, b.stream);
}

#[test]
fn rate_ordered_mixed_precision_stream_reaches_the_exact_original() {
    let budget = BaseBudget::BitsPerWeight(3.0);
    let opts = calibrated(EncodeOptions { order: ChunkOrder::Rate, base_budget: Some(budget), ..fixture_options() });
    let enc = encode(&fixture_model(), "fixture", &opts);

    // the base fits a uniform 3-bit base's size: packed codes, f32 scales, zero points as UINT4
    let limit: u64 = enc
        .manifest
        .tensors
        .iter()
        .map(|t| (t.dims.iter().product::<usize>() as u64 * 3).div_ceil(8) + 4 * t.groups as u64 + (t.groups as u64).div_ceil(2))
        .sum();
    let used: u64 = enc.manifest.tensors.iter().map(|t| t.bytes[0]).sum();
    assert!(used <= limit, "base {used} B over its budget {limit} B");
    let widths: std::collections::BTreeSet<u8> = enc.manifest.tensors.iter().map(|t| t.base_bits).collect();
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

    let x = input(&FIXTURE_INPUT, 7, -1.0, 1.0);
    let want = output_bits(&reference_outputs(&fixture_model(), &FIXTURE_INPUT, &x));
    let mut live = load_base(&enc, &FIXTURE_INPUT);
    live.feed(&enc.stream).unwrap();
    assert!(live.status().exact);
    assert_eq!(output_bits(&live.run(vec![x]).unwrap().outputs), want, "outputs bit-identical to the fp32 original");
}

#[test]
fn rate_order_and_budget_need_calibration_data() {
    for opts in [
        EncodeOptions { order: ChunkOrder::Rate, ..fixture_options() },
        EncodeOptions { base_budget: Some(BaseBudget::Bytes(1000)), ..fixture_options() },
    ] {
        let e = opts.validate().unwrap_err().to_string();
        assert!(e.contains("calibration"), "{e}");
    }
    let tiny = calibrated(EncodeOptions { base_budget: Some(BaseBudget::Bytes(10)), ..fixture_options() });
    let bytes = p2u::onnx::encode_model(&fixture_model());
    let e = p2u::encode(&fixture_model(), "f", p2u::encoder::file_info("f", &bytes), &tiny, &mut |_| {}).err().unwrap().to_string();
    assert!(e.contains("below the smallest base"), "{e}");
}

#[test]
fn npy_calibration_files_are_read_or_rejected_clearly() {
    let v: Vec<f32> = (0..24).map(|i| i as f32 * 0.5).collect();
    let c = Calibration::from_npy(&npy("<f4", "(2, 3, 4)", &v)).unwrap();
    assert_eq!((c.len(), c.item_dims()), (2, &[3usize, 4][..]));
    let cases = [
        (b"not numpy at all".to_vec(), "magic"),
        (npy("<f8", "(2, 3, 4)", &v), "float32"),
        (npy("<f4", "(2, 3, 5)", &v), "data bytes"),
        (npy("<f4", "(24,)", &v), "count"),
        (npy("<f4", "(2, 3, 4)", &v)[..40].to_vec(), "truncated"),
    ];
    for (bytes, why) in cases {
        let e = Calibration::from_npy(&bytes).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(why), "expected {why:?} in {e:?}");
    }
    let mut nan = v.clone();
    nan[5] = f32::NAN;
    assert!(Calibration::from_npy(&npy("<f4", "(2, 3, 4)", &nan)).unwrap_err().to_string().contains("NaN"));
}
