//! Calibration: what the encoder learns by running the fp32 model in tract
//! on sample inputs the user provides.
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

use std::collections::BTreeMap;
use std::sync::Arc;

use tract_onnx::pb::{ModelProto, NodeProto};
use tract_onnx::prelude::tract_ndarray::ArrayView2;
use tract_onnx::prelude::{TValue, TVec, Tensor};

use crate::error::{Error, Result};
use crate::onnx::{self, Weight};
use crate::quant::InputStats;
use crate::runtime::{build_plan, Plan, RuntimeOptions};

/// Sample inputs for calibration: `count` items of shape `item_dims`
/// (the model's single input without its batch axis), already preprocessed
/// exactly as at inference time.
#[derive(Clone)]
pub struct Calibration {
    item_dims: Vec<usize>,
    data: Vec<f32>,
}

impl std::fmt::Debug for Calibration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Calibration({} × {:?})", self.len(), self.item_dims)
    }
}

/// Images per tract run.
const BATCH: usize = 32;
/// Widest weight input (`Cin/group · kh · kw`, or K) that gets a Gram
/// matrix (32 MiB in f64); wider ones are rounded data-free.
pub const MAX_INPUTS: usize = 2048;
/// Memory for all Gram matrices of one pass (each worker thread holds one
/// batch's worth more); beyond it the widest layers are rounded data-free.
pub const MAX_GRAM_BYTES: usize = 256 << 20;
/// Items used to measure output sensitivity.
const SENSITIVITY_ITEMS: usize = 64;

impl Calibration {
    /// Wraps `data` (items back to back, row-major) of items shaped `item_dims`.
    pub fn new(item_dims: Vec<usize>, data: Vec<f32>) -> Result<Calibration> {
        let item: usize = item_dims.iter().product();
        if item == 0 || data.is_empty() || !data.len().is_multiple_of(item) {
            return Err(Error::Invalid(format!("calibration data of {} values is not a whole number of {item_dims:?} items", data.len())));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::Invalid(format!("calibration value {i} is {}", data[i])));
        }
        Ok(Calibration { item_dims, data })
    }

    /// Reads a NumPy `.npy` array of little-endian float32, C order, shaped
    /// `[count, …item]`.
    pub fn from_npy(bytes: &[u8]) -> Result<Calibration> {
        let bad = |why: &str| Error::Invalid(format!("calibration .npy: {why}"));
        if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
            return Err(bad("not a .npy file (magic missing)"));
        }
        let (header_len, start) = match bytes[6] {
            1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
            2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize, 12),
            v => return Err(bad(&format!("format version {v}"))),
        };
        let header = bytes.get(start..start + header_len).ok_or_else(|| bad("truncated header"))?;
        let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;
        let field = |key: &str| {
            let at = header.find(&format!("'{key}'")).ok_or_else(|| bad(&format!("header has no '{key}'")))?;
            Ok::<_, Error>(header[at + key.len() + 2..].trim_start_matches([':', ' ']))
        };
        if !field("descr")?.starts_with("'<f4'") {
            return Err(bad("dtype must be '<f4' (little-endian float32)"));
        }
        if !field("fortran_order")?.starts_with("False") {
            return Err(bad("Fortran order is not supported"));
        }
        let shape = field("shape")?;
        let shape = shape.strip_prefix('(').and_then(|s| s.split(')').next()).ok_or_else(|| bad("unreadable shape"))?;
        let dims: Vec<usize> = shape
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map_err(|_| bad(&format!("shape entry {s:?}"))))
            .collect::<Result<_>>()?;
        if dims.len() < 2 {
            return Err(bad("shape must be [count, …item dims]"));
        }
        let body = &bytes[start + header_len..];
        let count: usize = dims.iter().product();
        if body.len() != count * 4 {
            return Err(bad(&format!("{} data bytes for shape {dims:?} (expected {})", body.len(), count * 4)));
        }
        let data = body.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
        Calibration::new(dims[1..].to_vec(), data)
    }

    /// These items followed by `other`'s (same item shape required).
    pub fn concat(mut self, other: &Calibration) -> Result<Calibration> {
        if other.item_dims != self.item_dims {
            return Err(Error::Invalid(format!(
                "calibration items of shape {:?} and {:?} cannot be mixed",
                self.item_dims, other.item_dims
            )));
        }
        self.data.extend_from_slice(&other.data);
        Ok(self)
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.data.len() / self.item_dims.iter().product::<usize>()
    }

    /// True if there is no item (never, once constructed).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Shape of one item.
    pub fn item_dims(&self) -> &[usize] {
        &self.item_dims
    }

    /// The first `limit` items in batches of at most [`BATCH`].
    fn batches(&self, limit: usize) -> Vec<Tensor> {
        let item: usize = self.item_dims.iter().product();
        self.data[..item * self.len().min(limit)]
            .chunks(item * BATCH)
            .map(|c| {
                let mut shape = vec![c.len() / item];
                shape.extend_from_slice(&self.item_dims);
                Tensor::from_shape(&shape, c).expect("sizes checked in Calibration::new")
            })
            .collect()
    }
}

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

