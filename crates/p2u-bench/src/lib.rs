//! # p2u-bench — the benchmark harness of p2u (never shipped)
//!
//! The `p2u-bench` binary measures, natively, bytes per stage against fp32
//! and `zstd -19`, accuracy per stage, apply time against a rebuild and the
//! kernel throughput; `--curve` draws accuracy against bytes received. This
//! library holds the kernel [`workload::Workload`] both benchmarks time and,
//! in wasm, its binding for the browser benchmark (`KernelBench`, built
//! with `--no-default-features`: `scripts/bench-web.sh`).

#![deny(missing_docs)]

pub mod workload;

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
mod web {
    use wasm_bindgen::prelude::*;

    use crate::workload::Workload;

    /// The dequantize-and-add kernel on the synthetic data of
    /// [`Workload`], for the browser benchmark: JS
    /// times [`KernelBench::run`] with its own clock.
    #[wasm_bindgen(js_name = KernelBench)]
    pub struct KernelBench(Workload);

    #[wasm_bindgen(js_class = KernelBench)]
    impl KernelBench {
        /// `n` weights (a multiple of 1024) in 1024-wide rows with per-row scales.
        #[wasm_bindgen(constructor)]
        pub fn new(bits: u8, n: u32) -> Result<KernelBench, JsValue> {
            Workload::new(bits, n as usize).map(KernelBench).map_err(|e| JsValue::from_str(&e.to_string()))
        }

        /// One pass over all weights, with the simd128 kernel or the scalar one.
        pub fn run(&mut self, simd: bool) {
            self.0.run(if simd { p2u::kernels::Path::Simd } else { p2u::kernels::Path::Scalar });
        }
    }
}
