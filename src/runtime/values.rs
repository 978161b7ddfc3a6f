//! Typed input values: what a model input of any element type p2u feeds
//! holds, back to back, row-major.

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::prelude::Tensor;

use crate::error::{Error, Result};

/// The values of one input over all items, back to back, row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    /// float32.
    F32(Vec<f32>),
    /// int64 (e.g. token ids).
    I64(Vec<i64>),
    /// int32.
    I32(Vec<i32>),
    /// uint8 (e.g. raw pixels).
    U8(Vec<u8>),
    /// bool (e.g. masks).
    Bool(Vec<bool>),
}

impl Values {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::I64(v) => v.len(),
            Values::I32(v) => v.len(),
            Values::U8(v) => v.len(),
            Values::Bool(v) => v.len(),
        }
    }

    /// True if there is no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ONNX element type name (`float32`, `int64`…).
    pub fn type_name(&self) -> &'static str {
        match self {
            Values::F32(_) => "float32",
            Values::I64(_) => "int64",
            Values::I32(_) => "int32",
            Values::U8(_) => "uint8",
            Values::Bool(_) => "bool",
        }
    }

    /// The ONNX element type of these values.
    pub fn onnx_type(&self) -> DataType {
        match self {
            Values::F32(_) => DataType::Float,
            Values::I64(_) => DataType::Int64,
            Values::I32(_) => DataType::Int32,
            Values::U8(_) => DataType::Uint8,
            Values::Bool(_) => DataType::Bool,
        }
    }

    /// All values as one tensor of `shape` (its element count must match).
    pub fn into_tensor(self, shape: &[usize]) -> Result<Tensor> {
        let t = match self {
            Values::F32(v) => Tensor::from_shape(shape, &v),
            Values::I64(v) => Tensor::from_shape(shape, &v),
            Values::I32(v) => Tensor::from_shape(shape, &v),
            Values::U8(v) => Tensor::from_shape(shape, &v),
            Values::Bool(v) => Tensor::from_shape(shape, &v),
        };
        t.map_err(|e| Error::Invalid(format!("values for shape {shape:?}: {e}")))
    }
}
