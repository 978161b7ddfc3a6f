//! Checks on a model before tract sees it.
//!
//! tract trusts its input: a hostile or damaged base can make it panic
//! (empty or odd-length `pads`, a graph output nothing produces), allocate
//! without bound (`ConstantOfShape([2^30])`, folded at load time), or run for
//! minutes (a flipped bit in a Conv's `pads`). [`check_model`] rejects such
//! models with [`Error::Corrupt`] in time linear in the file, before any of
//! it is built:
//!
//! - the graph is well formed: every node input and graph output is defined
//!   before use (ONNX requires topological order), subgraphs included;
//! - every constant tensor's dims are non-negative, their product fits
//!   [`MAX_ELEMENTS`] with checked arithmetic, and its data has exactly that
//!   many values;
//! - ops whose output size comes from a constant input (`ConstantOfShape`,
//!   `Expand`, `Tile`, `Range`, `Resize`, `Upsample`, `Pad`, `OneHot`)
//!   would materialise at most `limit` bytes; the constants are followed
//!   through the integer ops exporters put in front of them (`Concat`,
//!   `Mul`, `Add`, `Cast`, `Unsqueeze`, …);
//! - convolution and pooling attributes have the lengths their spatial rank
//!   needs and values in sane ranges.
//!
//! What depends on the input shape is checked after typing, by
//! [`crate::runtime::build_plan`] (every intermediate value's size).

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::{tensor_proto::DataType, GraphProto, ModelProto, NodeProto, TensorProto};

use super::{attr_int, attr_ints};
use crate::error::{Error, Result};

/// Largest element count of any tensor a model may declare or make.
pub const MAX_ELEMENTS: u64 = 1 << 31;
/// Largest pad, stride, dilation or kernel extent accepted on a Conv or pool.
pub const MAX_WINDOW: i64 = 1 << 12;
/// Largest scale factor of a `Resize`/`Upsample`.
const MAX_SCALE: f32 = 1024.0;
/// Integer constants longer than this are not followed (shapes are short).
const MAX_TRACKED: usize = 64;
/// Subgraph nesting accepted.
const MAX_DEPTH: usize = 16;

/// Checks a model read from a file of `file_len` bytes (see the module
/// docs). A size-driven op may materialise at most twice the file plus the
/// f32 size of every constant the file declares (its weights, dequantized):
/// a real model's shapes are far inside that, a bomb is far outside.
pub fn check_model(model: &ModelProto, file_len: usize) -> Result<()> {
    let g = model.graph.as_ref().ok_or_else(|| corrupt("the model has no graph".into()))?;
    let mut declared: u64 = 0;
    let mut stack = vec![g];
    while let Some(g) = stack.pop() {
        for t in &g.initializer {
            declared = declared.saturating_add(4 * volume(&t.dims, &format!("tensor {:?}", t.name))?);
        }
        for a in g.node.iter().flat_map(|n| &n.attribute) {
            if let Some(t) = &a.t {
                declared = declared.saturating_add(4 * volume(&t.dims, &format!("tensor {:?}", t.name))?);
            }
            stack.extend(a.g.iter().chain(&a.graphs));
        }
        if stack.len() > MAX_DEPTH * 1024 {
            return Err(corrupt("too many subgraphs".into()));
        }
    }
    let limit = (2 * file_len as u64).saturating_add(declared);
    Checker { limit, ints: HashMap::new(), floats: HashMap::new(), dims: HashMap::new() }.graph(g, &HashSet::new(), 0)
}

struct Checker {
    limit: u64,
    /// Small integer constants, followed through integer ops.
    ints: HashMap<String, Vec<i64>>,
    /// Small float constants (scales).
    floats: HashMap<String, Vec<f32>>,
    /// Shapes of constant tensors (for the spatial rank of a Conv weight).
    dims: HashMap<String, Vec<i64>>,
}

fn corrupt(msg: String) -> Error {
    Error::Corrupt(msg)
}

/// Bytes per element of an ONNX data type (1 for sub-byte and unknown ones).
fn elem_bytes(dt: i32) -> u64 {
    match DataType::try_from(dt) {
        Ok(DataType::Double | DataType::Int64 | DataType::Uint64 | DataType::Complex64) => 8,
        Ok(DataType::Complex128) => 16,
        Ok(DataType::Float | DataType::Int32 | DataType::Uint32) => 4,
        Ok(DataType::Float16 | DataType::Bfloat16 | DataType::Int16 | DataType::Uint16) => 2,
        _ => 1,
    }
}

/// Product of `dims` (each ≥ 0) with checked arithmetic, at most [`MAX_ELEMENTS`].
fn volume(dims: &[i64], what: &str) -> Result<u64> {
    let mut n: u64 = 1;
    for &d in dims {
        let d = u64::try_from(d).map_err(|_| corrupt(format!("{what}: dimension {d} in {dims:?}")))?;
        n = n
            .checked_mul(d)
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| corrupt(format!("{what}: shape {dims:?} has more than {MAX_ELEMENTS} elements")))?;
    }
    Ok(n)
}