/// Input rows to accumulate per layer: 16 per input dimension, within
/// `[4096, 16384]` — enough for a well-conditioned Gram matrix, bounded cost.
fn rows_wanted(inputs: usize) -> usize {
    (16 * inputs).clamp(4096, 16384)
}

/// Per weight, the Gram matrices of its inputs over all calibration items
/// (`None` where the consumer is not a supported Conv/Gemm/MatMul, or is
/// wider than [`MAX_INPUTS`] or beyond [`MAX_GRAM_BYTES`]: those tensors are
/// rounded data-free).
pub fn input_stats(model: &ModelProto, weights: &[Weight], calib: &Calibration) -> Result<Vec<Option<InputStats>>> {
    let g = model.graph.as_ref().ok_or_else(|| Error::Onnx("model has no graph".into()))?;
    let graph_inputs: Vec<&str> = g.input.iter().map(|i| i.name.as_str()).filter(|n| !g.initializer.iter().any(|t| &t.name == n)).collect();
    if graph_inputs.len() != 1 {
        return Err(Error::Unsupported(format!("calibration needs a model with one input (this one has {})", graph_inputs.len())));
    }
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
        if p.activation != graph_inputs[0] && !outputs.contains(&p.activation) {
            outputs.push(p.activation.clone());
        }
    }
    let mut probe_model = model.clone();
    if let Some(g) = probe_model.graph.as_mut() {
        g.output = outputs.iter().map(|n| tract_onnx::pb::ValueInfoProto { name: n.clone(), ..Default::default() }).collect();
    }
    let batches = calib.batches(usize::MAX);
    let plans = PlanCache::new(probe_model, calib);
    let per_item: Vec<usize> = probes.iter().map(|p| rows_wanted(p.inputs).div_ceil(calib.len())).collect();

    let mut total: Vec<Vec<Vec<f64>>> = probes.iter().map(|p| vec![vec![0f64; p.inputs * p.inputs]; gram_count(p)]).collect();
    let mut samples = vec![0u64; probes.len()];
    crate::parallel::in_order(
        batches.len(),
        |b| batch_grams(&batches[b], &plans.run(&batches[b])?, &outputs, &probes, &per_item, b * BATCH),
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
    item_dims: Vec<usize>,
    plans: std::sync::Mutex<BTreeMap<usize, Plan>>,
}

impl PlanCache {
    fn new(model: ModelProto, calib: &Calibration) -> PlanCache {
        PlanCache { model, item_dims: calib.item_dims.clone(), plans: Default::default() }
    }

    fn plan(&self, batch: usize) -> Result<Plan> {
        let mut plans = self.plans.lock().map_err(|_| Error::Engine("a calibration thread panicked".into()))?;
        if let Some(p) = plans.get(&batch) {
            return Ok(p.clone());
        }
        let mut shape = vec![batch];
        shape.extend_from_slice(&self.item_dims);
        let p = build_plan(&self.model, &RuntimeOptions { input_shapes: vec![shape], ..Default::default() })?;
        plans.insert(batch, p.clone());
        Ok(p)
    }

