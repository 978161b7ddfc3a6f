//! The encoder flags `p2u encode` and `p2u-bench` share, and how they
//! become [`EncodeOptions`]: budgets, stages, order, synthetic inputs and
//! calibration samples (`.npy` files, folders of them, folders of images).

use std::path::{Path, PathBuf};

use clap::ValueEnum;

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
use p2u_encode::calibrate::{self, images, Calibration};
use p2u_encode::encoder::{BaseBudget, ChunkOrder};
use p2u_encode::EncodeOptions;
use p2u::{onnx, Error, Result};

use crate::{note, read_file as read};

/// How the stream is ordered after the base.
#[derive(Clone, Copy, ValueEnum)]
pub enum Order {
    /// By measured gain per byte.
    Rate,
    /// Layer by layer (nothing measured).
    Layer,
}

/// The encoder flags shared by `encode` and `bench`.
#[derive(clap::Args)]
pub struct EncodeFlags {
    /// Base size budget: served bytes, BITSb for the size of a uniform BITS-bit base, or auto (the default): the smallest base from 3b up whose outputs stay close to fp32, at most 4b.
    #[arg(long, value_name = "BYTES|BITSb", conflicts_with = "base_bits")]
    pub base_budget: Option<String>,
    /// A uniform N-bit base (2..8) instead of per-tensor widths.
    #[arg(long, value_name = "N")]
    pub base_bits: Option<u8>,
    /// Bit widths of the refinement stages before the exact one, e.g. 4,8.
    #[arg(long, value_delimiter = ',', value_name = "BITS,…")]
    pub stages: Option<Vec<u8>>,
    /// Stream order after the base.
    #[arg(long, value_enum)]
    pub order: Option<Order>,
    /// The model's input range for synthetic inputs, e.g. 0,255.
    #[arg(long, value_name = "LO,HI", allow_hyphen_values = true)]
    pub input_range: Option<String>,
    /// Synthetic inputs to measure sensitivity on (default 16).
    #[arg(long, value_name = "N")]
    pub synthetic_items: Option<usize>,
    /// The shape to generate synthetic inputs at, for inputs with symbolic dimensions the model constrains, e.g. 1,3,48,320 (NAME=DIMS per input).
    #[arg(long, value_name = "[NAME=]DIMS")]
    pub input_shape: Vec<String>,
    /// Calibration samples: X.npy [N, …input], NAME=X.npy per input, a directory of .npy files, or a directory of JPEG/PNG images.
    #[arg(long, value_name = "X.npy|NAME=X.npy|DIR")]
    pub calibration: Vec<String>,
    /// How --calibration images become inputs: JSON (resize, resize_shorter, crop, channels, layout, scale, mean, std, input) or a file holding it.
    #[arg(long, value_name = "JSON|FILE")]
    pub preprocess: Option<String>,
    /// Quantization group size along each output channel.
    #[arg(long, value_name = "N")]
    pub block: Option<usize>,
    /// Tensors smaller than this stay exact in the base.
    #[arg(long, value_name = "N")]
    pub min_elements: Option<usize>,
    /// Clipping search minimising Σ|error|^P (2..8).
    #[arg(long, value_name = "P", conflicts_with = "no_clip_search")]
    pub clip_norm: Option<u8>,
    /// Plain min/max rounding (no clipping search).
    #[arg(long)]
    pub no_clip_search: bool,
}

