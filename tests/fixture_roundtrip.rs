//! The fixture model through the whole pipeline: encode, load the base,
//! stream every chunk, end bit-identical to tract on the original.

mod common;

use common::*;
use p2u::format::stream::{Frame, FrameReader};
use p2u::runtime::Serving;

#[test]
fn fixture_reaches_bit_exact_weights_and_outputs() {
    let model = fixture_model();
    let enc = encode(&model, "fixture", &fixture_options());
    let names: Vec<&str> = enc.manifest.tensors.iter().map(|t| t.name.as_str()).collect();
    for w in ["W1", "W2", "M", "A", "G", "P", "Q", "K"] {
        assert!(names.contains(&w) || enc.manifest.exact_in_base.iter().any(|e| e == w), "{w} should be encoded: {names:?}");
    }
    assert!(!names.contains(&"Bz"), "a 1-D bias stays f32 in the base");
    for bn in ["bn_scale", "bn_bias", "bn_mean", "bn_var"] {
        assert!(!names.contains(&bn), "BatchNorm parameter {bn} must pass through exactly");
    }
    let x = input(&FIXTURE_INPUT, 1, -1.0, 1.0);
    let reference = reference_outputs(&model, &FIXTURE_INPUT, &x);

    let mut live = load_base(&enc, &FIXTURE_INPUT);
    assert_eq!(live.serving(), Serving::WeightInputs, "{:?}", live.fallback_reason());
    let first = live.run(vec![x.clone()]).unwrap();
    assert_eq!(first.status.stage, 0);
    assert!(!first.status.exact);
    assert_ne!(output_bits(&first.outputs), output_bits(&reference), "a 4-bit base cannot be exact");

    let mut errors = vec![];
    let mut reader = FrameReader::new();
    reader.push(&enc.stream);
    let mut last_stage = 0;
    while let Some(frame) = reader.next_frame().unwrap() {
        match frame {
            Frame::Header(h) => live.attach(h).unwrap(),
            Frame::Chunk { chunk, .. } => {
                live.apply(&chunk).unwrap();
                let st = live.status();
                if st.stage != last_stage {
                    let out = live.run(vec![x.clone()]).unwrap();
                    assert_eq!(out.status.stage, st.stage);
                    // the weights-as-inputs plan computes the same model as a
                    // plan built from this stage's weights as constants
                    let baked = reference_outputs(&live.current_model(), &FIXTURE_INPUT, &x);
                    let scale = values(&baked[0]).iter().fold(0f32, |a, v| a.max(v.abs()));
                    assert!(max_diff(&out.outputs[0], &baked[0]) <= 1e-5 * scale, "stage {}", st.stage);
                    errors.push(max_diff(&out.outputs[0], &reference[0]));
                    last_stage = st.stage;
                }
            }
        }
    }
    reader.finish().unwrap();
    let done = live.run(vec![x.clone()]).unwrap();
    assert!(done.status.exact);
    assert_eq!(live.serving(), Serving::Constants, "the exact model is served from constants");
    assert_eq!(done.status.chunks_applied, done.status.chunks_total);
    assert_eq!(output_bits(&done.outputs), output_bits(&reference), "final outputs must be bit-identical");
    assert_eq!(*errors.last().unwrap(), 0.0);
    assert!(errors.windows(2).all(|w| w[1] <= w[0]), "output error must not grow: {errors:?}");

    let original = p2u_encode::onnx::extract_weights(&model, 1).unwrap();
    for w in original.iter().filter(|w| names.contains(&w.name.as_str())) {
        let got = live.weight(&w.name).unwrap();
        assert!(got.iter().zip(&w.values).all(|(a, b)| a.to_bits() == b.to_bits()), "{} not exact", w.name);
    }
    let current = live.current_model();
    let tensors = p2u_encode::onnx::constant_tensors(current.graph.as_ref().unwrap());
    let zero = p2u_encode::onnx::tensor_f32(tensors.iter().find(|(n, _)| n == "Bz").unwrap().1).unwrap();
    assert!(zero.iter().all(|v| v.to_bits() == 0), "the all-zero bias stays +0.0");
    assert_eq!(live.weight("P").unwrap(), live.weight("Q").unwrap());
}

#[test]
fn manifest_error_decreases_monotonically_per_stage() {
    let enc = encode(&fixture_model(), "fixture", &fixture_options());
    let rel: Vec<f64> = enc.manifest.stages.iter().map(|s| s.error.relative).collect();
    assert!(rel.windows(2).all(|w| w[1] < w[0]), "{rel:?}");
    assert_eq!(*rel.last().unwrap(), 0.0);
    for t in &enc.manifest.tensors {
        let e: Vec<f64> = t.error.iter().map(|e| e.max_abs).collect();
        assert!(e.windows(2).all(|w| w[1] <= w[0]), "{}: {e:?}", t.name);
    }
}

