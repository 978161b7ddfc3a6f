//! The live model: a tract plan serving inference while residual chunks
//! patch the weights in place.
//!
//! [`ProgressiveModel`] holds every quantized weight once, as the tract
//! tensor it serves from. While the model refines, it serves from a plan
//! optimised once with the weights as extra graph inputs
//! ([`Serving::WeightInputs`]): applying a chunk runs the dequantize-and-add
//! kernel straight into that tensor, and the next run uses it — no tract
//! work at all per update. When the last stage lands, the model is rebuilt
//! once with the weights as constants ([`Serving::Constants`]), which is the
//! exact graph tract builds for the original file: final outputs are
//! bit-identical to it, at full speed. If a graph cannot take its weights as
//! inputs, the model serves from constants throughout and rebuilds on the
//! first run after a change. A chunk that fails validation changes nothing:
//! the model keeps serving its last good stage.
//!
//! Work is bounded for callers with a frame budget (a browser's main
//! thread): [`ProgressiveModel::push`] only queues bytes, and each
//! [`ProgressiveModel::step`] reads one frame, applies one refinement chunk,
//! or advances an exact-stage decode (and then its hash check) by about
//! `budget` weights. [`ProgressiveModel::feed`] does both at once.

mod input;
mod plan;
mod values;

pub use input::{Channels, Layout, Normalization, PixelTransform};
pub use plan::{build_plan, build_plan_with_weights, Plan};
pub use values::Values;

use std::collections::HashMap;
use std::sync::Arc;

use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::{IntoTValue, TValue, Tensor};

use crate::error::{Error, Result};
use crate::format::stream::{Chunk, Frame, FrameReader, StageKind, StreamHeader, HEADER_PREFIX};
use crate::format::{hex, payload, sha256, Hash, TensorHasher};
use crate::onnx;
use crate::quant::{apply_codes, apply_escapes, exact, Grid};

/// Which kind of plan serves inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serving {
    /// One plan with the weights as graph inputs; updates cost no tract work.
    WeightInputs,
    /// Weights baked in as constants (the final model, or the fallback).
    Constants,
}

/// How to build the tract plan.
#[derive(Clone, Debug, Default)]
pub struct RuntimeOptions {
    /// Concrete shapes for the model inputs, in order (empty: as declared).
    pub input_shapes: Vec<Vec<usize>>,
    /// Keep serving from the weights-as-inputs plan once exact instead of
    /// rebuilding with constants (saves the one long rebuild, e.g. on a
    /// browser's main thread, at some inference speed).
    pub keep_inputs_plan: bool,
    /// SHA-256 the base file must have (a manifest's `base.sha256`); a
    /// base with another hash is refused before anything is built.
    pub base_sha256: Option<Hash>,
    /// SHA-256 the stream header must have (a manifest's
    /// `stream_header_sha256`). The header lists every chunk's digest, so
    /// with it given every stream byte is verified before it is applied.
    pub stream_header_sha256: Option<Hash>,
    /// Build no plan until the first run: for tools that only read the
    /// weights (`p2u verify`), which then need no input shape the model
    /// can run at.
    pub defer_plan: bool,
    /// Serve every stage from a plan with the weights as constants (the
    /// final plan's speed from stage 0 on), rebuilt as a step of its own
    /// each time the stage advances: one long step per stage, for a
    /// worker. Results between rebuilds come from the snapshot taken when
    /// the stage was reached and say so.
    pub stage_plans: bool,
}

/// Where the model stands in its progression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageStatus {
    /// Highest stage every tensor has reached (0 = base).
    pub stage: u32,
    /// Number of stages including the base (known once the stream header arrived).
    pub stages: u32,
    /// Chunks applied.
    pub chunks_applied: u64,
    /// Chunks the stream announced (0 before its header).
    pub chunks_total: u64,
    /// True when every weight is bit-identical to the original (hash-checked).
    pub exact: bool,
}

/// Outputs of one inference and the stage of the weights that produced them.
#[derive(Debug)]
pub struct Inference {
    /// Model outputs.
    pub outputs: Vec<Tensor>,
    /// Stage of the plan that computed them.
    pub status: StageStatus,
}

