#!/usr/bin/env bash
# The test command: sets up a fresh machine (scripts/setup.sh), then runs the
# whole test suite in release mode (tract is too slow unoptimised): native
# Rust tests, then the wasm and browser tests (scripts/test-web.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/p2u/target}"
cargo build --release --locked --examples
cargo test --release --locked --workspace --lib --tests 2>&1 | tee /tmp/p2u-test.log
# refuse a run that executed no test at all, and close with the totals
passed=$(grep -Eo "^test result: ok\. [0-9]+ passed" /tmp/p2u-test.log | awk '{s += $4} END {print s + 0}')
if [ "$passed" -eq 0 ]; then
  echo "no native test was executed" >&2
  exit 1
fi
bash scripts/test-web.sh
web=$(cat /tmp/p2u-web-passed)
echo "native: $passed passed; wasm and browser: $web passed; $((passed + web)) passed, 0 failed"