/// The encoded fixture, an input drawn with `seed`, and the output bits of
/// a model fed the whole stream at once (the reference for other feedings).
fn fixture_fed_whole(seed: u64) -> (p2u_encode::Encoded, tract_onnx::prelude::Tensor, Vec<u32>) {
    let enc = encode(&fixture_model(), "fixture", &fixture_options());
    let x = input(&FIXTURE_INPUT, seed, -1.0, 1.0);
    let mut whole = load_base(&enc, &FIXTURE_INPUT);
    whole.feed(&enc.stream).unwrap();
    whole.finish_stream().unwrap();
    let want = output_bits(&whole.run(vec![x.clone()]).unwrap().outputs);
    (enc, x, want)
}

#[test]
fn random_slices_give_the_same_result_as_whole_chunks() {
    let (enc, x, want) = fixture_fed_whole(2);
    for seed in 0..8 {
        let mut rng = Rng(seed);
        let mut m = load_base(&enc, &FIXTURE_INPUT);
        let mut pos = 0;
        while pos < enc.stream.len() {
            let n = 1 + rng.below(if seed % 2 == 0 { 7 } else { 5000 });
            let end = (pos + n).min(enc.stream.len());
            m.feed(&enc.stream[pos..end]).unwrap();
            pos = end;
        }
        m.finish_stream().unwrap();
        let got = m.run(vec![x.clone()]).unwrap();
        assert!(got.status.exact);
        assert_eq!(output_bits(&got.outputs), want, "seed {seed}");
    }
}

#[test]
fn encoder_is_deterministic() {
    let a = encode(&fixture_model(), "fixture", &fixture_options());
    let b = encode(&fixture_model(), "fixture", &fixture_options());
    assert_eq!(a.base, b.base);
    assert_eq!(a.stream, b.stream);
}

#[test]
fn every_base_width_and_blocking_reaches_exact() {
    for (base_bits, stages, block) in [(2u8, vec![2u8, 4], 0usize), (3, vec![8], 8), (8, vec![], 0), (4, vec![3, 5, 8], 16)] {
        let opts = p2u_encode::EncodeOptions { refine_bits: stages.clone(), block, ..fixture_uniform(base_bits) };
        let enc = encode(&fixture_model(), "fixture", &opts);
        let mut m = load_base(&enc, &FIXTURE_INPUT);
        m.feed(&enc.stream).unwrap();
        m.finish_stream().unwrap();
        let st = m.status();
        assert!(st.exact, "base {base_bits} stages {stages:?} block {block}: {st:?}");
        assert_eq!(st.stages as usize, stages.len() + 2);
    }
}

#[test]
fn a_snapshot_keeps_serving_its_stage_while_the_model_refines() {
    let enc = encode(&fixture_model(), "fixture", &fixture_options());
    let x = input(&FIXTURE_INPUT, 4, -1.0, 1.0);
    let mut live = load_base(&enc, &FIXTURE_INPUT);
    let snapshot = live.runner().unwrap();
    let before = output_bits(&snapshot.run(vec![x.clone()]).unwrap().outputs);
    // refine on another thread's watch: the snapshot runs concurrently
    std::thread::scope(|s| {
        let worker = s.spawn(|| (0..20).map(|_| output_bits(&snapshot.run(vec![x.clone()]).unwrap().outputs)).collect::<Vec<_>>());
        live.feed(&enc.stream).unwrap();
        for out in worker.join().unwrap() {
            assert_eq!(out, before, "a snapshot must not see patches made after it was taken");
        }
    });
    assert_eq!(snapshot.status().stage, 0);
    let done = live.run(vec![x.clone()]).unwrap();
    assert!(done.status.exact);
    assert_ne!(output_bits(&done.outputs), before);
    assert_eq!(output_bits(&snapshot.run(vec![x]).unwrap().outputs), before);
}

#[test]
fn short_steps_serve_the_last_stage_and_end_bit_exact() {
    let (enc, x, want) = fixture_fed_whole(3);

    let mut m = load_base(&enc, &FIXTURE_INPUT);
    let (mut steps, mut busy_runs) = (0, 0);
    for piece in enc.stream.chunks(333) {
        m.push(piece).unwrap();
        while m.step(97).unwrap() {
            steps += 1;
            if m.busy() {
                // mid-way through an exact stage: still serving the stage before
                let before = m.status();
                let r = m.run(vec![x.clone()]).unwrap();
                assert_eq!(r.status, before);
                assert!(!r.status.exact);
                busy_runs += 1;
            }
        }
    }
    m.finish_stream().unwrap();
    assert!(busy_runs > 0 && steps > busy_runs, "steps {steps}, runs while busy {busy_runs}");
    let got = m.run(vec![x]).unwrap();
    assert!(got.status.exact);
    assert_eq!(m.stream_received(), enc.stream.len() as u64);
    assert_eq!(output_bits(&got.outputs), want);
}

