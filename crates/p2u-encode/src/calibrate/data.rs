//! Calibration inputs: items for every input of a model, of any tensor type
//! a model takes (f32 pixels or features, i64/i32 token ids, u8 pixels,
//! bool masks), bound to the model's inputs by name.

use tract_onnx::pb::{tensor_proto::DataType, ModelProto};
use tract_onnx::prelude::Tensor;

use p2u::error::{Error, Result};
use p2u::onnx::{declared_inputs, DeclaredInput};
pub use p2u::runtime::Values;

/// Appends `other` to `values` if both hold the same type.
fn append(values: &mut Values, other: &Values) -> bool {
    match (values, other) {
        (Values::F32(a), Values::F32(b)) => a.extend_from_slice(b),
        (Values::I64(a), Values::I64(b)) => a.extend_from_slice(b),
        (Values::I32(a), Values::I32(b)) => a.extend_from_slice(b),
        (Values::U8(a), Values::U8(b)) => a.extend_from_slice(b),
        (Values::Bool(a), Values::Bool(b)) => a.extend_from_slice(b),
        _ => return false,
    }
    true
}

/// The items `items` (each `item` values long) stacked into a tensor of `shape`.
fn gather_items(values: &Values, shape: &[usize], items: &[usize], item: usize) -> Tensor {
    fn gather<T: Copy>(v: &[T], items: &[usize], item: usize) -> Vec<T> {
        items.iter().flat_map(|&i| v[i * item..(i + 1) * item].iter().copied()).collect()
    }
    let t = match values {
        Values::F32(v) => Tensor::from_shape(shape, &gather(v, items, item)),
        Values::I64(v) => Tensor::from_shape(shape, &gather(v, items, item)),
        Values::I32(v) => Tensor::from_shape(shape, &gather(v, items, item)),
        Values::U8(v) => Tensor::from_shape(shape, &gather(v, items, item)),
        Values::Bool(v) => Tensor::from_shape(shape, &gather(v, items, item)),
    };
    t.expect("sizes checked in Calibration::from_inputs")
}

/// Calibration values of one model input.
#[derive(Clone, Debug, PartialEq)]
pub struct InputData {
    /// The graph input these values feed (`None`: the model's only input).
    pub name: Option<String>,
    /// Shape of one item: the input's shape without its leading batch axis.
    pub item_dims: Vec<usize>,
    /// Every item's values.
    pub values: Values,
}

impl InputData {
    fn item_len(&self) -> usize {
        self.item_dims.iter().product()
    }

    fn label(&self) -> String {
        self.name.as_ref().map_or("the input".to_string(), |n| format!("input {n:?}"))
    }
}

/// Where calibration items came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The user's samples, preprocessed as at inference time.
    Data,
    /// Synthetic inputs derived from the model ([`super::synthetic`]).
    Synthetic,
}

/// Sample inputs for calibration: `len()` items for each of the model's
/// inputs, already preprocessed exactly as at inference time.
#[derive(Clone)]
pub struct Calibration {
    inputs: Vec<InputData>,
    count: usize,
    origin: Origin,
}

impl std::fmt::Debug for Calibration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shapes: Vec<String> = self.inputs.iter().map(|i| format!("{}{:?}", i.name.as_deref().unwrap_or(""), i.item_dims)).collect();
        write!(f, "Calibration({} × {}, {:?})", self.count, shapes.join(" + "), self.origin)
    }
}

impl Calibration {
    /// Items for a model with one float input: `data` holds items shaped
    /// `item_dims` back to back.
    pub fn new(item_dims: Vec<usize>, data: Vec<f32>) -> Result<Calibration> {
        Calibration::from_inputs(vec![InputData { name: None, item_dims, values: Values::F32(data) }], Origin::Data)
    }

