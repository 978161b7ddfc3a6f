//! # p2u-wasm — the browser bindings of p2u
//!
//! A thin wasm-bindgen layer over [`ProgressiveModel`], built only for
//! `wasm32-unknown-unknown` (elsewhere the crate is empty); the npm
//! package's wasm is this crate's cdylib. Fetching, streaming, caching
//! and scheduling live in the npm package's JS (`pkg/p2u.js`); this layer
//! only moves bytes and tensors across and turns [`Error`]s into JS
//! `Error`s with a `kind`.

#![deny(missing_docs)]
#![cfg(all(target_arch = "wasm32", target_os = "unknown"))]

use js_sys::{Array, BigInt64Array, Float32Array, Int32Array, Object, Reflect, Uint8Array};
use tract_onnx::prelude::{DatumType, Tensor};
use wasm_bindgen::prelude::*;

use p2u::error::Error;
use p2u::format::expected_hash;
use p2u::runtime::{build_plan, Channels, Layout, Normalization, PixelTransform, Plan, ProgressiveModel, RuntimeOptions, StageStatus, Values};

/// Installs the panic hook (a panic would be a bug: errors are returned).
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// A JS `Error` named `P2uError` with the error's [`Error::kind`].
fn js_error(e: Error) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    err.set_name("P2uError");
    let _ = Reflect::set(&err, &"kind".into(), &e.kind().into());
    err.into()
}

fn set(obj: &Object, key: &str, value: impl Into<JsValue>) {
    let _ = Reflect::set(obj, &key.into(), &value.into());
}

fn status_object(s: StageStatus) -> Object {
    let o = Object::new();
    set(&o, "stage", s.stage);
    set(&o, "stages", s.stages);
    set(&o, "chunksApplied", s.chunks_applied as f64);
    set(&o, "chunksTotal", s.chunks_total as f64);
    set(&o, "exact", s.exact);
    o
}

/// `[{ name, type, shape }]` as onnxruntime-web's `inputMetadata`: `shape`
/// holds numbers for fixed dimensions and the symbol's name (or `null`)
/// for dynamic ones; `dims` (inputs) is the shape the plan runs with.
fn metadata_array(values: &[p2u::onnx::DeclaredInput], plan_shapes: &[Option<Vec<usize>>]) -> Array {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let o = Object::new();
            set(&o, "name", v.name.as_str());
            set(&o, "type", v.type_name());
            let shape: Array = v
                .dims
                .iter()
                .zip(v.symbols.iter().map(Some).chain(std::iter::repeat(None)))
                .map(|(d, sym)| match (d, sym.and_then(Option::as_ref)) {
                    (Some(n), _) => JsValue::from(*n as u32),
                    (None, Some(s)) => JsValue::from(s.as_str()),
                    (None, None) => JsValue::NULL,
                })
                .collect();
            set(&o, "shape", shape);
            if let Some(Some(dims)) = plan_shapes.get(i) {
                set(&o, "dims", dims.iter().map(|&d| JsValue::from(d as u32)).collect::<Array>());
            }
            JsValue::from(o)
        })
        .collect()
}

/// `[lo, hi]` of the DICOM VOI `LINEAR` window (center, width): the values
/// mapped to the ends of the target range (see [`Normalization::window`]).
#[wasm_bindgen(js_name = dicomWindow)]
pub fn dicom_window(center: f32, width: f32) -> Result<Vec<f32>, JsValue> {
    let n = Normalization::window(center, width, (0.0, 1.0)).map_err(js_error)?;
    Ok(vec![n.lo, n.hi])
}

/// One shape per input from flattened `input_dims`, each `input_ranks[i]` long.
fn shapes_of(input_dims: &[u32], input_ranks: &[u32]) -> Result<Vec<Vec<usize>>, JsValue> {
    let mismatch = || js_error(Error::Invalid(format!("input dims {input_dims:?} do not match their ranks {input_ranks:?}")));
    let mut shapes = vec![];
    let mut dims = input_dims.iter().map(|&d| d as usize);
    for &rank in input_ranks {
        let shape: Vec<usize> = dims.by_ref().take(rank as usize).collect();
        if shape.len() != rank as usize {
            return Err(mismatch());
        }
        shapes.push(shape);
    }
    if dims.next().is_some() {
        return Err(mismatch());
    }
    Ok(shapes)
}

fn runtime_options(input_dims: &[u32], input_ranks: &[u32]) -> Result<RuntimeOptions, JsValue> {
    Ok(RuntimeOptions { input_shapes: shapes_of(input_dims, input_ranks)?, ..Default::default() })
}