/// A frozen, thread-safe view of a [`ProgressiveModel`] at one stage.
#[derive(Clone)]
pub struct Runner {
    plan: Plan,
    weights: Vec<TValue>,
    status: StageStatus,
}

impl Runner {
    /// Runs inference; the result carries the snapshot's stage.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Inference> {
        let expected = self.plan.input_count().saturating_sub(self.weights.len());
        if inputs.len() != expected {
            return Err(Error::Invalid(format!("the model takes {expected} inputs, got {}", inputs.len())));
        }
        let values = inputs.into_iter().map(TValue::from).chain(self.weights.iter().cloned()).collect();
        Ok(Inference { outputs: self.plan.run_values(values)?, status: self.status })
    }

    /// The stage this snapshot serves.
    pub fn status(&self) -> StageStatus {
        self.status
    }
}

struct LiveTensor {
    name: String,
    dims: Vec<usize>,
    grid: Grid,
    /// The weights, shared with tract while a run is in flight.
    values: Arc<Tensor>,
    stage: u8,
}

impl LiveTensor {
    fn values(&self) -> &[f32] {
        tensor_slice(&self.values)
    }

    /// Mutable values; copies only if a run still holds the tensor.
    fn values_mut(&mut self) -> &mut [f32] {
        Arc::make_mut(&mut self.values)
            .to_plain_array_view_mut::<f32>()
            .expect("weights are f32")
            .into_slice()
            .expect("weights are contiguous")
    }
}

/// Largest piece of a fed slice handed to the stream reader at once.
pub const FEED_PIECE: usize = 1 << 20;

fn tensor_slice(t: &Tensor) -> &[f32] {
    t.to_plain_array_view::<f32>().expect("weights are f32").to_slice().expect("weights are contiguous")
}

fn f32_tensor(dims: &[usize], values: Vec<f32>) -> Result<Arc<Tensor>> {
    let a = tract_onnx::prelude::tract_ndarray::ArrayD::from_shape_vec(dims, values)
        .map_err(|e| Error::Onnx(format!("weight shape {dims:?}: {e}")))?;
    Ok(Arc::new(a.into()))
}

/// Errors with [`Error::Corrupt`] unless `got` is the `want`ed hash (when
/// one is expected).
fn check_hash(what: &str, got: Hash, want: Option<Hash>) -> Result<()> {
    match want {
        Some(want) if want != got => Err(Error::Corrupt(format!(
            "{what}'s SHA-256 is {}…, expected {}… (a damaged download, or the file changed on the server)",
            &hex(&got)[..16],
            &hex(&want)[..16]
        ))),
        _ => Ok(()),
    }
}

/// A model that serves inference and refines itself as chunks arrive.
pub struct ProgressiveModel {
    skeleton: ModelProto,
    tensors: Vec<LiveTensor>,
    by_name: HashMap<String, usize>,
    base_hash: Hash,
    weights_hash: Option<String>,
    header: Option<StreamHeader>,
    table_to_live: Vec<usize>,
    reader: FrameReader,
    chunks_applied: u64,
    options: RuntimeOptions,
    plan: Plan,
    serving: Serving,
    fallback_reason: Option<String>,
    stale: bool,
    /// What a constants plan was built from (what its results report).
    plan_status: StageStatus,
    /// The exact-stage job under way, with its chunk's index, offset and end.
    job: Option<(ExactJob, u64, u64, u64)>,
    /// Stream offset and chunk count after the last frame that was applied.
    good: (u64, u64),
}

/// An exact-stage chunk being decoded in short steps.
struct ExactJob {
    slot: usize,
    grid: Grid,
    hash: Hash,
    /// The range-coded part of the payload.
    payload: Vec<u8>,
    bounds: Vec<f32>,
    /// Copy of the live weights being turned into the original ones.
    values: Vec<f32>,
    decoding: exact::Decoding,
    decoded: bool,
    hasher: TensorHasher,
    hashed: usize,
}