    /// Items for one or more inputs (the same count for each); float values
    /// must be finite.
    pub fn from_inputs(inputs: Vec<InputData>, origin: Origin) -> Result<Calibration> {
        if inputs.is_empty() {
            return Err(Error::Invalid("calibration needs values for at least one input".into()));
        }
        if inputs.len() > 1 && inputs.iter().any(|i| i.name.is_none()) {
            return Err(Error::Invalid("calibration for several inputs must name each input".into()));
        }
        let mut count = None;
        for (k, i) in inputs.iter().enumerate() {
            if inputs[..k].iter().any(|j| j.name == i.name) {
                return Err(Error::Invalid(format!("calibration gives {} twice", i.label())));
            }
            let item = i.item_len();
            if item == 0 || i.values.is_empty() || !i.values.len().is_multiple_of(item) {
                return Err(Error::Invalid(format!(
                    "calibration data for {} ({} values) is not a whole number of {:?} items",
                    i.label(),
                    i.values.len(),
                    i.item_dims
                )));
            }
            if let Values::F32(v) = &i.values {
                if let Some(p) = v.iter().position(|x| !x.is_finite()) {
                    return Err(Error::Invalid(format!("calibration value {p} of {} is {}", i.label(), v[p])));
                }
            }
            let n = i.values.len() / item;
            match count {
                Some(c) if c != n => {
                    return Err(Error::Invalid(format!("calibration gives {c} items for one input and {n} for {}", i.label())));
                }
                _ => count = Some(n),
            }
        }
        Ok(Calibration { inputs, count: count.unwrap_or(0), origin })
    }

    /// These items followed by `other`'s (same inputs, shapes and types).
    pub fn concat(mut self, other: &Calibration) -> Result<Calibration> {
        let same = |a: &InputData, b: &InputData| a.name == b.name && a.item_dims == b.item_dims;
        if self.inputs.len() != other.inputs.len() || !self.inputs.iter().zip(&other.inputs).all(|(a, b)| same(a, b)) {
            return Err(Error::Invalid(format!("calibration items {self:?} and {other:?} cannot be mixed")));
        }
        for (a, b) in self.inputs.iter_mut().zip(&other.inputs) {
            if !append(&mut a.values, &b.values) {
                return Err(Error::Invalid(format!(
                    "calibration values of {} are {} in one part and {} in another",
                    a.label(),
                    a.values.type_name(),
                    b.values.type_name()
                )));
            }
        }
        self.count += other.count;
        Ok(self)
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if there is no item (never, once constructed).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Where the items came from.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// The inputs' values.
    pub fn inputs(&self) -> &[InputData] {
        &self.inputs
    }

    /// Shape of one item of the first input.
    pub fn item_dims(&self) -> &[usize] {
        &self.inputs[0].item_dims
    }

    /// The values in the order of `model`'s inputs, checked against their
    /// declared element types and fixed dimensions.
    pub fn bind(&self, model: &ModelProto) -> Result<Bound<'_>> {
        let declared = declared_inputs(model)?;
        let names: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
        let mut ordered = Vec::with_capacity(declared.len());
        for d in &declared {
            let found = match self.inputs.as_slice() {
                [only] if only.name.is_none() && declared.len() == 1 => Some(only),
                inputs => inputs.iter().find(|i| i.name.as_deref() == Some(d.name.as_str())),
            };
            let data = found.ok_or_else(|| {
                Error::Invalid(format!("calibration has no values for input {:?} (the model's inputs are {names:?})", d.name))
            })?;
            check_against(data, d)?;
            ordered.push(data);
        }
        if let Some(extra) = self.inputs.iter().find(|i| i.name.as_deref().is_some_and(|n| !names.contains(&n))) {
            return Err(Error::Invalid(format!("calibration gives {} but the model's inputs are {names:?}", extra.label())));
        }
        if self.inputs.len() == 1 && self.inputs[0].name.is_none() && declared.len() != 1 {
            return Err(Error::Invalid(format!(
                "the model has {} inputs {names:?}: give calibration values for each by name (NAME=FILE.npy)",
                declared.len()
            )));
        }
        // a fixed leading dimension (e.g. batch 1 baked into the export) caps the batch
        let batch_cap = declared.iter().filter_map(|d| d.dims.first().copied().flatten()).min();
        Ok(Bound { inputs: ordered, count: self.count, batch_cap })
    }
}

fn check_against(data: &InputData, d: &DeclaredInput) -> Result<()> {
    let want = data.values.onnx_type() as i32;
    if d.elem_type != 0 && d.elem_type != want {
        let name = DataType::try_from(d.elem_type).map(|t| t.as_str_name()).unwrap_or("?");
        return Err(Error::Invalid(format!("input {:?} takes {name} but the calibration values are {}", d.name, data.values.type_name())));
    }
    if d.dims.len() > 1 {
        let declared = &d.dims[1..];
        let fits = declared.len() == data.item_dims.len() && declared.iter().zip(&data.item_dims).all(|(w, &g)| w.is_none_or(|w| w == g));
        if !fits {
            let show: Vec<String> = d.dims.iter().map(|x| x.map_or("?".into(), |v| v.to_string())).collect();
            return Err(Error::Invalid(format!(
                "input {:?} is [{}] but the calibration items are {:?} (each item is the input without its batch axis)",
                d.name,
                show.join(", "),
                data.item_dims
            )));
        }
    }
    Ok(())
}