fn input_tensor(data: &[f32], dims: &[u32]) -> Result<Tensor, JsValue> {
    let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    let n = dims.iter().product::<usize>();
    if n != data.len() {
        return Err(js_error(Error::Invalid(format!("input has {} values, dims {dims:?} need {n}", data.len()))));
    }
    Tensor::from_shape(&dims, data).map_err(|e| js_error(Error::Invalid(e.to_string())))
}

/// Every input tensor from `values[i]` of element type `types[i]`, shaped
/// by the next `ranks[i]` numbers of `dims` (see [`WasmModel::run_tensors`]).
fn feed_tensors(values: &Array, types: &[String], dims: &[u32], ranks: &[u32]) -> Result<Vec<Tensor>, JsValue> {
    if values.length() as usize != types.len() || types.len() != ranks.len() {
        return Err(js_error(Error::Invalid(format!(
            "{} input values, {} types and {} ranks: one of each per input",
            values.length(),
            types.len(),
            ranks.len()
        ))));
    }
    let shapes = shapes_of(dims, ranks)?;
    types.iter().zip(&shapes).enumerate().map(|(i, (ty, shape))| feed_tensor(&values.get(i as u32), ty, shape, i)).collect()
}

/// One input tensor from a JS typed array holding `ty` values.
fn feed_tensor(value: &JsValue, ty: &str, shape: &[usize], index: usize) -> Result<Tensor, JsValue> {
    let wrong = |array: &str| js_error(Error::Invalid(format!("input {index}: a {ty} tensor takes a {array}")));
    let values = match ty {
        "float32" => Values::F32(value.dyn_ref::<Float32Array>().ok_or_else(|| wrong("Float32Array"))?.to_vec()),
        "int64" => Values::I64(value.dyn_ref::<BigInt64Array>().ok_or_else(|| wrong("BigInt64Array"))?.to_vec()),
        "int32" => Values::I32(value.dyn_ref::<Int32Array>().ok_or_else(|| wrong("Int32Array"))?.to_vec()),
        "uint8" => Values::U8(value.dyn_ref::<Uint8Array>().ok_or_else(|| wrong("Uint8Array"))?.to_vec()),
        "bool" => Values::Bool(value.dyn_ref::<Uint8Array>().ok_or_else(|| wrong("Uint8Array"))?.to_vec().into_iter().map(|b| b != 0).collect()),
        other => {
            return Err(js_error(Error::Unsupported(format!(
                "input {index}: element type {other:?} (p2u takes float32, int64, int32, uint8 and bool inputs)"
            ))))
        }
    };
    let n = shape.iter().product::<usize>();
    if values.len() != n {
        return Err(js_error(Error::Invalid(format!("input {index} has {} values, dims {shape:?} need {n}", values.len()))));
    }
    values.into_tensor(shape).map_err(js_error)
}

/// `[{ name, type, data, dims }]`: float32, int64, int32, uint8 and bool
/// outputs in their own typed array (bool as a Uint8Array of 0/1), any
/// other type cast to float32.
fn outputs_array(outputs: &[Tensor], names: &[String]) -> Result<Array, JsValue> {
    fn plain<T: tract_onnx::prelude::Datum + Copy>(t: &Tensor) -> Result<Vec<T>, JsValue> {
        let view = t.to_plain_array_view::<T>().map_err(|e| js_error(Error::Engine(e.to_string())))?;
        Ok(view.iter().copied().collect())
    }
    let array = Array::new();
    for (i, t) in outputs.iter().enumerate() {
        let (ty, data): (&str, JsValue) = match t.datum_type() {
            DatumType::I64 => ("int64", BigInt64Array::from(plain::<i64>(t)?.as_slice()).into()),
            DatumType::I32 => ("int32", Int32Array::from(plain::<i32>(t)?.as_slice()).into()),
            DatumType::U8 => ("uint8", Uint8Array::from(plain::<u8>(t)?.as_slice()).into()),
            DatumType::Bool => {
                let bytes: Vec<u8> = plain::<bool>(t)?.into_iter().map(u8::from).collect();
                ("bool", Uint8Array::from(bytes.as_slice()).into())
            }
            _ => {
                let t = t.cast_to::<f32>().map_err(|e| js_error(Error::Engine(e.to_string())))?;
                ("float32", Float32Array::from(plain::<f32>(&t)?.as_slice()).into())
            }
        };
        let o = Object::new();
        set(&o, "name", names.get(i).map_or("", String::as_str));
        set(&o, "type", ty);
        set(&o, "data", data);
        set(&o, "dims", t.shape().iter().map(|&d| JsValue::from(d as u32)).collect::<Array>());
        array.push(&o);
    }
    Ok(array)
}

