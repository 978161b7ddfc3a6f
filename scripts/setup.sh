#!/usr/bin/env bash
# Installs everything p2u's tests, benchmark and demo need on a fresh Debian
# machine. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v zstd >/dev/null || need_apt+=(zstd)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c "import onnx, onnxruntime, numpy" 2>/dev/null; then
  python3 -m pip install --quiet --root-user-action=ignore "onnx==1.23.2" "onnxruntime==1.32.0" "numpy<3"
fi

bash .ci/fetch-models
