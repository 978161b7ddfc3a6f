#!/usr/bin/env bash
# Encodes the models the browser tests stream, and computes the native
# runtime's reference outputs for them, into $1 (default
# ~/.cache/p2u/web-fixtures). Needs the release p2u binary and numpy.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${P2U_WEB_FIXTURES:-$HOME/.cache/p2u/web-fixtures}}"
models="${P2U_SHARED_MODELS:-../shared/models}"
p2u="${CARGO_TARGET_DIR:-$HOME/.cache/p2u/target}/release/p2u"
mkdir -p "$out"
printf '%s\n' T-shirt/top Trouser Pullover Dress Coat Sandal Shirt Sneaker Bag 'Ankle boot' > "$out/fmnist_labels.txt"
"$p2u" encode "$models/resnet_fmnist.onnx" -o "$out/resnet" --labels "$out/fmnist_labels.txt" >/dev/null 2>&1
"$p2u" encode "$models/mobilenetv2_imagenet.onnx" -o "$out/mnv2" >/dev/null 2>&1
# a second encode of the same model: the "file changed on the server" of the fault tests
"$p2u" encode "$models/resnet_fmnist.onnx" --base-bits 3 --order layer -o "$out/resnet3" >/dev/null 2>&1
# a text model: two int64 inputs (examples/tiny_transformer)
cargo run --release --locked --quiet --example tiny_transformer -- "$out/text.onnx" >/dev/null
rm -rf "$out/text"
"$p2u" encode "$out/text.onnx" -o "$out/text" >/dev/null 2>&1
install -m 644 "$models/mobilenetv2_imagenet.onnx" "$out/mnv2_original.onnx"
install -m 644 "$models/resnet_fmnist.onnx" "$out/resnet_original.onnx"
python3 - "$models" "$out" <<'PY'
import sys, numpy as np
models, out = sys.argv[1], sys.argv[2]
imgs = np.fromfile(f"{models}/imagenet_samples_224.bin", dtype=np.uint8).reshape(6, 224, 224, 3)
mean = np.array([0.485, 0.456, 0.406], np.float32); std = np.array([0.229, 0.224, 0.225], np.float32)
x = ((imgs[0].astype(np.float32) / 255 - mean) / std).transpose(2, 0, 1)[None].astype('<f4')
x.tofile(f"{out}/mnv2_input.f32")
f = np.fromfile(f"{models}/fmnist_test.bin", dtype=np.uint8, count=784).reshape(1, 1, 28, 28)
f.tofile(f"{out}/resnet_pixels.u8")
((f.astype(np.float32) / 255 - 0.2860) / 0.3530).astype('<f4').tofile(f"{out}/resnet_input.f32")
PY
"$p2u" run "$out/mnv2" --input "$out/mnv2_input.f32" --dims 1,3,224,224 -o "$out/mnv2_native.f32"
"$p2u" run "$out/mnv2" --input "$out/mnv2_input.f32" --dims 1,3,224,224 --stage 0 -o "$out/mnv2_native_stage0.f32"
"$p2u" run "$out/resnet" --input "$out/resnet_input.f32" --dims 1,1,28,28 -o "$out/resnet_native.f32"