impl ProgressiveModel {
    /// Loads a base ONNX file: decodes its low-bit weights and builds the
    /// stage-0 plan.
    pub fn from_base(base: &[u8], options: RuntimeOptions) -> Result<Self> {
        let base_hash = sha256(base);
        check_hash("the base", base_hash, options.base_sha256)?;
        let proto = onnx::decode_model(base)?;
        onnx::check_model(&proto, base.len())?;
        let weights_hash = onnx::metadata(&proto, "p2u.weights_sha256").map(str::to_owned);
        let (skeleton, weights) = onnx::split_base(proto)?;
        let by_name = weights.iter().enumerate().map(|(i, w)| (w.name.clone(), i)).collect();
        let tensors = weights
            .into_iter()
            .map(|w| Ok(LiveTensor { values: f32_tensor(&w.dims, w.values)?, name: w.name, dims: w.dims, grid: w.grid, stage: 0 }))
            .collect::<Result<Vec<_>>>()?;
        let mut m = ProgressiveModel {
            skeleton,
            tensors,
            by_name,
            base_hash,
            weights_hash,
            header: None,
            table_to_live: vec![],
            reader: FrameReader::new(),
            chunks_applied: 0,
            options,
            plan: Plan::empty(),
            serving: Serving::WeightInputs,
            fallback_reason: None,
            stale: true,
            plan_status: StageStatus { stage: 0, stages: 1, chunks_applied: 0, chunks_total: 0, exact: false },
            job: None,
            good: (0, 0),
        };
        if m.options.defer_plan {
            m.serving = Serving::Constants;
            return Ok(m);
        }
        if m.options.stage_plans {
            m.serving = Serving::Constants;
            m.refresh()?;
            return Ok(m);
        }
        let with_inputs = onnx::weights_as_inputs(&m.skeleton, m.tensors.iter().map(|t| (t.name.as_str(), t.dims.as_slice())))
            .and_then(|proto| build_plan(&proto, &m.options));
        match with_inputs {
            Ok(plan) => {
                m.plan = plan;
                m.stale = false;
            }
            // a base that fails its checks fails them with constants too
            Err(e @ Error::Corrupt(_)) => return Err(e),
            Err(e) => {
                m.serving = Serving::Constants;
                m.fallback_reason = Some(e.to_string());
                m.refresh()?;
            }
        }
        Ok(m)
    }

    /// How inference is served right now.
    pub fn serving(&self) -> Serving {
        self.serving
    }

    /// Why the weights-as-inputs plan could not be used, if it could not.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// Current progression of the weights (the plan catches up at the next run).
    pub fn status(&self) -> StageStatus {
        let stages = self.header.as_ref().map_or(1, |h| h.stages.len() as u32);
        let stage = self.tensors.iter().map(|t| t.stage as u32).min().unwrap_or(0);
        StageStatus {
            stage,
            stages,
            chunks_applied: self.chunks_applied,
            chunks_total: self.header.as_ref().map_or(0, |h| h.chunk_count as u64),
            exact: self.header.is_some() && stage + 1 == stages,
        }
    }

    /// The stream header, once attached.
    pub fn header(&self) -> Option<&StreamHeader> {
        self.header.as_ref()
    }

    /// Checks that a stream header belongs to this base and attaches it.
    pub fn attach(&mut self, header: StreamHeader) -> Result<()> {
        if self.header.is_some() {
            return Err(Error::Order("a stream header is already attached".into()));
        }
        if header.base_hash != self.base_hash {
            return Err(Error::Mismatch(format!(
                "stream was made for base {}, this model's base is {}",
                &hex(&header.base_hash)[..16],
                &hex(&self.base_hash)[..16]
            )));
        }
        if let Some(w) = &self.weights_hash {
            if *w != hex(&header.weights_hash) {
                return Err(Error::Mismatch("stream refines other weights than this base's".into()));
            }
        }
        if header.tensors.len() != self.tensors.len() {
            return Err(Error::Mismatch(format!("stream has {} tensors, base has {}", header.tensors.len(), self.tensors.len())));
        }
        let mut map = Vec::with_capacity(header.tensors.len());
        for t in &header.tensors {
            let i = *self.by_name.get(&t.name).ok_or_else(|| Error::Mismatch(format!("stream tensor {:?} is not in the base", t.name)))?;
            let w = &self.tensors[i];
            if w.dims != t.dims || w.grid != t.grid {
                return Err(Error::Mismatch(format!("tensor {:?}: shape or grid differs from the base's", t.name)));
            }
            map.push(i);
        }
        self.table_to_live = map;
        self.header = Some(header);
        Ok(())
    }