/// An STFT-like basis (cosines of a 64-point circle: 64 distinct values)
/// feeding a random layer: the basis costs less sent whole than in stages.
#[test]
fn a_weight_of_few_distinct_values_is_sent_whole_and_the_rest_progressively() {
    use tract_onnx::pb::tensor_proto::DataType;
    let (n, bins) = (256usize, 258usize);
    let basis: Vec<f32> = (0..n * bins).map(|i| ((2.0 * std::f64::consts::PI * ((i / bins) * (i % bins) % 64) as f64 / 64.0).cos()) as f32).collect();
    let mut r = Rng(3);
    let w: Vec<f32> = (0..bins * 64).map(|_| r.gauss(0.1)).collect();
    let m = model(
        "stft",
        vec![node("MatMul", &["x", "B"], "spectrum", vec![]), node("MatMul", &["spectrum", "W"], "y", vec![])],
        vec![p2u_encode::onnx::f32_tensor("B", &[n, bins], &basis), p2u_encode::onnx::f32_tensor("W", &[bins, 64], &w)],
        vec![p2u_encode::onnx::value_info("x", DataType::Float, &[1, n])],
        vec![p2u_encode::onnx::value_info("y", DataType::Float, &[1, 64])],
    );
    let enc = encode(&m, "stft", &fixture_options());
    assert!(enc.notes.iter().any(|n| n.starts_with("1 weights (\"B\") are sent whole, in the base")), "{:?}", enc.notes);
    assert_eq!(enc.manifest.exact_in_base, ["B"]);
    assert_eq!(enc.manifest.tensors.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["W"]);
    // the base holds the basis exactly; the stream ends on the original
    let x = input(&[1, n], 8, -1.0, 1.0);
    let mut live = load_base(&enc, &[1, n]);
    live.feed(&enc.stream).unwrap();
    let last = live.run(vec![x.clone()]).unwrap();
    assert!(last.status.exact);
    assert_eq!(output_bits(&last.outputs), output_bits(&reference_outputs(&m, &[1, n], &x)));
    // served (the base with brotli, as a server sends it), all of it costs under
    // 60% of the raw weights; in stages the basis alone would cost about its raw size
    let mut served = vec![];
    brotli::BrotliCompress(&mut enc.base.as_slice(), &mut served, &brotli::enc::BrotliEncoderParams::default()).unwrap();
    let raw = 4 * (basis.len() + w.len());
    assert!(((served.len() + enc.stream.len()) as f64) < 0.6 * raw as f64, "{} + {} of {raw}", served.len(), enc.stream.len());
}

/// Stage plans: every stage served from a constants plan, rebuilt as the
/// stage advances; each result says the stage its plan was built at.
#[test]
fn stage_plans_serve_each_stage_from_constants_and_end_on_the_original() {
    let enc = encode(&fixture_model(), "fixture", &fixture_options());
    let x = input(&FIXTURE_INPUT, 6, -1.0, 1.0);
    let options = p2u::RuntimeOptions { input_shapes: vec![FIXTURE_INPUT.to_vec()], stage_plans: true, ..Default::default() };
    let mut m = p2u::ProgressiveModel::from_base(&enc.base, options).unwrap();
    assert_eq!(m.serving(), Serving::Constants);
    let mut inputs_plan = load_base(&enc, &FIXTURE_INPUT);
    let (a, b) = (m.run(vec![x.clone()]).unwrap(), inputs_plan.run(vec![x.clone()]).unwrap());
    assert_eq!(a.status.stage, 0);
    assert!(max_diff(&a.outputs[0], &b.outputs[0]) < 1e-4, "the same stage-0 model");
    let mut seen = vec![];
    for piece in enc.stream.chunks(700) {
        m.push(piece).unwrap();
        while m.step(1 << 12).unwrap() {}
        let r = m.run(vec![x.clone()]).unwrap();
        // rebuilt eagerly: the plan is at the model's stage, made from at most the chunks applied so far
        assert_eq!(r.status.stage, m.status().stage);
        assert!(r.status.chunks_applied <= m.status().chunks_applied);
        seen.push(r.status.stage);
    }
    assert_eq!(seen.iter().copied().max(), Some(3));
    assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    let last = m.run(vec![x.clone()]).unwrap();
    assert!(last.status.exact);
    assert_eq!(output_bits(&last.outputs), output_bits(&reference_outputs(&fixture_model(), &FIXTURE_INPUT, &x)));
}
