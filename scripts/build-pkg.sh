#!/usr/bin/env bash
# Builds the npm package in pkg/: the wasm runtime (wasm32 + simd128) and its
# wasm-bindgen glue in pkg/wasm/, next to the hand-written JS API, and the
# encoder CLI compiled for WASI in pkg/cli/ (`npx p2u-onnx encode …`).
#   P2U_WASM_PROFILE=dist (default; LTO) or release (faster to build, for tests)
# Needs: rustup targets wasm32-unknown-unknown and wasm32-wasip1, and
# wasm-bindgen-cli at the version pinned in Cargo.toml (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${P2U_WASM_PROFILE:-dist}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/p2u/target}"
cargo build --locked --lib --target wasm32-unknown-unknown --profile "$profile"
rm -rf pkg/wasm
# No wasm-opt: Debian's breaks wasm-bindgen 0.2.130 output, npm's saved
# nothing after gzip and slowed inference (see ENVIRONMENT.md).
wasm-bindgen --target web --out-dir pkg/wasm --out-name p2u_wasm \
  "$CARGO_TARGET_DIR/wasm32-unknown-unknown/$profile/p2u.wasm"
raw=$(stat -c %s pkg/wasm/p2u_wasm_bg.wasm)
gz=$(gzip -9 -c pkg/wasm/p2u_wasm_bg.wasm | wc -c)
echo "pkg/wasm/p2u_wasm_bg.wasm: $raw bytes, $gz gzip -9 ($profile)"

# the CLI for Node: the same code as the native one, built for WASI
cargo build --locked --bin p2u --target wasm32-wasip1 --profile "$profile"
mkdir -p pkg/cli
cp "$CARGO_TARGET_DIR/wasm32-wasip1/$profile/p2u.wasm" pkg/cli/p2u-cli.wasm
echo "pkg/cli/p2u-cli.wasm: $(stat -c %s pkg/cli/p2u-cli.wasm) bytes ($profile)"