/// The encoder options from `flags`; calibration inputs are read against
/// `model`'s inputs (and refused without one).
pub fn encode_options(f: &EncodeFlags, model: Option<&tract_onnx::pb::ModelProto>) -> Result<EncodeOptions> {
    let mut o = EncodeOptions::default();
    if let Some(bits) = f.base_bits {
        o.base_bits = bits;
        o.base_budget = None;
    }
    if let Some(stages) = &f.stages {
        o.refine_bits = stages.clone();
        o.half_refine_bits = stages.clone();
    }
    o.block = f.block.unwrap_or(o.block);
    o.min_elements = f.min_elements.unwrap_or(o.min_elements);
    o.clipping = match (f.no_clip_search, f.clip_norm) {
        (true, _) => p2u_encode::Clipping::MinMax,
        (false, Some(p)) => p2u_encode::Clipping::Norm(p),
        (false, None) => p2u_encode::Clipping::Auto,
    };
    let calibration: Vec<&str> = f.calibration.iter().map(String::as_str).collect();
    if let (false, Some(model)) = (calibration.is_empty(), model) {
        let c = read_calibration(&calibration, f.preprocess.as_deref(), model)?;
        note!("calibration: {c:?}");
        o.calibration = Some(std::sync::Arc::new(c));
    } else if calibration.is_empty() && f.preprocess.is_some() {
        return Err(Error::Invalid("--preprocess describes --calibration images: give --calibration DIR".into()));
    }
    if let Some(r) = &f.input_range {
        let bad = || Error::Invalid(format!("--input-range: {r:?} (give LO,HI, e.g. 0,255)"));
        let (lo, hi) = r.split_once(',').ok_or_else(bad)?;
        let (lo, hi): (f32, f32) = (lo.trim().parse().map_err(|_| bad())?, hi.trim().parse().map_err(|_| bad())?);
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(bad());
        }
        if let Some(s) = o.synthetic.as_mut() {
            s.range = Some((lo, hi));
        }
    }
    if let Some(s) = o.synthetic.as_mut() {
        for v in &f.input_shape {
            let (name, dims) = named_value(v);
            let name = name.map(str::to_string);
            // NAME= (no dims): a scalar input
            let scalar = name.is_some() && dims.trim().is_empty();
            let dims: Vec<usize> = if scalar {
                vec![]
            } else {
                dims.split(',')
                    .map(|d| d.trim().parse().ok().filter(|&d: &usize| d > 0))
                    .collect::<Option<_>>()
                    .ok_or_else(|| Error::Invalid(format!("--input-shape: {v:?} (give DIMS or NAME=DIMS, e.g. 1,3,48,320; NAME= for a scalar)")))?
            };
            s.shapes.push((name, dims));
        }
        s.items = f.synthetic_items.unwrap_or(s.items);
        if s.items == 0 {
            return Err(Error::Invalid("--synthetic-items must be at least 1".into()));
        }
    }
    if let Some(b) = &f.base_budget {
        o.base_budget = Some(parse_budget(b)?);
    }
    o.order = match f.order {
        Some(Order::Rate) | None => ChunkOrder::Rate,
        Some(Order::Layer) => ChunkOrder::Layer,
    };
    Ok(o)
}

/// A `NAME=VALUE` flag value split into its input name and value; a value
/// without a name (no `=`, an empty name, or a file that exists under the
/// whole spelling) is `(None, spec)`.
pub fn named_value(spec: &str) -> (Option<&str>, &str) {
    match spec.split_once('=') {
        Some((name, value)) if !name.is_empty() && !Path::new(spec).exists() => (Some(name), value),
        _ => (None, spec),
    }
}

/// `--base-budget`: a byte count, bits per weight with a `b` suffix, or `auto`.
pub fn parse_budget(v: &str) -> Result<BaseBudget> {
    let bad = || Error::Invalid(format!("--base-budget: {v:?} (give served bytes, e.g. 1200000, bits per weight, e.g. 3b, or auto)"));
    if v == "auto" {
        return Ok(BaseBudget::Fit { max_bits: 4.0, tolerance: p2u_encode::encoder::FIT_TOLERANCE });
    }
    match v.strip_suffix('b') {
        Some(bits) => bits.parse().map(BaseBudget::BitsPerWeight).map_err(|_| bad()),
        None => v.parse().map(BaseBudget::Bytes).map_err(|_| bad()),
    }
}