/// Calibration values in the order of a model's inputs.
pub struct Bound<'a> {
    inputs: Vec<&'a InputData>,
    count: usize,
    batch_cap: Option<usize>,
}

impl Bound<'_> {
    /// Shapes of one item per input.
    pub fn item_dims(&self) -> Vec<Vec<usize>> {
        self.inputs.iter().map(|i| i.item_dims.clone()).collect()
    }

    /// `limit` items (all if there are fewer), evenly spaced over the
    /// calibration set (files are often sorted by class: the first few
    /// would be one class), in batches of at most `batch` (fewer where the
    /// model fixes its batch size), one tensor per input each.
    pub fn batches(&self, limit: usize, batch: usize) -> Vec<Vec<Tensor>> {
        let batch = self.batch_cap.map_or(batch, |c| c.min(batch)).max(1);
        let n = self.count.min(limit);
        let picked: Vec<usize> = (0..n).map(|k| k * self.count / n.max(1)).collect();
        picked
            .chunks(batch)
            .map(|items| {
                self.inputs
                    .iter()
                    .map(|i| {
                        let mut shape = vec![items.len()];
                        shape.extend_from_slice(&i.item_dims);
                        gather_items(&i.values, &shape, items, i.item_len())
                    })
                    .collect()
            })
            .collect()
    }
}

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
impl Calibration {
    /// Reads a NumPy `.npy` array shaped `[count, …item]` (float32, int64,
    /// int32, uint8 or bool, C order) as the values of input `name`
    /// (`None`: the model's only input).
    pub fn from_npy(bytes: &[u8], name: Option<&str>) -> Result<Calibration> {
        Calibration::from_inputs(vec![read_npy(bytes, name)?], Origin::Data)
    }
}

/// One `.npy` array as an input's values.
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub fn read_npy(bytes: &[u8], name: Option<&str>) -> Result<InputData> {
    let (dims, values) = read_npy_array(bytes, "calibration .npy")?;
    if dims.len() < 2 {
        return Err(Error::Invalid(format!("calibration .npy: shape {dims:?}: must be [count, …item dims]")));
    }
    Ok(InputData { name: name.map(str::to_string), item_dims: dims[1..].to_vec(), values })
}

/// Reads a NumPy `.npy` array (float32, int64, int32, uint8 or bool, C
/// order): its shape and values. `what` names the file in errors.
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub fn read_npy_array(bytes: &[u8], what: &str) -> Result<(Vec<usize>, Values)> {
    let bad = |why: String| Error::Invalid(format!("{what}: {why}"));
    let file = npyz::NpyFile::new(bytes).map_err(|e| bad(format!("not a readable .npy file ({e})")))?;
    if file.order() != npyz::Order::C {
        return Err(bad("Fortran order is not supported (save with np.ascontiguousarray)".into()));
    }
    let dims: Vec<usize> = file.shape().iter().map(|&d| d as usize).collect();
    let count = file.len() as usize;
    let npyz::DType::Plain(ts) = file.dtype() else {
        return Err(bad("structured arrays are not supported".into()));
    };
    let type_str = ts.to_string();
    let read = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => bad(format!("truncated: shape {dims:?} needs {count} values")),
        _ => bad(format!("{e} (shape {dims:?})")),
    };
    let values = match type_str.as_str() {
        "<f4" => Values::F32(file.into_vec::<f32>().map_err(read)?),
        "<i8" => Values::I64(file.into_vec::<i64>().map_err(read)?),
        "<i4" => Values::I32(file.into_vec::<i32>().map_err(read)?),
        "|u1" => Values::U8(file.into_vec::<u8>().map_err(read)?),
        "|b1" => Values::Bool(file.into_vec::<bool>().map_err(read)?),
        other => {
            return Err(bad(format!("dtype {other:?}: use float32 ('<f4'), int64 ('<i8'), int32 ('<i4'), uint8 or bool, little-endian")))
        }
    };
    if values.len() != count {
        return Err(bad(format!("{} values for shape {dims:?}", values.len())));
    }
    Ok((dims, values))
}
