//! The runtime compiled to wasm32 (+simd128), under wasm-bindgen-test: run
//! in Node and in headless Chromium by `scripts/test-web.sh` (the kernel
//! tests of `src/kernels` run there too, comparing simd128 with scalar).
#![cfg(target_arch = "wasm32")]

mod common;

use common::*;
use p2u_wasm::{WasmModel, WasmPlainModel};
use p2u::Error;
use wasm_bindgen::JsValue;
use wasm_bindgen_test::wasm_bindgen_test;

fn error_kind(e: &JsValue) -> (String, String) {
    let get = |k: &str| js_sys::Reflect::get(e, &k.into()).ok().and_then(|v| v.as_string()).unwrap_or_default();
    (get("name"), get("kind"))
}

/// The whole path inside wasm: encode (single-threaded), stage-0 inference,
/// short bounded steps, and final outputs equal to tract-wasm on the original.
#[wasm_bindgen_test]
fn fixture_streams_to_bit_exact_outputs_in_wasm() {
    let model = fixture_model();
    let enc = encode(&model, "fixture", &fixture_options());
    let x = input(&FIXTURE_INPUT, 5, -1.0, 1.0);
    let want = output_bits(&reference_outputs(&model, &FIXTURE_INPUT, &x));
    let mut m = load_base(&enc, &FIXTURE_INPUT);
    let stage0 = m.run(vec![x.clone()]).unwrap();
    assert_eq!(stage0.status.stage, 0);
    assert_ne!(output_bits(&stage0.outputs), want);
    let mut busy_steps = 0;
    for piece in enc.stream.chunks(1000) {
        m.push(piece).unwrap();
        while m.step(64).unwrap() {
            busy_steps += m.busy() as usize;
        }
    }
    m.finish_stream().unwrap();
    assert!(busy_steps > 0);
    let r = m.run(vec![x]).unwrap();
    assert!(r.status.exact);
    assert_eq!(output_bits(&r.outputs), want);
}

#[wasm_bindgen_test]
fn bindings_turn_errors_into_p2u_errors() {
    let err = WasmModel::new(b"not an onnx file", &[], &[], false, false, "", "").err().expect("refused");
    assert_eq!(error_kind(&err), ("P2uError".into(), "onnx".into()));
    let err = WasmPlainModel::new(b"", &[1, 2], &[3]).err().expect("refused");
    assert_eq!(error_kind(&err).1, "invalid");

    let enc = encode(&fixture_model(), "fixture", &fixture_options());
    let dims: Vec<u32> = FIXTURE_INPUT.iter().map(|&d| d as u32).collect();
    let mut m = WasmModel::new(&enc.base, &dims, &[4], false, false, "", "").unwrap();
    let mut bad = enc.stream.clone();
    let last = bad.len() - 9;
    bad[last] ^= 0x40;
    m.push(&bad).unwrap();
    let err = loop {
        match m.step(1 << 20) {
            Ok(true) => continue,
            Ok(false) => panic!("corrupt stream accepted"),
            Err(e) => break e,
        }
    };
    assert_eq!(error_kind(&err).1, "corrupt");
    assert!(m.push(&[]).is_err(), "a failed stream stays failed");
    let n: usize = FIXTURE_INPUT.iter().product();
    let r = m.run_f32(vec![0.5; n], &dims).unwrap();
    let stage = js_sys::Reflect::get(&r, &"stage".into()).unwrap().as_f64().unwrap();
    assert!(stage < 3.0);
    let wrong = m.run_f32(vec![0.5; n - 1], &dims).err().unwrap();
    assert_eq!(error_kind(&wrong).1, Error::Invalid(String::new()).kind());
}

#[path = "../examples/tiny_transformer/model.rs"]
mod transformer;

