#!/usr/bin/env bash
# The demo command. The browser demo page (www/) arrives with the browser
# work; until then this runs the same progression natively: MobileNetV2
# (ImageNet) delivered over a simulated 10 Mbit/s link, classifying six
# sample photos at every stage until the weights are exact.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/p2u/target}"
cargo build --release --locked --bin p2u --example progressive
models="${P2U_SHARED_MODELS:-../shared/models}"
out="$HOME/.cache/p2u/demo/mobilenetv2_imagenet"
if [ ! -s "$out/mobilenetv2_imagenet.p2u" ]; then
  "$CARGO_TARGET_DIR/release/p2u" encode "$models/mobilenetv2_imagenet.onnx" -o "$out"
fi
echo "(the browser demo page in www/ comes with the browser issue; this is the native progression)"
"$CARGO_TARGET_DIR/release/examples/progressive" "$out" "$models/imagenet_samples_224.bin" "$models/imagenet_classes.txt" "${MBPS:-10}"
