#!/usr/bin/env bash
# Builds the npm package in pkg/: the wasm runtime (the p2u-wasm crate,
# wasm32 + simd128) and its wasm-bindgen glue in pkg/wasm/, next to the hand-written JS API, and the
# encoder CLI compiled for WASI in pkg/cli/ (`npx p2u-onnx encode …`).
#   P2U_WASM_PROFILE=dist (default; LTO) or release (faster to build, for tests)
# Needs: rustup targets wasm32-unknown-unknown and wasm32-wasip1, and
# wasm-bindgen-cli at the version pinned in Cargo.toml (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${P2U_WASM_PROFILE:-dist}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/p2u/target}"
cargo build --locked -p p2u-wasm --lib --target wasm32-unknown-unknown --profile "$profile"
rm -rf pkg/wasm
wasm-bindgen --target web --out-dir pkg/wasm --out-name p2u_wasm \
  "$CARGO_TARGET_DIR/wasm32-unknown-unknown/$profile/p2u_wasm.wasm"
# wasm-opt (npm binaryen 132; Debian's 108 breaks wasm-bindgen output) with
# only the passes that leave code as it is: identical functions (rustc's many
# equal monomorphizations) merged, unreachable items dropped — 10.55 → 7.76
# MB raw, 1.85 → 1.40 MB brotli, inference unchanged. Its -O levels shrink
# as much but slowed inference by 17–40% here.
wasm_opt=tests/browser/node_modules/.bin/wasm-opt
if [ ! -x "$wasm_opt" ]; then
  echo "build-pkg: $wasm_opt missing (bash scripts/setup.sh installs it)" >&2
  exit 1
fi
"$wasm_opt" --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
  --enable-mutable-globals --enable-reference-types --enable-multivalue \
  --duplicate-function-elimination --remove-unused-module-elements \
  pkg/wasm/p2u_wasm_bg.wasm -o pkg/wasm/p2u_wasm_bg.wasm
raw=$(stat -c %s pkg/wasm/p2u_wasm_bg.wasm)
gz=$(gzip -9 -c pkg/wasm/p2u_wasm_bg.wasm | wc -c)
echo "pkg/wasm/p2u_wasm_bg.wasm: $raw bytes, $gz gzip -9 ($profile)"

# the CLI for Node: the same code as the native one, built for WASI, in the
# release profile whatever ships for the browser: its size only costs the
# install, and Node 20's V8 crashed (SIGSEGV in a keyed load, 1 run in 4) on
# the opt-level "z" + LTO build, never on this one (0 in 60 encodes)
cargo build --locked -p p2u-cli --bin p2u --target wasm32-wasip1 --release
mkdir -p pkg/cli
cp "$CARGO_TARGET_DIR/wasm32-wasip1/release/p2u.wasm" pkg/cli/p2u-cli.wasm
echo "pkg/cli/p2u-cli.wasm: $(stat -c %s pkg/cli/p2u-cli.wasm) bytes (release)"
