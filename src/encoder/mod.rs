//! The encoder: fp32 ONNX → low-bit base + residual stream + manifest.
//!
//! It keeps, per tensor, the exact f32 values the client will hold after
//! each stage by running the client's own arithmetic ([`quant::apply_codes`],
//! [`quant::exact`]) — so the exact stage is computed against what the
//! client really has, and the encoder checks that it lands on the original bits.
//!
//! With calibration data ([`crate::calibrate`]) the base is rounded with
//! GPTQ, each tensor's output sensitivity is measured, and the sensitivity
//! drives the per-tensor base widths under a byte budget ([`budget`]) and
//! the gain-per-byte order of the stream's chunks ([`order`]).

pub mod budget;
pub mod order;

use std::sync::Arc;

use crate::calibrate::{self, Calibration};
use crate::error::{Error, Result};
use crate::format::manifest::{FileInfo, Manifest, StageInfo, TensorInfo, MANIFEST_VERSION};
use crate::format::stream::{Chunk, Stage, StageKind, StreamHeader, TensorEntry};
use crate::format::{hex, payload, sha256, tensor_hash, weights_hash, Hash};
use crate::onnx::{self, BaseWeight, Weight};
use crate::quant::gptq::{self, Factor};
use crate::quant::{self, apply_codes, exact, ErrorStats, Grid, InputStats, StageCodes};
use tract_onnx::pb::ModelProto;

/// Encoder settings.
#[derive(Clone, Debug)]
pub struct EncodeOptions {
    /// Code width of the base (2..=8; stored as UINT4 up to 4 bits, else UINT8).
    pub base_bits: u8,
    /// Code widths of the refinement stages, in order (each 2..=8).
    pub refine_bits: Vec<u8>,
    /// Block size along the reduction axis (0 = one scale per output channel).
    pub block: usize,
    /// Float tensors with fewer elements pass through unquantized.
    pub min_elements: usize,
    /// How the base's scales are chosen.
    pub clipping: Clipping,
    /// Sample inputs: enables GPTQ rounding of the base, and is required by
    /// [`ChunkOrder::Rate`] and [`EncodeOptions::base_budget`].
    pub calibration: Option<Arc<Calibration>>,
    /// Order of the stream's chunks.
    pub order: ChunkOrder,
    /// Mixed precision: base widths per tensor (1, 2, 3, 4 or 8 bits) chosen by
    /// sensitivity to fit this budget; `None` gives every tensor `base_bits`.
    pub base_budget: Option<BaseBudget>,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            base_bits: 4,
            refine_bits: vec![4, 8],
            block: 0,
            min_elements: 256,
            clipping: Clipping::Auto,
            calibration: None,
            order: ChunkOrder::Layer,
            base_budget: None,
        }
    }
}

/// Order of the chunks in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkOrder {
    /// Stage by stage, tensors in model order within a stage.
    Layer,
    /// By estimated accuracy gain per byte on the calibration data, so that
    /// accuracy rises steadily with the bytes received.
    Rate,
}

impl ChunkOrder {
    /// The order to use when none was asked for: by rate where there is
    /// calibration data to measure it, else stage by stage.
    pub fn default_for(calibrated: bool) -> ChunkOrder {
        if calibrated {
            ChunkOrder::Rate
        } else {
            ChunkOrder::Layer
        }
    }
}

/// Size of a mixed-precision base's quantized weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BaseBudget {
    /// Bytes of codes (bit-packed), f32 scales and zero points (packed
    /// at the file's storage width).
    Bytes(u64),
    /// The bytes a uniform base of this many bits per weight would take.
    BitsPerWeight(f32),
}

/// Base widths the mixed-precision allocation chooses from (1-bit codes
/// only here: a tensor the calibration finds insensitive may give its bits
/// to one that is not).
pub const MIXED_BITS: [u8; 5] = [1, 2, 3, 4, 8];