/// A text model through the bindings: two named int64 inputs as
/// BigInt64Arrays, typed outputs by name, the last stage bit-identical to
/// tract-wasm on the original.
#[wasm_bindgen_test]
fn a_text_transformer_takes_int64_feeds_and_ends_bit_exact_in_wasm() {
    use js_sys::{Array, BigInt64Array, Float32Array, Reflect};
    use transformer::SEQUENCE;
    let original = transformer::tiny_transformer();
    let enc = encode(&original, "text", &p2u_encode::EncodeOptions::default());
    let shape = [2, SEQUENCE];
    let ids: Vec<i64> = (0..2 * SEQUENCE as i64).map(|i| (i * 37 + 5) % transformer::VOCAB as i64).collect();
    let mask: Vec<i64> = (0..2 * SEQUENCE).map(|i| (i % SEQUENCE < 6 || i >= SEQUENCE) as i64).collect();
    let options = p2u::RuntimeOptions { input_shapes: vec![shape.to_vec(); 2], ..Default::default() };
    let want = p2u::runtime::build_plan(&original, &options)
        .unwrap()
        .run(vec![tract_onnx::prelude::Tensor::from_shape(&shape, &ids).unwrap(), tract_onnx::prelude::Tensor::from_shape(&shape, &mask).unwrap()])
        .unwrap();
    let dims = [2, SEQUENCE as u32, 2, SEQUENCE as u32];
    let mut m = WasmModel::new(&enc.base, &dims, &[2, 2], false, false, "", "").unwrap();
    let feeds = Array::of2(&BigInt64Array::from(ids.as_slice()), &BigInt64Array::from(mask.as_slice()));
    let types = || vec!["int64".to_string(), "int64".to_string()];
    let get = |o: &JsValue, k: &str| Reflect::get(o, &k.into()).unwrap();
    let output = |r: &JsValue, i: u32| Array::from(&get(r, "outputs")).get(i);
    let r0 = m.run_tensors(feeds.clone(), types(), &dims, &[2, 2]).unwrap();
    assert_eq!(get(&r0, "stage").as_f64(), Some(0.0));
    assert_eq!(get(&output(&r0, 1), "name").as_string().as_deref(), Some("logits"));
    assert_eq!(get(&output(&r0, 1), "type").as_string().as_deref(), Some("float32"));
    m.push(&enc.stream).unwrap();
    while m.step(1 << 16).unwrap() {}
    m.finish_stream().unwrap();
    let r = m.run_tensors(feeds, types(), &dims, &[2, 2]).unwrap();
    assert_eq!(get(&r, "final").as_bool(), Some(true));
    let got: Vec<u32> = (0..2).flat_map(|i| Float32Array::from(get(&output(&r, i), "data")).to_vec()).map(f32::to_bits).collect();
    assert!(got == output_bits(&want), "the last stage's outputs differ from the original's");
    // a token id tensor given as floats is refused, naming what it takes
    let floats = Array::of2(&Float32Array::new_with_length(16), &BigInt64Array::from(mask.as_slice()));
    let err = m.run_tensors(floats, types(), &dims, &[2, 2]).err().unwrap();
    assert_eq!(error_kind(&err).1, "invalid");
}

/// A float16 model in wasm: served in f32, its exact stage decoded among
/// float16 values, every weight back to the original's bits.
#[wasm_bindgen_test]
fn a_float16_model_ends_on_its_own_bits_in_wasm() {
    let original = half_model(&fixture_model(), tract_onnx::pb::tensor_proto::DataType::Float16);
    let enc = encode(&original, "half", &fixture_options());
    let mut m = load_base(&enc, &FIXTURE_INPUT);
    for piece in enc.stream.chunks(4096) {
        m.push(piece).unwrap();
        while m.step(256).unwrap() {}
    }
    m.finish_stream().unwrap();
    assert!(m.status().exact);
    let g = original.graph.as_ref().unwrap();
    for t in g.initializer.iter().filter(|t| m.weight(&t.name).is_some()) {
        let want: Vec<u32> = p2u_encode::onnx::tensor_f32(t).unwrap().iter().map(|v| v.to_bits()).collect();
        assert!(m.weight(&t.name).unwrap().iter().map(|v| v.to_bits()).eq(want), "{}", t.name);
    }
}
