#!/usr/bin/env bash
# The browser wasm's size against its inference speed: builds the dist
# profile as Cargo.toml sets it ("shipped"), with opt-level 3 everywhere
# ("o3", the profile before), and the shipped build before build-pkg's
# wasm-opt pass ("no-wasm-opt"), then times them side by side in Chromium
# (tests/browser/wasm-size.mjs). Output: OUT_DIR (default /tmp/p2u-wasm-size).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/p2u/target}"
out="${1:-/tmp/p2u-wasm-size}"
mkdir -p "$out"
build() {
  local name=$1; shift
  cargo build --locked -p p2u-wasm --lib --target wasm32-unknown-unknown --profile dist "$@"
  wasm-bindgen --target web --out-dir "$out/$name" --out-name p2u_wasm "$CARGO_TARGET_DIR/wasm32-unknown-unknown/dist/p2u_wasm.wasm"
}
build o3 --config 'profile.dist.opt-level=3' --config 'profile.dist.strip=false'
build no-wasm-opt
mkdir -p "$out/shipped"
cp "$out/no-wasm-opt/p2u_wasm.js" "$out/shipped/"
tests/browser/node_modules/.bin/wasm-opt --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
  --enable-mutable-globals --enable-reference-types --enable-multivalue \
  --duplicate-function-elimination --remove-unused-module-elements \
  "$out/no-wasm-opt/p2u_wasm_bg.wasm" -o "$out/shipped/p2u_wasm_bg.wasm"
ROUNDS="${ROUNDS:-4}" node tests/browser/wasm-size.mjs "$out" o3 no-wasm-opt shipped
