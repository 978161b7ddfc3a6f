#!/usr/bin/env bash
# The browser half of the test suite (called by scripts/test.sh, after
# scripts/setup.sh):
#  1. wasm-bindgen-test suites (simd128 kernels vs scalar, the runtime in
#     wasm, the JS bindings' errors) in Node and in headless Chromium;
#  2. the npm package in Chromium (playwright-core), streaming real models
#     from a rate-limited, fault-injecting HTTP server on 127.0.0.1, a
#     scratch app that installs the `npm pack` tarball, and the demo page.
# A run in which any of these executed no test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/p2u/target}"
log="${P2U_TEST_LOG_DIR:-/tmp}"
export P2U_ARTIFACTS="${P2U_ARTIFACTS:-$log}"

passed_in() { grep -Eo "^test result: ok\. [0-9]+ passed" "$1" | awk '{s += $4} END {print s + 0}'; }

# the package (release profile: LTO stays out of test builds) and fixtures
P2U_WASM_PROFILE=release bash scripts/build-pkg.sh
cargo build --release --locked -p p2u-cli --bin p2u
bash scripts/web-fixtures.sh
bash scripts/demo-assets.sh

export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export WASM_BINDGEN_TEST_TIMEOUT=180
total=0
for where in node chromium; do
  out="$log/p2u-wasm-$where.log"
  : > "$out"
  if [ "$where" = chromium ]; then export WASM_BINDGEN_USE_BROWSER=1; fi
  cargo test --release --locked -p p2u --target wasm32-unknown-unknown --lib -- kernels:: 2>&1 | tee -a "$out"
  cargo test --release --locked -p p2u --target wasm32-unknown-unknown --test web 2>&1 | tee -a "$out"
  n=$(passed_in "$out")
  if [ "$n" -lt 5 ]; then
    echo "wasm-bindgen tests in $where: $n passed, expected 5 (a run that tests nothing must fail)" >&2
    exit 1
  fi
  if [ "$where" = chromium ] && ! grep -q "Running headless tests in Chrome" "$out"; then
    echo "wasm-bindgen tests did not run in Chromium" >&2
    exit 1
  fi
  total=$((total + n))
done
unset WASM_BINDGEN_USE_BROWSER

out="$log/p2u-browser.log"
node --test --test-concurrency=1 --test-reporter=spec tests/browser/*.test.mjs 2>&1 | tee "$out"
n=$(sed -n 's/^ℹ pass \([0-9]*\)$/\1/p' "$out" | tail -1)
f=$(sed -n 's/^ℹ fail \([0-9]*\)$/\1/p' "$out" | tail -1)
if [ "${n:-0}" -eq 0 ] || [ "${f:-1}" -ne 0 ]; then
  echo "browser tests: ${n:-0} passed, ${f:-?} failed" >&2
  exit 1
fi
total=$((total + n))
echo "browser and wasm: $total passed, 0 failed"
echo "$total" > "$log/p2u-web-passed"