/// How the base quantizer picks each group's scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clipping {
    /// Plain min/max round-to-nearest.
    MinMax,
    /// Clipping search minimising `Σ|error|^p` (p in 2..=8).
    Norm(u8),
    /// The norm that measured best at the base width: p = 2 (mean squared
    /// error) from 4 bits up, p = 4 below (clips outliers less; on the
    /// Fashion-MNIST nets it lifted 2- and 3-bit top-1 by 5–30 points).
    Auto,
}

impl Clipping {
    /// The search norm for a base of `bits` bits (`None` = min/max).
    pub fn norm(self, bits: u8) -> Option<u8> {
        match self {
            Clipping::MinMax => None,
            Clipping::Norm(p) => Some(p),
            Clipping::Auto => Some(if bits >= 4 { 2 } else { 4 }),
        }
    }
}

/// The encoder's output.
pub struct Encoded {
    /// The base ONNX file's bytes.
    pub base: Vec<u8>,
    /// The `.p2u` stream's bytes.
    pub stream: Vec<u8>,
    /// The manifest (file names are `NAME.base.onnx`, `NAME.p2u`).
    pub manifest: Manifest,
}

/// What the encoder is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Running the model on the calibration data (one step).
    Calibrating,
    /// Choosing base codes, per tensor.
    Quantizing,
    /// Measuring each tensor's output sensitivity (one step).
    Measuring,
    /// Encoding the refinement and exact stages, per tensor.
    Encoding,
}

impl Phase {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Calibrating => "calibrating",
            Phase::Quantizing => "quantizing",
            Phase::Measuring => "measuring sensitivity",
            Phase::Encoding => "encoding",
        }
    }
}

/// Progress of an encode, reported per tensor within each phase.
#[derive(Clone, Debug)]
pub struct Progress<'a> {
    /// Current phase.
    pub phase: Phase,
    /// Tensors (or steps) done in this phase.
    pub done: usize,
    /// Tensors (or steps) in this phase.
    pub total: usize,
    /// Tensor just finished (empty for one-step phases).
    pub tensor: &'a str,
}

struct EncodedTensor {
    grid: Grid,
    base: StageCodes,
    chunks: Vec<Chunk>,
    hash: Hash,
    errors: Vec<ErrorStats>,
    /// Output-error proxy after each stage ([`proxy_error`]).
    proxy: Vec<f64>,
    sum_sq: f64,
}

/// A candidate base for one tensor.
struct BaseCandidate {
    codes: StageCodes,
    decoded: Vec<f32>,
    proxy: f64,
}

impl EncodeOptions {
    /// Checks the bit widths and stage count.
    pub fn validate(&self) -> Result<()> {
        if !(2..=8).contains(&self.base_bits) {
            return Err(Error::Invalid(format!("base bits {} (use 2..=8)", self.base_bits)));
        }
        if let Some(b) = self.refine_bits.iter().find(|b| !(2..=8).contains(*b)) {
            return Err(Error::Invalid(format!("refinement stage of {b} bits (use 2..=8)")));
        }
        if let Clipping::Norm(p) = self.clipping {
            if !(2..=8).contains(&p) {
                return Err(Error::Invalid(format!("clipping norm {p} (use 2..=8)")));
            }
        }
        if self.refine_bits.len() > 16 {
            return Err(Error::Invalid("at most 16 refinement stages".into()));
        }
        if self.calibration.is_none() && (self.order == ChunkOrder::Rate || self.base_budget.is_some()) {
            return Err(Error::Invalid(
                "the rate order and a base budget are measured on calibration data: give calibration inputs (--calibration)".into(),
            ));
        }
        if let Some(BaseBudget::BitsPerWeight(b)) = self.base_budget {
            if !(2.0..=8.0).contains(&b) {
                return Err(Error::Invalid(format!("base budget of {b} bits per weight (use 2..=8)")));
            }
        }
        Ok(())
    }

    /// The stage list: base, refinements, exact.
    pub fn stages(&self) -> Vec<Stage> {
        std::iter::once(Stage { kind: StageKind::Base, bits: self.base_bits })
            .chain(self.refine_bits.iter().map(|&bits| Stage { kind: StageKind::Refine, bits }))
            .chain(std::iter::once(Stage { kind: StageKind::Exact, bits: 0 }))
            .collect()
    }
}