    /// Applies one chunk to the master weights. On error nothing changed.
    pub fn apply(&mut self, chunk: &Chunk) -> Result<()> {
        if let Some(mut job) = self.begin(chunk)? {
            while !self.advance(&mut job, usize::MAX)? {}
        }
        Ok(())
    }

    /// Validates a chunk and applies it if it is a refinement; an exact
    /// stage is returned as a job to [`Self::advance`] (it is decoded into a
    /// copy and swapped in only once its hash matches).
    fn begin(&mut self, chunk: &Chunk) -> Result<Option<ExactJob>> {
        let header = self.header.as_ref().ok_or_else(|| Error::Order("chunk before the stream header".into()))?;
        let (min, max) = header.payload_bounds(chunk.tensor, chunk.stage, chunk.bits)?;
        let entry = &header.tensors[chunk.tensor as usize];
        let slot = self.table_to_live[chunk.tensor as usize];
        let live = &mut self.tensors[slot];
        if live.stage + 1 != chunk.stage {
            return Err(Error::Order(format!("tensor {:?} is at stage {}, chunk is for stage {}", entry.name, live.stage, chunk.stage)));
        }
        if !(min..=max).contains(&chunk.payload.len()) {
            return Err(Error::Corrupt(format!("chunk payload of {} bytes, expected {min}..={max}", chunk.payload.len())));
        }
        let grid: Grid = entry.grid;
        let bad = |e: Error| Error::Corrupt(format!("tensor {:?}: {e}", entry.name));
        match header.stages[chunk.stage as usize].kind {
            StageKind::Refine => {
                let r = payload::read_refine(&chunk.payload, &grid, chunk.bits).map_err(bad)?;
                let zeros = vec![1i32 << (chunk.bits - 1); grid.groups()];
                let values = live.values_mut();
                apply_codes(values, &grid, chunk.bits, r.codes, &r.scales, &zeros);
                apply_escapes(values, &grid, &r.escapes, &r.scales);
                self.commit(slot);
                Ok(None)
            }
            StageKind::Exact => {
                let e = payload::read_exact(&chunk.payload, &grid).map_err(bad)?;
                let coded_from = chunk.payload.len() - e.coded.len();
                let decoding = exact::Decoding::new(e.coded, &e.bounds, entry.precision).map_err(bad)?;
                Ok(Some(ExactJob {
                    slot,
                    grid,
                    hash: entry.hash,
                    payload: chunk.payload[coded_from..].to_vec(),
                    bounds: e.bounds,
                    values: live.values().to_vec(),
                    decoding,
                    decoded: false,
                    hasher: TensorHasher::default(),
                    hashed: 0,
                }))
            }
            StageKind::Base => unreachable!("payload_bounds rejects stage 0"),
        }
    }

    /// Does up to about `budget` weights of work on an exact-stage job;
    /// returns true once it is applied. On error nothing changed.
    fn advance(&mut self, job: &mut ExactJob, budget: usize) -> Result<bool> {
        let name = &self.tensors[job.slot].name;
        if !job.decoded {
            job.decoded = job
                .decoding
                .decode_some(&mut job.values, &job.grid, &job.bounds, &job.payload, budget)
                .map_err(|e| Error::Corrupt(format!("tensor {name:?}: {e}")))?;
            return Ok(false);
        }
        if job.hashed < job.values.len() {
            let end = job.hashed.saturating_add(budget).min(job.values.len());
            job.hasher.update(&job.values[job.hashed..end]);
            job.hashed = end;
            if end < job.values.len() {
                return Ok(false);
            }
        }
        if std::mem::take(&mut job.hasher).finish() != job.hash {
            return Err(Error::Mismatch(format!("tensor {name:?}: exact stage does not reproduce the original (hash mismatch)")));
        }
        let live = &mut self.tensors[job.slot];
        live.values = f32_tensor(&live.dims, std::mem::take(&mut job.values))?;
        self.commit(job.slot);
        Ok(true)
    }

