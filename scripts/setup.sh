#!/usr/bin/env bash
# Installs everything p2u's tests, benchmark and demo need on a fresh Debian
# machine. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v zstd >/dev/null || need_apt+=(zstd)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
# browser tests: Debian's Chromium + ChromeDriver (test tools cannot download browsers here)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c "import onnx, onnxruntime, numpy, pydicom, PIL, brotli" 2>/dev/null; then
  python3 -m pip install --quiet --root-user-action=ignore "onnx==1.23.2" "onnxruntime==1.32.0" "numpy<3" "pydicom==3.0.2" "pillow==13.0.0" "brotli==1.2.1"
fi

# wasm: the targets (the browser runtime; the CLI for Node under WASI), and the wasm-bindgen CLI at exactly the version Cargo.toml pins
rustup target add wasm32-unknown-unknown wasm32-wasip1 >/dev/null 2>&1
wbg=$(grep -Eo 'wasm-bindgen = "=[0-9.]+"' Cargo.toml | grep -Eo '[0-9]+\.[0-9]+\.[0-9]+')
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$wbg" ] \
  || ! command -v wasm-bindgen-test-runner >/dev/null; then
  # not --locked: the CLI's lock file names a yanked crate (ENVIRONMENT.md)
  cargo install --quiet wasm-bindgen-cli --version "$wbg"
fi

# browser test tools (playwright-core drives /usr/bin/chromium; onnxruntime-web is the benchmark's peer)
if [ ! -f tests/browser/node_modules/.package-lock.json ] \
  || [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]; then
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

bash .ci/fetch-models