/// Calibration files are read by the native build only (the wasm32 build of
/// this binary exists because `cargo test` builds every target).
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
fn read_calibration(_: &[&str], _: Option<&str>, _: &tract_onnx::pb::ModelProto) -> Result<p2u::calibrate::Calibration> {
    Err(Error::Unsupported("reading calibration files needs the native p2u build".into()))
}

/// Calibration inputs from the `--calibration` values: one `.npy` file,
/// `NAME=FILE.npy` per input, a directory of `.npy` files (named after the
/// model's inputs, or concatenated in name order), or a directory of images
/// preprocessed as `preprocess` (JSON text or a file holding it) declares.
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
fn read_calibration(specs: &[&str], preprocess: Option<&str>, model: &tract_onnx::pb::ModelProto) -> Result<Calibration> {
    let named = |spec: &str| {
        let (name, path) = named_value(spec);
        (name.map(str::to_string), PathBuf::from(path))
    };
    let inputs: Vec<String> = onnx::declared_inputs(model)?.into_iter().map(|d| d.name).collect();
    if let [spec] = specs {
        let (name, path) = named(spec);
        if path.is_dir() && name.is_none() {
            return read_calibration_dir(&path, preprocess, model, &inputs);
        }
    }
    if preprocess.is_some() {
        return Err(Error::Invalid("--preprocess applies to a --calibration directory of images".into()));
    }
    let mut parts = vec![];
    for spec in specs {
        let (name, path) = named(spec);
        if path.is_dir() {
            return Err(Error::Invalid(format!("--calibration {spec}: give one directory, or files")));
        }
        let what = |e: Error| Error::Invalid(format!("{}: {e}", path.display()));
        parts.push(calibrate::data::read_npy(&read(&path)?, name.as_deref()).map_err(what)?);
    }
    Calibration::from_inputs(parts, calibrate::Origin::Data)
}

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
fn read_calibration_dir(
    dir: &Path,
    preprocess: Option<&str>,
    model: &tract_onnx::pb::ModelProto,
    inputs: &[String],
) -> Result<Calibration> {
    let images = images::image_files(dir)?;
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    let mut npys: Vec<PathBuf> =
        entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "npy")).collect();
    npys.sort();
    match (images.is_empty(), npys.is_empty()) {
        (false, true) => {
            let spec = match preprocess {
                None => images::Preprocess::default(),
                Some(p) if p.trim_start().starts_with('{') => images::Preprocess::from_json(p)?,
                Some(p) => images::Preprocess::from_json(&String::from_utf8_lossy(&read(Path::new(p))?))?,
            };
            let resolved = images::resolve(&spec, model)?;
            note!("calibration images: {} from {}, {resolved}", images.len(), dir.display());
            images::from_images(&images, &resolved)
        }
        (true, false) => {
            if preprocess.is_some() {
                return Err(Error::Invalid("--preprocess applies to images, but the calibration directory holds .npy files".into()));
            }
            let stem = |p: &PathBuf| p.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
            let per_input = inputs.len() > 1 || npys.iter().all(|p| inputs.contains(&stem(p)));
            let what = |p: &Path, e: Error| Error::Invalid(format!("{}: {e}", p.display()));
            if per_input {
                let parts = npys
                    .iter()
                    .map(|p| calibrate::data::read_npy(&read(p)?, Some(&stem(p))).map_err(|e| what(p, e)))
                    .collect::<Result<_>>()?;
                return Calibration::from_inputs(parts, calibrate::Origin::Data);
            }
            let mut parts = npys.iter().map(|p| Calibration::from_npy(&read(p)?, None).map_err(|e| what(p, e)));
            let first = parts.next().expect("not empty")?;
            parts.try_fold(first, |acc, next| acc.concat(&next?))
        }
        (false, false) => Err(Error::Invalid(format!("{} holds both images and .npy files: use one kind", dir.display()))),
        (true, true) => Err(Error::Invalid(format!("{} holds no image (.jpg, .png) and no .npy file", dir.display()))),
    }
}