/// A plain ONNX model in tract-wasm, for comparisons and baselines (the
/// original fp32 file, or any stage exported by `p2u export`).
#[wasm_bindgen(js_name = WasmPlainModel)]
pub struct WasmPlainModel {
    plan: Plan,
    inputs: Vec<p2u::onnx::DeclaredInput>,
    output_names: Vec<String>,
}

#[wasm_bindgen(js_class = WasmPlainModel)]
impl WasmPlainModel {
    /// Parses and optimises `onnx` (input shapes as in [`WasmModel::new`]).
    #[wasm_bindgen(constructor)]
    pub fn new(onnx: &[u8], input_dims: &[u32], input_ranks: &[u32]) -> Result<WasmPlainModel, JsValue> {
        let proto = p2u::onnx::decode_model(onnx).map_err(js_error)?;
        let plan = build_plan(&proto, &runtime_options(input_dims, input_ranks)?).map_err(js_error)?;
        let inputs = p2u::onnx::declared_inputs(&proto).map_err(js_error)?;
        let output_names = p2u::onnx::declared_outputs(&proto).map_err(js_error)?.into_iter().map(|o| o.name).collect();
        Ok(WasmPlainModel { plan, inputs, output_names })
    }

    /// The inputs: `[{ name, type, shape, dims }]`.
    #[wasm_bindgen(js_name = inputMetadata)]
    pub fn input_metadata(&self) -> Array {
        metadata_array(&self.inputs, &self.plan.input_shapes())
    }

    /// Runs on one f32 input: `{ outputs: [{name, type, data, dims}] }`.
    #[wasm_bindgen(js_name = runF32)]
    pub fn run_f32(&self, data: &[f32], dims: &[u32]) -> Result<Object, JsValue> {
        self.infer(vec![input_tensor(data, dims)?])
    }

    /// Runs on every input at once (as [`WasmModel::run_tensors`]).
    #[wasm_bindgen(js_name = runTensors)]
    pub fn run_tensors(&self, values: Array, types: Vec<String>, dims: &[u32], ranks: &[u32]) -> Result<Object, JsValue> {
        self.infer(feed_tensors(&values, &types, dims, ranks)?)
    }
}

impl WasmPlainModel {
    fn infer(&self, inputs: Vec<Tensor>) -> Result<Object, JsValue> {
        let outputs = self.plan.run(inputs).map_err(js_error)?;
        let o = Object::new();
        set(&o, "outputs", outputs_array(&outputs, &self.output_names)?);
        Ok(o)
    }
}

/// The live model, as seen from JS (wrapped by `pkg/p2u.js`).
#[wasm_bindgen(js_name = WasmModel)]
pub struct WasmModel {
    model: ProgressiveModel,
    /// The graph's output names (read once: every result carries them).
    output_names: Vec<String>,
}

#[wasm_bindgen(js_class = WasmModel)]
impl WasmModel {
    /// Builds the stage-0 model from the base ONNX bytes; `input_dims`
    /// (flattened, with `input_ranks` giving each input's rank) fixes the
    /// input shapes, or leave both empty for the declared ones. With
    /// `keep_inputs_plan` the exact model is served without the final
    /// rebuild with constant weights; with `stage_plans` every stage is
    /// served from a constants plan rebuilt as the stage advances (see
    /// [`RuntimeOptions::stage_plans`]). `base_sha256` and `header_sha256`
    /// (hex, from the manifest; empty to skip) are the hashes the base file
    /// and the stream header must have: with both, every byte is verified
    /// before it is served.
    #[wasm_bindgen(constructor)]
    pub fn new(
        base: &[u8],
        input_dims: &[u32],
        input_ranks: &[u32],
        keep_inputs_plan: bool,
        stage_plans: bool,
        base_sha256: &str,
        header_sha256: &str,
    ) -> Result<WasmModel, JsValue> {
        let options = RuntimeOptions {
            keep_inputs_plan,
            stage_plans,
            base_sha256: expected_hash(base_sha256, "base sha256").map_err(js_error)?,
            stream_header_sha256: expected_hash(header_sha256, "stream header sha256").map_err(js_error)?,
            ..runtime_options(input_dims, input_ranks)?
        };
        let model = ProgressiveModel::from_base(base, options).map_err(js_error)?;
        let output_names = model.outputs().into_iter().map(|o| o.name).collect();
        Ok(WasmModel { model, output_names })
    }