/// Checks a constant tensor's shape against its data; returns its element count.
pub fn check_tensor(t: &TensorProto) -> Result<u64> {
    let what = format!("tensor {:?}", t.name);
    let n = volume(&t.dims, &what)?;
    if !t.external_data.is_empty() || t.data_location == Some(1) {
        return Err(Error::Unsupported(format!("{what}: external data (inline it first)")));
    }
    let dt = t.data_type;
    let stored = if !t.raw_data.is_empty() {
        let bits: u64 = match DataType::try_from(dt) {
            Ok(DataType::Uint4 | DataType::Int4) => 4,
            _ if dt == super::UINT2 || dt == super::INT2 => 2,
            _ => 8 * elem_bytes(dt),
        };
        let want = (n * bits).div_ceil(8);
        if t.raw_data.len() as u64 != want {
            return Err(corrupt(format!("{what}: {} data bytes for {n} elements of type {dt} (need {want})", t.raw_data.len())));
        }
        return Ok(n);
    } else if dt == DataType::String as i32 {
        t.string_data.len()
    } else {
        t.float_data.len() + t.int32_data.len() + t.int64_data.len() + t.double_data.len() + t.uint64_data.len()
    };
    // complex types store two values per element in their typed fields
    let per = if matches!(DataType::try_from(dt), Ok(DataType::Complex64 | DataType::Complex128)) { 2 } else { 1 };
    if stored as u64 != n * per {
        return Err(corrupt(format!("{what}: {stored} values for {n} elements")));
    }
    Ok(n)
}

/// Ops that may have no (leading) input: no inputs at all, or an optional
/// first one (`Loop`'s trip count).
const NULLARY: &[&str] = &["Constant", "RandomNormal", "RandomUniform", "Loop", "SequenceEmpty", "Optional"];
/// Ops that need (at least) two inputs.
const BINARY: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Max",
    "Min",
    "Equal",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "BitShift",
    "Mod",
    "PRelu",
    "MatMul",
    "Gemm",
    "Conv",
    "ConvTranspose",
    "Reshape",
    "Gather",
    "GatherElements",
    "GatherND",
    "Expand",
    "Tile",
    "DequantizeLinear",
    "QuantizeLinear",
    "ScatterElements",
    "ScatterND",
];

/// Checks the input and output counts tract relies on without checking
/// (it indexes `outputs[0]` and `inputs[0]` directly for some ops).
fn check_arity(n: &NodeProto) -> Result<()> {
    let what = || format!("node {:?} ({})", n.name, n.op_type);
    if n.output.first().is_none_or(String::is_empty) {
        return Err(corrupt(format!("{} has no output", what())));
    }
    let given = n.input.iter().take_while(|i| !i.is_empty()).count();
    let need = if NULLARY.contains(&n.op_type.as_str()) {
        0
    } else if BINARY.contains(&n.op_type.as_str()) || n.op_type == "Where" {
        2 + usize::from(n.op_type == "Where")
    } else {
        1
    };
    if given < need {
        return Err(corrupt(format!("{} has {given} inputs, needs {need}", what())));
    }
    Ok(())
}

/// Integer values of a small INT64/INT32 tensor.
fn small_ints(t: &TensorProto) -> Option<Vec<i64>> {
    let n = t.dims.iter().product::<i64>();
    if !(0..=MAX_TRACKED as i64).contains(&n) {
        return None;
    }
    let v: Vec<i64> = if t.data_type == DataType::Int64 as i32 {
        if t.raw_data.is_empty() {
            t.int64_data.clone()
        } else {
            t.raw_data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8"))).collect()
        }
    } else if t.data_type == DataType::Int32 as i32 {
        if t.raw_data.is_empty() {
            t.int32_data.iter().map(|&x| x as i64).collect()
        } else {
            t.raw_data.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().expect("4")) as i64).collect()
        }
    } else {
        return None;
    };
    (v.len() as i64 == n).then_some(v)
}

/// Float values of a small FLOAT tensor.
fn small_floats(t: &TensorProto) -> Option<Vec<f32>> {
    if t.data_type != DataType::Float as i32 || t.dims.iter().product::<i64>() > MAX_TRACKED as i64 {
        return None;
    }
    Some(if t.raw_data.is_empty() {
        t.float_data.clone()
    } else {
        t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect()
    })
}