/// The output-error proxy of `approx`: the layer's squared output error on
/// the calibration data where there are input statistics, else the squared
/// weight error.
fn proxy_error(stats: Option<&InputStats>, target: &[f32], approx: &[f32]) -> f64 {
    match stats {
        Some(s) => s.output_error(target, approx),
        None => target.iter().zip(approx).map(|(&t, &a)| (t as f64 - a as f64).powi(2)).sum(),
    }
}

fn quantize_candidate(
    w: &Weight,
    grid: &Grid,
    bits: u8,
    stats: Option<(&InputStats, &[Option<Factor>])>,
    opts: &EncodeOptions,
) -> BaseCandidate {
    let norm = opts.clipping.norm(bits);
    let codes = match stats {
        Some((s, f)) => quant::quantize_base_calibrated(&w.values, grid, bits, norm, s, f),
        None => quant::quantize_base(&w.values, grid, bits, norm),
    };
    let stats = stats.map(|(s, _)| s);
    let mut decoded = vec![0f32; w.values.len()];
    apply_codes(&mut decoded, grid, bits, &codes.packed(), &codes.scales, &codes.zeros);
    let proxy = proxy_error(stats, &w.values, &decoded);
    BaseCandidate { codes, decoded, proxy }
}

/// Bytes of a base: packed codes, then per group a 4-byte scale and a zero point.
fn base_bytes(codes: &StageCodes) -> u64 {
    base_size(codes.codes.len(), codes.scales.len(), codes.bits as f64)
}

/// Bytes per tensor a `BitsPerWeight` budget keeps back when it can, so that
/// a mixed base file (whose initializers' length prefixes may be a byte
/// longer) is never larger than the uniform one.
const FRAMING_MARGIN: u64 = 4;

/// Bytes of `elements` codes of `bits` bits (bit-packed) and, per group, an
/// f32 scale and a zero point as the base file stores it.
fn base_size(elements: usize, groups: usize, bits: f64) -> u64 {
    let zero_bits = onnx::storage(bits.ceil() as u8).1 as usize;
    (elements as f64 * bits / 8.0).ceil() as u64 + 4 * groups as u64 + (groups * zero_bits).div_ceil(8) as u64
}

fn encode_tensor(
    index: u32,
    w: &Weight,
    grid: Grid,
    base: BaseCandidate,
    stats: Option<&InputStats>,
    opts: &EncodeOptions,
) -> Result<EncodedTensor> {
    let target = &w.values;
    let BaseCandidate { codes: base, decoded: mut current, proxy } = base;
    let mut errors = vec![quant::error_stats(target, &current)];
    let mut proxies = vec![proxy];
    let mut chunks = vec![];
    for (k, &bits) in opts.refine_bits.iter().enumerate() {
        let r = quant::quantize_refinement(target, &current, &grid, bits);
        let packed = r.packed();
        apply_codes(&mut current, &grid, bits, &packed, &r.scales, &r.zeros);
        quant::apply_escapes(&mut current, &grid, &r.escapes, &r.scales);
        errors.push(quant::error_stats(target, &current));
        proxies.push(proxy_error(stats, target, &current));
        let payload = payload::write_refine(&r.scales, &packed, &r.escapes);
        chunks.push(Chunk { tensor: index, stage: k as u8 + 1, bits, payload });
    }
    let (bounds, coded) = exact::encode(target, &current, &grid);
    exact::decode(&mut current, &grid, &bounds, &coded)?;
    if current.iter().zip(target).any(|(a, b)| a.to_bits() != b.to_bits()) {
        return Err(Error::Invalid(format!("tensor {:?}: exact stage failed its self-check", w.name)));
    }
    errors.push(quant::error_stats(target, &current));
    proxies.push(0.0);
    let payload = payload::write_exact(&bounds, &coded);
    chunks.push(Chunk { tensor: index, stage: opts.refine_bits.len() as u8 + 1, bits: 0, payload });
    let sum_sq = target.iter().map(|&v| v as f64 * v as f64).sum();
    Ok(EncodedTensor { grid, base, chunks, hash: tensor_hash(target), errors, proxy: proxies, sum_sq })
}