    fn run(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        self.plan(x.shape()[0])?.run(vec![x.clone()])
    }
}

fn f32_slice(t: &Tensor) -> Result<std::borrow::Cow<'_, [f32]>> {
    let v = t.to_plain_array_view::<f32>().map_err(|e| Error::Engine(format!("activation is not f32: {e}")))?;
    Ok(match v.to_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(v.iter().copied().collect()),
    })
}

fn batch_grams(
    x: &Tensor,
    acts: &[Tensor],
    outputs: &[String],
    probes: &[Probe],
    per_item: &[usize],
    first_item: usize,
) -> Result<BatchGrams> {
    let mut grams = Vec::with_capacity(probes.len());
    let mut rows = Vec::with_capacity(probes.len());
    for (p, &take) in probes.iter().zip(per_item) {
        let act = match outputs.iter().position(|o| *o == p.activation) {
            Some(i) => &acts[i],
            None => x,
        };
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

/// Measures how far the model's outputs move, on the first
/// [`SENSITIVITY_ITEMS`] calibration items, when some weights are replaced:
/// one plan with the weights as inputs, built once.
pub struct Distortion<'a> {
    weights: &'a [Weight],
    originals: Vec<TValue>,
    batches: Vec<Tensor>,
    plans: PlanCache,
    reference: Vec<f32>,
}

impl<'a> Distortion<'a> {
    /// Builds the plan and the reference outputs of the original weights.
    pub fn new(model: &ModelProto, weights: &'a [Weight], calib: &Calibration) -> Result<Distortion<'a>> {
        let names: Vec<&str> = weights.iter().map(|w| w.name.as_str()).collect();
        let proto =
            onnx::weights_as_inputs(&onnx::strip_weights(model, &names), weights.iter().map(|w| (w.name.as_str(), w.dims.as_slice())))?;
        let originals = weights
            .iter()
            .map(|w| {
                Tensor::from_shape(&w.dims, &w.values).map(|t| TValue::from_const(Arc::new(t))).map_err(|e| Error::Engine(e.to_string()))
            })
            .collect::<Result<_>>()?;
        let mut d = Distortion {
            weights,
            originals,
            batches: calib.batches(SENSITIVITY_ITEMS),
            plans: PlanCache::new(proto, calib),
            reference: vec![],
        };
        d.reference = d.outputs(&[])?;
        Ok(d)
    }

    fn outputs(&self, replaced: &[(usize, &[f32])]) -> Result<Vec<f32>> {
        let mut out = vec![];
        for x in &self.batches {
            let mut inputs: TVec<TValue> = TVec::new();
            inputs.push(TValue::from(x.clone()));
            for (i, w) in self.originals.iter().enumerate() {
                match replaced.iter().find(|(j, _)| *j == i) {
                    Some((_, values)) => inputs
                        .push(TValue::from(Tensor::from_shape(&self.weights[i].dims, values).map_err(|e| Error::Engine(e.to_string()))?)),
                    None => inputs.push(w.clone()),
                }
            }
            for y in self.plans.plan(x.shape()[0])?.run_values(inputs)? {
                out.extend_from_slice(&f32_slice(&y)?);
            }
        }
        Ok(out)
    }

    /// Mean squared change of the outputs with `replaced` weights
    /// (`(index, values)`; the others original).
    pub fn of(&self, replaced: &[(usize, &[f32])]) -> Result<f64> {
        let y = self.outputs(replaced)?;
        let se: f64 = y.iter().zip(&self.reference).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum();
        Ok(se / self.reference.len().max(1) as f64)
    }

    /// Per weight, the distortion when only that weight is replaced by
    /// `replaced[i]`, on every core.
    pub fn per_tensor(&self, replaced: &[Vec<f32>]) -> Result<Vec<f64>> {
        crate::parallel::map(replaced.len(), |i| self.of(&[(i, &replaced[i])]), &mut |_, _| {})
    }
}