impl Checker {
    fn graph(&mut self, g: &GraphProto, outer: &HashSet<String>, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(corrupt(format!("subgraphs nested deeper than {MAX_DEPTH}")));
        }
        let mut known: HashSet<String> = outer.clone();
        known.extend(g.input.iter().map(|i| i.name.clone()));
        for t in &g.initializer {
            check_tensor(t)?;
            self.constant(&t.name, t);
            known.insert(t.name.clone());
        }
        if let Some(t) = g.sparse_initializer.first() {
            return Err(Error::Unsupported(format!("sparse initializer {:?}", t.values.as_ref().map_or("", |v| v.name.as_str()))));
        }
        for n in &g.node {
            check_arity(n)?;
            for i in n.input.iter().filter(|i| !i.is_empty()) {
                if !known.contains(i) {
                    return Err(corrupt(format!("node {:?} ({}) reads {i:?}, which nothing before it defines", n.name, n.op_type)));
                }
            }
            for a in &n.attribute {
                if let Some(t) = &a.t {
                    check_tensor(t)?;
                }
                for t in &a.tensors {
                    check_tensor(t)?;
                }
                for sub in a.g.iter().chain(&a.graphs) {
                    self.graph(sub, &known, depth + 1)?;
                }
            }
            self.node(n)?;
            known.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
        }
        for o in &g.output {
            if !known.contains(&o.name) {
                return Err(corrupt(format!("graph output {:?} is produced by no node, input or initializer", o.name)));
            }
        }
        Ok(())
    }

    fn constant(&mut self, name: &str, t: &TensorProto) {
        if let Some(v) = small_ints(t) {
            self.ints.insert(name.into(), v);
        }
        if let Some(v) = small_floats(t) {
            self.floats.insert(name.into(), v);
        }
        self.dims.insert(name.into(), t.dims.clone());
    }

    fn int_input(&self, n: &NodeProto, i: usize) -> Option<&Vec<i64>> {
        n.input.get(i).and_then(|name| self.ints.get(name))
    }

    /// Checks that `elements` of an op's output of `dt` fit the limit.
    fn materialises(&self, n: &NodeProto, elements: u64, dt: i32) -> Result<()> {
        let bytes = elements.saturating_mul(elem_bytes(dt));
        if elements > MAX_ELEMENTS || bytes > self.limit {
            return Err(corrupt(format!(
                "node {:?} ({}) would make {elements} elements ({bytes} bytes; the limit for this file is {})",
                n.name, n.op_type, self.limit
            )));
        }
        Ok(())
    }

    fn node(&mut self, n: &NodeProto) -> Result<()> {
        let what = || format!("node {:?} ({})", n.name, n.op_type);
        match n.op_type.as_str() {
            "Constant" => {
                if let (Some(t), Some(out)) = (n.attribute.iter().find_map(|a| a.t.as_ref()), n.output.first()) {
                    self.constant(out, t);
                }
            }
            "ConstantOfShape" => {
                if let Some(shape) = self.int_input(n, 0) {
                    let elements = volume(shape, &what())?;
                    let dt = n.attribute.iter().find_map(|a| a.t.as_ref()).map_or(DataType::Float as i32, |t| t.data_type);
                    self.materialises(n, elements, dt)?;
                }
            }
            "Expand" => {
                if let Some(shape) = self.int_input(n, 1) {
                    let elements = volume(shape, &what())?;
                    self.materialises(n, elements, DataType::Float as i32)?;
                }
            }
            "Tile" => {
                if let Some(reps) = self.int_input(n, 1) {
                    let factor = volume(reps, &what())?;
                    let base = n.input.first().and_then(|i| self.dims.get(i)).map(|d| volume(d, &what())).transpose()?.unwrap_or(1);
                    self.materialises(n, factor.saturating_mul(base), DataType::Float as i32)?;
                }
            }
            "Range" => {
                let scalar = |i| self.int_input(n, i).and_then(|v| (v.len() == 1).then_some(v[0]));
                if let (Some(start), Some(limit), Some(delta)) = (scalar(0), scalar(1), scalar(2)) {
                    if delta == 0 {
                        return Err(corrupt(format!("{}: delta 0", what())));
                    }
                    let span = (limit as i128 - start as i128) / delta as i128;
                    self.materialises(n, span.clamp(0, u64::MAX as i128) as u64, DataType::Int64 as i32)?;
                }
            }
            "OneHot" => {
                if let Some(depth) = self.int_input(n, 1).and_then(|v| v.first().copied()) {
                    if !(0..=MAX_ELEMENTS as i64).contains(&depth) {
                        return Err(corrupt(format!("{}: depth {depth}", what())));
                    }
                }
            }
            "Pad" => {
                let pads = self.int_input(n, 1).map(Vec::as_slice).or_else(|| attr_ints(n, "pads"));
                if let Some(p) = pads {
                    if p.len() % 2 != 0 || p.iter().any(|v| v.abs() > MAX_WINDOW) {
                        return Err(corrupt(format!("{}: pads {p:?} (need an even count, each within ±{MAX_WINDOW})", what())));
                    }
                }
            }
            "Resize" | "Upsample" => {
                let scales = n.input.get(if n.op_type == "Resize" { 2 } else { 1 }).and_then(|i| self.floats.get(i));
                if let Some(s) = scales {
                    if s.iter().any(|v| !v.is_finite() || *v < 0.0 || *v > MAX_SCALE) {
                        return Err(corrupt(format!("{}: scales {s:?} (each must be in 0..={MAX_SCALE})", what())));
                    }
                }
                if let Some(sizes) = self.int_input(n, 3).filter(|_| n.op_type == "Resize") {
                    let elements = volume(sizes, &what())?;
                    self.materialises(n, elements, DataType::Float as i32)?;
                }
            }
            "Conv" | "ConvTranspose" | "MaxPool" | "AveragePool" | "LpPool" | "ConvInteger" | "QLinearConv" => self.window(n)?,
            _ => self.fold(n),
        }
        Ok(())
    }

    /// Checks window attributes against the spatial rank.
    fn window(&self, n: &NodeProto) -> Result<()> {
        let what = format!("node {:?} ({})", n.name, n.op_type);
        let kernel = attr_ints(n, "kernel_shape");
        let weight_rank = match n.op_type.as_str() {
            "Conv" | "ConvTranspose" | "ConvInteger" => n.input.get(1).and_then(|w| self.dims.get(w)).map(|d| d.len()),
            _ => None,
        };
        let spatial = kernel.map(<[i64]>::len).or(weight_rank.map(|r| r.saturating_sub(2)));
        let bounded = |name: &str, lo: i64| -> Result<Option<usize>> {
            let Some(v) = attr_ints(n, name) else { return Ok(None) };
            if v.iter().any(|&x| x < lo || x > MAX_WINDOW) {
                return Err(corrupt(format!("{what}: {name} {v:?} (each must be in {lo}..={MAX_WINDOW})")));
            }
            Ok(Some(v.len()))
        };
        let k = bounded("kernel_shape", 1)?;
        let s = bounded("strides", 1)?;
        let d = bounded("dilations", 1)?;
        let p = bounded("pads", 0)?;
        if n.op_type.ends_with("Pool") && kernel.is_none() {
            return Err(corrupt(format!("{what}: no kernel_shape")));
        }
        if let Some(p) = p {
            if p == 0 || p % 2 != 0 || spatial.is_some_and(|r| p != 2 * r) {
                let axes = spatial.map_or("its".into(), |r| r.to_string());
                return Err(corrupt(format!("{what}: {p} pads for {axes} spatial axes")));
            }
        }
        for (name, len) in [("kernel_shape", k), ("strides", s), ("dilations", d)] {
            if let (Some(len), Some(r)) = (len, spatial) {
                if len != r {
                    return Err(corrupt(format!("{what}: {len} {name} for {r} spatial axes")));
                }
            }
        }
        if let Some(group) = attr_int(n, "group") {
            if group < 1 {
                return Err(corrupt(format!("{what}: group {group}")));
            }
        }
        Ok(())
    }

    /// Follows small integer constants through the ops exporters use to
    /// compute shapes from constants (tract folds them at load time).
    fn fold(&mut self, n: &NodeProto) {
        let Some(out) = n.output.first() else { return };
        let a = self.int_input(n, 0);
        let folded: Option<Vec<i64>> = match n.op_type.as_str() {
            "DequantizeLinear" => {
                if let Some(d) = n.input.first().and_then(|i| self.dims.get(i)).cloned() {
                    self.dims.insert(out.clone(), d);
                }
                None
            }
            "Identity" | "Cast" | "Unsqueeze" | "Squeeze" | "Reshape" | "Flatten" => a.cloned(),
            "Concat" => {
                n.input.iter().map(|i| self.ints.get(i)).collect::<Option<Vec<_>>>().map(|p| p.into_iter().flatten().copied().collect())
            }
            "Mul" | "Add" | "Sub" | "Max" => {
                let b = self.int_input(n, 1);
                a.zip(b).and_then(|(a, b)| {
                    let f = |x: i64, y: i64| match n.op_type.as_str() {
                        "Mul" => x.saturating_mul(y),
                        "Add" => x.saturating_add(y),
                        "Sub" => x.saturating_sub(y),
                        _ => x.max(y),
                    };
                    match (a.len(), b.len()) {
                        (1, _) => Some(b.iter().map(|&y| f(a[0], y)).collect()),
                        (_, 1) => Some(a.iter().map(|&x| f(x, b[0])).collect()),
                        (x, y) if x == y => Some(a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()),
                        _ => None,
                    }
                })
            }
            _ => None,
        };
        if let Some(v) = folded.filter(|v| v.len() <= MAX_TRACKED) {
            self.ints.insert(out.clone(), v);
        }
    }
}
