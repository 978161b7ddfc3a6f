#!/usr/bin/env bash
# The stage-0 preview benchmark (issue 10): per model, the quality of the
# first result a user sees — the default data-free p2u base, a calibrated
# one, a uniform 4-bit min/max base, and onnxruntime's int8 copy — against
# the bytes a server sends (brotli -q 11), the bytes until the p2u stream
# matches the int8 copy, and encode times; every p2u encode is verified
# bit-exact at its last stage. Evaluated in onnxruntime. ONLY=NAME runs one
# model (vgg16, mobilenetv2_imagenet, resnet_fmnist, mobilenetv2_fmnist).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/p2u/target}"
cargo build --release --locked -p p2u-cli --bin p2u
python3 scripts/bench_preview.py "${P2U_BENCH_DIR:-$HOME/.cache/p2u/bench-preview}" "$CARGO_TARGET_DIR/release/p2u" \
  "${P2U_SHARED_MODELS:-../shared/models}" "${P2U_MODEL_CACHE:-$HOME/.cache/p2u/models}"