/// Encodes `model`. `name` and `original` describe the source file for the
/// manifest; `progress` is called as each phase advances.
pub fn encode(
    model: &ModelProto,
    name: &str,
    original: FileInfo,
    opts: &EncodeOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Encoded> {
    opts.validate()?;
    let weights = onnx::extract_weights(model, opts.min_elements)?;
    if weights.is_empty() {
        return Err(Error::Unsupported(format!("no float32 weight with at least {} elements: nothing to encode", opts.min_elements)));
    }
    let n = weights.len();
    let grids: Vec<Grid> = weights.iter().map(|w| Grid::choose(&w.dims, w.channel_axis, opts.block)).collect();
    let calib = opts.calibration.as_deref();
    let stats: Vec<Option<InputStats>> = match calib {
        Some(c) => {
            progress(Progress { phase: Phase::Calibrating, done: 0, total: 1, tensor: "" });
            let s = calibrate::input_stats(model, &weights, c)?;
            progress(Progress { phase: Phase::Calibrating, done: 1, total: 1, tensor: "" });
            s
        }
        None => vec![None; n],
    };
    let widths: Vec<u8> = if opts.base_budget.is_some() { MIXED_BITS.to_vec() } else { vec![opts.base_bits] };
    let mut candidates: Vec<Vec<BaseCandidate>> = crate::parallel::map(
        n,
        |t| {
            let factors = stats[t].as_ref().map(gptq::factors);
            let with = stats[t].as_ref().zip(factors.as_deref());
            Ok(widths.iter().map(|&b| quantize_candidate(&weights[t], &grids[t], b, with, opts)).collect())
        },
        &mut |t, done| progress(Progress { phase: Phase::Quantizing, done, total: n, tensor: &weights[t].name }),
    )?;

    // Sensitivity turns each tensor's proxy into output distortion: d_t = α_t · proxy_t.
    let probe = widths.iter().position(|&b| b == opts.base_bits).unwrap_or(0);
    let distortion = match calib {
        Some(c) if opts.order == ChunkOrder::Rate || opts.base_budget.is_some() => Some(calibrate::Distortion::new(model, &weights, c)?),
        _ => None,
    };
    let alpha: Vec<f64> = match &distortion {
        Some(d) => {
            progress(Progress { phase: Phase::Measuring, done: 0, total: 1, tensor: "" });
            let replaced: Vec<Vec<f32>> = candidates.iter().map(|c| c[probe].decoded.clone()).collect();
            let per_tensor = d.per_tensor(&replaced)?;
            progress(Progress { phase: Phase::Measuring, done: 1, total: 1, tensor: "" });
            per_tensor.iter().zip(&candidates).map(|(&d, c)| if c[probe].proxy > 0.0 { d / c[probe].proxy } else { 0.0 }).collect()
        }
        None => vec![1.0; n],
    };
    let chosen: Vec<usize> = match (opts.base_budget, &distortion) {
        (Some(budget), Some(distortion)) => {
            let (bytes, margin) = match budget {
                BaseBudget::Bytes(b) => (b, 0),
                BaseBudget::BitsPerWeight(bits) => {
                    (grids.iter().map(|g| base_size(g.len(), g.groups(), bits as f64)).sum(), FRAMING_MARGIN * n as u64)
                }
            };
            allocate_widths(&candidates, &widths, &alpha, bytes, margin, distortion)?
        }
        _ => vec![0; n],
    };
    let mut bases: Vec<Option<BaseCandidate>> = candidates.iter_mut().zip(&chosen).map(|(c, &i)| Some(c.swap_remove(i))).collect();
    drop(candidates);
    let bases = std::sync::Mutex::new(&mut bases);
    let encoded = crate::parallel::map(
        n,
        |t| {
            let base =
                bases.lock().map_err(|_| Error::Invalid("an encoder thread panicked".into()))?[t].take().expect("each base is used once");
            encode_tensor(t as u32, &weights[t], grids[t], base, stats[t].as_ref(), opts)
        },
        &mut |t, done| progress(Progress { phase: Phase::Encoding, done, total: n, tensor: &weights[t].name }),
    )?;
    let order = match opts.order {
        ChunkOrder::Layer => order::layer_order(&encoded.iter().map(|e| e.chunks.len()).collect::<Vec<_>>()),
        ChunkOrder::Rate => order::rate_order(
            &encoded
                .iter()
                .zip(&alpha)
                .map(|(e, a)| {
                    e.chunks
                        .iter()
                        .enumerate()
                        .map(|(k, c)| {
                            // the exact stage changes no decision measurably: it goes last
                            let exact = k + 1 == e.chunks.len();
                            let gain = if exact { 0.0 } else { a * (e.proxy[k] - e.proxy[k + 1]) };
                            order::ChunkValue { bytes: c.frame_len() as u64, gain }
                        })
                        .collect()
                })
                .collect::<Vec<_>>(),
        ),
    };
    assemble(model, name, original, opts, &weights, &encoded, &order)
}

/// Mixed precision: the allocation with the lowest *measured* output
/// distortion among the greedy allocations over all widths and over widths
/// of 2 bits and more. (The per-tensor estimates add up well at small errors;
/// 1-bit tensors can interact beyond them, so the joint result is measured.)
fn allocate_widths(
    candidates: &[Vec<BaseCandidate>],
    widths: &[u8],
    alpha: &[f64],
    bytes: u64,
    margin: u64,
    distortion: &calibrate::Distortion,
) -> Result<Vec<usize>> {
    let mut best: Option<(f64, Vec<usize>)> = None;
    for min_bits in [1u8, 2] {
        let options: Vec<Vec<budget::Candidate>> = candidates
            .iter()
            .zip(alpha)
            .map(|(c, a)| {
                c.iter()
                    .zip(widths)
                    .map(|(c, &b)| budget::Candidate {
                        bytes: base_bytes(&c.codes),
                        distortion: if b < min_bits { f64::INFINITY } else { a * c.proxy },
                    })
                    .collect()
            })
            .collect();
        // `margin` is kept back unless only the full budget fits (uniform widths)
        let chosen = match budget::allocate(&options, bytes.saturating_sub(margin)).or_else(|_| budget::allocate(&options, bytes)) {
            Ok(c) => c,
            Err(e) if min_bits == 1 => return Err(e),
            Err(_) => continue,
        };
        if best.as_ref().is_some_and(|(_, b)| *b == chosen) {
            continue;
        }
        let replaced: Vec<(usize, &[f32])> = chosen.iter().enumerate().map(|(t, &i)| (t, candidates[t][i].decoded.as_slice())).collect();
        let measured = distortion.of(&replaced)?;
        if best.as_ref().is_none_or(|(d, _)| measured < *d) {
            best = Some((measured, chosen));
        }
    }
    Ok(best.expect("at least one allocation").1)
}

/// Writes the base, the stream (chunks in `order`) and the manifest.
fn assemble(
    model: &ModelProto,
    name: &str,
    original: FileInfo,
    opts: &EncodeOptions,
    weights: &[Weight],
    encoded: &[EncodedTensor],
    order: &[(usize, usize)],
) -> Result<Encoded> {
    let whash = weights_hash(weights.iter().zip(encoded).map(|(w, e)| (w.name.as_str(), w.dims.as_slice(), e.hash)));
    let base_weights: Vec<BaseWeight> =
        weights.iter().zip(encoded).map(|(w, e)| BaseWeight { weight: w, grid: e.grid, codes: &e.base }).collect();
    let meta = [("p2u.format", "1".to_string()), ("p2u.weights_sha256", hex(&whash))];
    let base = onnx::encode_model(&onnx::build_base(model, &base_weights, &meta)?);
    let mut stages = opts.stages();
    // a mixed base's nominal width: the element-weighted mean, rounded
    let elements: f64 = encoded.iter().map(|e| e.base.codes.len() as f64).sum();
    let mean_bits = encoded.iter().map(|e| e.base.bits as f64 * e.base.codes.len() as f64).sum::<f64>() / elements.max(1.0);
    stages[0].bits = (mean_bits.round() as u8).clamp(1, 8);
    let header = StreamHeader {
        weights_hash: whash,
        base_hash: sha256(&base),
        stages: stages.clone(),
        tensors: weights
            .iter()
            .zip(encoded)
            .map(|(w, e)| TensorEntry { name: w.name.clone(), dims: w.dims.clone(), grid: e.grid, hash: e.hash })
            .collect(),
        chunk_count: (weights.len() * (stages.len() - 1)) as u32,
    };
    let mut stream = header.to_bytes();
    let header_len = stream.len() as u64;
    // bytes of each stage, and where in base + stream each stage is complete
    let mut stage_bytes = vec![0u64; stages.len()];
    let mut complete_at = vec![base.len() as u64 + stream.len() as u64; stages.len()];
    stage_bytes[0] = base.len() as u64;
    complete_at[0] = base.len() as u64;
    let mut tensor_bytes: Vec<Vec<u64>> = encoded.iter().map(|e| vec![base_bytes(&e.base); stages.len()]).collect();
    for &(t, k) in order {
        let chunk = &encoded[t].chunks[k];
        let bytes = chunk.to_bytes();
        let s = chunk.stage as usize;
        stage_bytes[s] += bytes.len() as u64;
        tensor_bytes[t][s] = bytes.len() as u64;
        stream.extend_from_slice(&bytes);
        complete_at[s] = base.len() as u64 + stream.len() as u64;
    }
    stage_bytes[1] += header_len;
    for s in 1..stages.len() {
        complete_at[s] = complete_at[s].max(complete_at[s - 1]);
    }
    let n_total: f64 = weights.iter().map(|w| w.values.len() as f64).sum();
    let ss_total: f64 = encoded.iter().map(|e| e.sum_sq).sum();
    let stage_infos = stages
        .iter()
        .enumerate()
        .map(|(s, st)| {
            let se: f64 = weights.iter().zip(encoded).map(|(w, e)| e.errors[s].rmse.powi(2) * w.values.len() as f64).sum();
            let error = ErrorStats {
                rmse: (se / n_total).sqrt(),
                max_abs: encoded.iter().map(|e| e.errors[s].max_abs).fold(0.0, f64::max),
                relative: if ss_total > 0.0 { (se / ss_total).sqrt() } else { 0.0 },
                mismatched: encoded.iter().map(|e| e.errors[s].mismatched).sum(),
            };
            StageInfo {
                stage: s as u32,
                kind: st.kind.name().into(),
                bits: st.bits,
                bytes: stage_bytes[s],
                cumulative_bytes: complete_at[s],
                error,
            }
        })
        .collect();
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        name: name.into(),
        original,
        base: FileInfo { file: format!("{name}.base.onnx"), bytes: base.len() as u64, sha256: hex(&sha256(&base)) },
        stream: FileInfo { file: format!("{name}.p2u"), bytes: stream.len() as u64, sha256: hex(&sha256(&stream)) },
        weights_sha256: hex(&whash),
        stages: stage_infos,
        tensors: weights
            .iter()
            .zip(encoded)
            .zip(tensor_bytes)
            .map(|((w, e), bytes)| TensorInfo {
                name: w.name.clone(),
                dims: w.dims.clone(),
                groups: e.grid.groups(),
                base_bits: e.base.bits,
                error: e.errors.clone(),
                bytes,
            })
            .collect(),
    };
    Ok(Encoded { base, stream, manifest })
}

/// Describes a file for the manifest.
pub fn file_info(file: &str, bytes: &[u8]) -> FileInfo {
    FileInfo { file: file.into(), bytes: bytes.len() as u64, sha256: hex(&sha256(bytes)) }
}