    /// Whether a stream starting with `prefix` has the header already read:
    /// `undefined` until `prefix` holds a whole header (see
    /// [`ProgressiveModel::same_stream_header`]).
    #[wasm_bindgen(js_name = sameStreamHeader)]
    pub fn same_stream_header(&self, prefix: &[u8]) -> Option<bool> {
        self.model.same_stream_header(prefix)
    }

    /// Forgets a stream failure and the bytes after the last applied
    /// frame; fetch again from `received` (see
    /// [`ProgressiveModel::rewind_stream`]).
    pub fn rewind(&mut self) {
        self.model.rewind_stream();
    }

    /// Queues stream bytes; call [`Self::step`] until it returns false
    /// before pushing more.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), JsValue> {
        self.model.push(bytes).map_err(js_error)
    }

    /// Does one bounded piece of work (about `budget` weights of decoding);
    /// false when it needs more bytes.
    pub fn step(&mut self, budget: u32) -> Result<bool, JsValue> {
        self.model.step(budget as usize).map_err(js_error)
    }

    /// Checks that the stream ended complete.
    #[wasm_bindgen(js_name = finishStream)]
    pub fn finish_stream(&self) -> Result<(), JsValue> {
        self.model.finish_stream().map_err(js_error)
    }

    /// Stream bytes received so far (where a resumed download continues).
    #[wasm_bindgen(getter)]
    pub fn received(&self) -> f64 {
        self.model.stream_received() as f64
    }

    /// True once the stream header was read and attached.
    #[wasm_bindgen(getter, js_name = headerRead)]
    pub fn header_read(&self) -> bool {
        self.model.header().is_some()
    }

    /// True while a chunk is part-way applied.
    #[wasm_bindgen(getter)]
    pub fn busy(&self) -> bool {
        self.model.busy()
    }

    /// The inputs: `[{ name, type, shape, dims }]` (see `inputMetadata` in p2u.d.ts).
    #[wasm_bindgen(js_name = inputMetadata)]
    pub fn input_metadata(&self) -> Array {
        metadata_array(&self.model.inputs(), &self.model.input_shapes())
    }

    /// The outputs: `[{ name, type, shape }]`.
    #[wasm_bindgen(js_name = outputMetadata)]
    pub fn output_metadata(&self) -> Array {
        metadata_array(&self.model.outputs(), &[])
    }

    /// `{ stage, stages, chunksApplied, chunksTotal, exact }` of the weights.
    pub fn status(&self) -> Object {
        status_object(self.model.status())
    }

    /// Builds the final constant plan now if the model is exact (otherwise
    /// the next run does it).
    pub fn refresh(&mut self) -> Result<(), JsValue> {
        self.model.refresh().map_err(js_error)
    }

    /// True when inference is served from a plan with constant weights.
    #[wasm_bindgen(getter, js_name = constantPlan)]
    pub fn constant_plan(&self) -> bool {
        self.model.serving() == p2u::runtime::Serving::Constants
    }

    /// Runs the model on one f32 input.
    #[wasm_bindgen(js_name = runF32)]
    pub fn run_f32(&mut self, data: Vec<f32>, dims: &[u32]) -> Result<Object, JsValue> {
        self.run(data, dims)
    }

    /// Runs on every input at once, in the model's input order:
    /// `values[i]` holds input `i`'s values as the typed array of
    /// `types[i]` (float32: Float32Array, int64: BigInt64Array, int32:
    /// Int32Array, uint8 and bool: Uint8Array), shaped by the next
    /// `ranks[i]` numbers of `dims`.
    #[wasm_bindgen(js_name = runTensors)]
    pub fn run_tensors(&mut self, values: Array, types: Vec<String>, dims: &[u32], ranks: &[u32]) -> Result<Object, JsValue> {
        let inputs = feed_tensors(&values, &types, dims, ranks)?;
        self.infer(inputs)
    }

    /// Runs on f32 values mapped `[lo, hi] ↦ [to0, to1]` (clamped if asked).
    #[wasm_bindgen(js_name = runF32Mapped)]
    #[allow(clippy::too_many_arguments)]
    pub fn run_f32_mapped(
        &mut self,
        data: &[f32],
        dims: &[u32],
        lo: f32,
        hi: f32,
        to0: f32,
        to1: f32,
        clamp: bool,
    ) -> Result<Object, JsValue> {
        self.run_raw(data, dims, Normalization { lo, hi, to: (to0, to1), clamp })
    }

    /// Runs on one image of interleaved 8-bit pixels (`stride` 1, 3 or 4
    /// values each), turned into the input by [`PixelTransform`]:
    /// `channels` 'RGB' | 'BGR' | 'L', `layout` 'NCHW' | 'NHWC'; the input
    /// is `[1, …item]`.
    #[wasm_bindgen(js_name = runPixels)]
    #[allow(clippy::too_many_arguments)]
    pub fn run_pixels(
        &mut self,
        pixels: &[u8],
        width: u32,
        height: u32,
        stride: u32,
        channels: &str,
        layout: &str,
        scale: f32,
        mean: Vec<f32>,
        std: Vec<f32>,
    ) -> Result<Object, JsValue> {
        let channels = match channels {
            "RGB" => Channels::Rgb,
            "BGR" => Channels::Bgr,
            "L" => Channels::Gray,
            other => return Err(js_error(Error::Invalid(format!("channels {other:?}: expected RGB, BGR or L")))),
        };
        let layout = match layout {
            "NCHW" => Layout::Nchw,
            "NHWC" => Layout::Nhwc,
            other => return Err(js_error(Error::Invalid(format!("layout {other:?}: expected NCHW or NHWC")))),
        };
        let t = PixelTransform { channels, layout, scale, mean, std };
        let (w, h) = (width as usize, height as usize);
        let x = t.apply(pixels, w, h, stride as usize).map_err(js_error)?;
        let dims: Vec<u32> = std::iter::once(1).chain(t.item_dims(h, w).into_iter().map(|d| d as u32)).collect();
        self.run(x, &dims)
    }

    /// Runs on u8 values mapped `[lo, hi] ↦ [to0, to1]` (clamped if asked).
    #[wasm_bindgen(js_name = runU8)]
    #[allow(clippy::too_many_arguments)]
    pub fn run_u8(&mut self, data: &[u8], dims: &[u32], lo: f32, hi: f32, to0: f32, to1: f32, clamp: bool) -> Result<Object, JsValue> {
        self.run_raw(data, dims, Normalization { lo, hi, to: (to0, to1), clamp })
    }

    /// Runs on u16 values (e.g. 16-bit medical images), mapped as in `runU8`.
    #[wasm_bindgen(js_name = runU16)]
    #[allow(clippy::too_many_arguments)]
    pub fn run_u16(&mut self, data: &[u16], dims: &[u32], lo: f32, hi: f32, to0: f32, to1: f32, clamp: bool) -> Result<Object, JsValue> {
        self.run_raw(data, dims, Normalization { lo, hi, to: (to0, to1), clamp })
    }

    /// Runs on i16 values (signed 16-bit, e.g. CT), mapped as in `runU8`.
    #[wasm_bindgen(js_name = runI16)]
    #[allow(clippy::too_many_arguments)]
    pub fn run_i16(&mut self, data: &[i16], dims: &[u32], lo: f32, hi: f32, to0: f32, to1: f32, clamp: bool) -> Result<Object, JsValue> {
        self.run_raw(data, dims, Normalization { lo, hi, to: (to0, to1), clamp })
    }
}

impl WasmModel {
    fn run_raw<T: Copy + Into<f32>>(&mut self, data: &[T], dims: &[u32], n: Normalization) -> Result<Object, JsValue> {
        let x = n.apply(data).map_err(js_error)?;
        self.run(x, dims)
    }

    fn run(&mut self, data: Vec<f32>, dims: &[u32]) -> Result<Object, JsValue> {
        let input = input_tensor(&data, dims)?;
        self.infer(vec![input])
    }

    /// `{ outputs: [{name, type, data, dims}], output, dims, stage, stages, final }`.
    fn infer(&mut self, inputs: Vec<Tensor>) -> Result<Object, JsValue> {
        let r = self.model.run(inputs).map_err(js_error)?;
        let outputs = outputs_array(&r.outputs, &self.output_names)?;
        let result = status_object(r.status);
        set(&result, "final", r.status.exact);
        if let Some(first) = outputs.get(0).dyn_ref::<Object>() {
            set(&result, "output", Reflect::get(first, &"data".into())?);
            set(&result, "dims", Reflect::get(first, &"dims".into())?);
        }
        set(&result, "outputs", outputs);
        Ok(result)
    }
}