    /// Records that the tensor in `slot` reached its next stage.
    fn commit(&mut self, slot: usize) {
        let before = self.status().stage;
        self.tensors[slot].stage += 1;
        self.chunks_applied += 1;
        self.stale = if self.options.stage_plans {
            self.stale || self.status().stage > before
        } else {
            self.serving == Serving::Constants || (self.status().exact && !self.options.keep_inputs_plan)
        };
    }

    /// Feeds stream bytes as they arrive (any slicing); applies every chunk
    /// that becomes complete and returns how many were applied. The bytes
    /// are taken in pieces of at most [`FEED_PIECE`], so the reader never
    /// holds more than one chunk plus one piece, whatever the slice size.
    /// On error the model keeps its last good stage and the stream stays failed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<usize> {
        self.reader.check()?;
        let before = self.chunks_applied;
        for piece in bytes.chunks(FEED_PIECE) {
            self.push(piece)?;
            while self.step(usize::MAX)? {}
        }
        Ok((self.chunks_applied - before) as usize)
    }

    /// Queues stream bytes without applying anything; [`Self::step`] does
    /// the work. Push the next piece only once `step` returned false, and
    /// the reader holds at most one chunk plus that piece.
    pub fn push(&mut self, bytes: &[u8]) -> Result<()> {
        self.reader.check()?;
        self.reader.push(bytes);
        Ok(())
    }

    /// Does one bounded piece of work on the queued bytes: reads the next
    /// frame, applies a refinement chunk, or advances an exact-stage decode
    /// by about `budget` weights (refinements are applied whole: they cost
    /// a few ns per weight). Returns false when nothing is left to do until
    /// more bytes arrive. Inference in between steps serves the last
    /// completed stage. On error the model keeps its last good stage and
    /// the stream stays failed.
    pub fn step(&mut self, budget: usize) -> Result<bool> {
        self.reader.check()?;
        let budget = budget.max(1);
        if self.options.stage_plans && self.stale {
            // the stage advanced: its plan, as a step of its own
            self.refresh().map_err(|e| self.fail(e))?;
            return Ok(true);
        }
        if let Some((mut job, index, offset, end)) = self.job.take() {
            return match self.advance(&mut job, budget) {
                Ok(true) => {
                    self.good = (end, index + 1);
                    Ok(true)
                }
                Ok(false) => {
                    self.job = Some((job, index, offset, end));
                    Ok(true)
                }
                Err(e) => Err(self.fail(Error::chunk(index, offset, e))),
            };
        }
        match self.reader.next_frame()? {
            None => Ok(false),
            Some(Frame::Header(h)) => {
                if let Some(got) = self.reader.header_sha256() {
                    check_hash("the stream header", got, self.options.stream_header_sha256).map_err(|e| self.fail(e))?;
                }
                self.attach(h).map_err(|e| self.fail(e))?;
                self.good = (self.reader.consumed(), 0);
                Ok(true)
            }
            Some(Frame::Chunk { chunk, index, offset }) => {
                let end = self.reader.consumed();
                match self.begin(&chunk) {
                    Ok(Some(job)) => self.job = Some((job, index, offset, end)),
                    Ok(None) => self.good = (end, index + 1),
                    Err(e) => return Err(self.fail(Error::chunk(index, offset, e))),
                }
                Ok(true)
            }
        }
    }

    /// Forgets a failure and every byte after the last frame that was
    /// applied, so the stream can be fetched again from
    /// [`Self::stream_received`] (a corrupt cached copy, a file that changed
    /// on the server). The weights keep their last good stage; the bytes
    /// fetched next are checked as before.
    pub fn rewind_stream(&mut self) {
        self.job = None;
        let (consumed, chunks) = self.good;
        self.reader = match (&self.header, self.reader.header_sha256()) {
            (Some(h), Some(sha)) => FrameReader::resume(h.clone(), sha, consumed, chunks),
            _ => FrameReader::new(),
        };
    }

    /// Whether a stream starting with `prefix` has the header this model
    /// read (`None` until `prefix` holds a whole header, or before the model
    /// read one): a download that restarts from byte 0 is the same stream
    /// exactly when its header is, since the header lists every chunk's
    /// digest.
    pub fn same_stream_header(&self, prefix: &[u8]) -> Option<bool> {
        let have = self.reader.header_sha256()?;
        let fixed: &[u8; HEADER_PREFIX] = prefix.get(..HEADER_PREFIX)?.try_into().ok()?;
        let Ok(total) = StreamHeader::total_len(fixed) else { return Some(false) };
        Some(sha256(prefix.get(..total)?) == have)
    }

    /// True while an exact-stage chunk is part-way decoded.
    pub fn busy(&self) -> bool {
        self.job.is_some()
    }

    fn fail(&mut self, e: Error) -> Error {
        self.reader.fail(e.to_string());
        e
    }

    /// Call when the stream's bytes have all been fed: fails if it stopped early.
    pub fn finish_stream(&self) -> Result<()> {
        self.reader.finish()
    }

    /// Stream bytes fully parsed so far.
    pub fn stream_offset(&self) -> u64 {
        self.reader.consumed()
    }

    /// Stream bytes received so far (where a resumed download continues).
    pub fn stream_received(&self) -> u64 {
        self.reader.received()
    }

    /// Brings the plan up to date: after the last stage (or in constants
    /// mode after any change) rebuilds it with the weights as constants.
    pub fn refresh(&mut self) -> Result<()> {
        if !self.stale {
            return Ok(());
        }
        let weights: Vec<(&str, Arc<Tensor>)> = self.tensors.iter().map(|t| (t.name.as_str(), t.values.clone())).collect();
        self.plan = match build_plan_with_weights(&self.skeleton, &weights, &self.options) {
            Ok(plan) => plan,
            Err(e @ Error::Corrupt(_)) => return Err(e),
            // where weights cannot be graph inputs (a weight that is also an
            // output, an op tract reads only from a constant), the model
            // goes to tract with ONNX initializers: one more copy of them
            Err(_) => build_plan(&self.current_model(), &self.options)?,
        };
        self.serving = Serving::Constants;
        self.stale = false;
        self.plan_status = self.status();
        Ok(())
    }

    /// Runs inference on the current weights; the result says which stage
    /// produced it.
    pub fn run(&mut self, inputs: Vec<Tensor>) -> Result<Inference> {
        self.runner()?.run(inputs)
    }

    /// A snapshot of the model at its current stage that can run on any
    /// thread while this model goes on refining (it shares the weights;
    /// a later patch copies a tensor only while a snapshot still holds it).
    pub fn runner(&mut self) -> Result<Runner> {
        self.refresh()?;
        let (weights, status) = match self.serving {
            Serving::WeightInputs => (self.tensors.iter().map(|t| t.values.clone().into_tvalue()).collect(), self.status()),
            Serving::Constants => (vec![], self.plan_status),
        };
        Ok(Runner { plan: self.plan.clone(), weights, status })
    }

    /// The inputs the caller feeds, as the model declares them.
    pub fn inputs(&self) -> Vec<onnx::DeclaredInput> {
        onnx::declared_inputs(&self.skeleton).unwrap_or_default()
    }

    /// The model's outputs, as it declares them.
    pub fn outputs(&self) -> Vec<onnx::DeclaredInput> {
        onnx::declared_outputs(&self.skeleton).unwrap_or_default()
    }

    /// The input shapes inference runs with (`None` where the plan left a
    /// dimension symbolic), in input order.
    pub fn input_shapes(&self) -> Vec<Option<Vec<usize>>> {
        let n = self.inputs().len();
        self.plan.input_shapes().into_iter().take(n).collect()
    }

    /// The model at its current stage as a plain fp32 ONNX model.
    pub fn current_model(&self) -> ModelProto {
        onnx::assemble(&self.skeleton, self.tensors.iter().map(|t| (t.name.as_str(), t.dims.as_slice(), t.values())))
    }

    /// Current values of a quantized weight.
    pub fn weight(&self, name: &str) -> Option<&[f32]> {
        self.by_name.get(name).map(|&i| self.tensors[i].values())
    }

    /// Names of the quantized weights, in base order.
    pub fn weight_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|t| t.name.as_str())
    }
}
