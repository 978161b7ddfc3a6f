//! The runtime compiled to wasm32 (+simd128), under wasm-bindgen-test: run
//! in Node and in headless Chromium by `scripts/test-web.sh` (the kernel
//! tests of `src/kernels` run there too, comparing simd128 with scalar).
#![cfg(target_arch = "wasm32")]

mod common;

use common::*;
use p2u::web::{WasmModel, WasmPlainModel};
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
    let err = WasmModel::new(b"not an onnx file", &[], &[], false, "", "").err().expect("refused");
    assert_eq!(error_kind(&err), ("P2uError".into(), "onnx".into()));
    let err = WasmPlainModel::new(b"", &[1, 2], &[3]).err().expect("refused");
    assert_eq!(error_kind(&err).1, "invalid");

    let enc = encode(&fixture_model(), "fixture", &fixture_options());
    let dims: Vec<u32> = FIXTURE_INPUT.iter().map(|&d| d as u32).collect();
    let mut m = WasmModel::new(&enc.base, &dims, &[4], false, "", "").unwrap();
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
