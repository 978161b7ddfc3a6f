//! Building and running tract plans from ONNX protos.

use std::sync::Arc;

use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use super::RuntimeOptions;
use crate::error::{Error, Result};

/// A runnable tract plan (cheap to clone).
#[derive(Clone)]
pub struct Plan(Option<Arc<TypedRunnableModel>>);

impl Plan {
    pub(crate) fn empty() -> Self {
        Plan(None)
    }

    /// Runs the plan.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        self.run_values(inputs.into_iter().map(TValue::from).collect())
    }

    /// Runs the plan on values that may share their tensors.
    pub fn run_values(&self, inputs: TVec<TValue>) -> Result<Vec<Tensor>> {
        let plan = self.0.as_ref().ok_or_else(|| Error::Engine("no plan built".into()))?;
        Ok(plan.run(inputs)?.into_iter().map(|v| v.into_tensor()).collect())
    }
}

/// Parses, types and optimises `model` in tract, with the input shapes from
/// `options` where given; without them, the model's declared input shapes
/// with every symbolic dimension (a dynamic batch, say) set to 1. Used for
/// p2u models and reference models alike, so that comparisons go through
/// identical code.
pub fn build_plan(model: &ModelProto, options: &RuntimeOptions) -> Result<Plan> {
    let mut m = tract_onnx::onnx().model_for_proto_model(model)?;
    let shapes = match options.input_shapes.as_slice() {
        [] => declared_shapes(model),
        given => given.to_vec(),
    };
    for (i, shape) in shapes.iter().enumerate() {
        let dt = m.input_fact(i)?.datum_type().unwrap_or(f32::datum_type());
        m = m.with_input_fact(i, InferenceFact::dt_shape(dt, shape))?;
    }
    Ok(Plan(Some(m.into_optimized()?.into_runnable()?)))
}

/// The declared input shapes with symbolic dimensions set to 1, if every
/// input declares its rank (else none: tract infers what it can).
fn declared_shapes(model: &ModelProto) -> Vec<Vec<usize>> {
    let Ok(inputs) = crate::onnx::declared_inputs(model) else { return vec![] };
    if inputs.iter().any(|d| d.dims.is_empty()) {
        return vec![];
    }
    inputs.iter().map(|d| d.dims.iter().map(|x| x.unwrap_or(1)).collect()).collect()
}
