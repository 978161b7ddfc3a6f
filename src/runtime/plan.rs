//! Building and running tract plans from ONNX protos.

use std::sync::Arc;

use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use super::RuntimeOptions;
use crate::error::{Error, Result};

/// A runnable tract plan (cheap to clone).
#[derive(Clone)]
pub struct Plan {
    model: Option<Arc<TypedRunnableModel>>,
    inputs: Arc<Vec<PlanInput>>,
}

/// What the plan was built to take at one input.
#[derive(Clone, Debug)]
struct PlanInput {
    name: String,
    datum_type: DatumType,
    /// The concrete shape, if the plan fixed one.
    shape: Option<Vec<usize>>,
}

impl Plan {
    pub(crate) fn empty() -> Self {
        Plan { model: None, inputs: Arc::new(vec![]) }
    }

    /// Runs the plan.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        self.run_values(inputs.into_iter().map(TValue::from).collect())
    }

    /// Runs the plan on values that may share their tensors. Inputs of
    /// another type or shape than the plan was built for are refused with
    /// an error naming the input and what it expects.
    pub fn run_values(&self, inputs: TVec<TValue>) -> Result<Vec<Tensor>> {
        let plan = self.model.as_ref().ok_or_else(|| Error::Engine("no plan built".into()))?;
        self.check_inputs(&inputs)?;
        Ok(guard("running the model", || plan.run(inputs))??.into_iter().map(|v| v.into_tensor()).collect())
    }

    /// Number of inputs the plan takes.
    pub fn input_count(&self) -> usize {
        self.inputs.len()
    }

    /// The input shapes the plan was built for (`None` where not fixed).
    pub fn input_shapes(&self) -> Vec<Option<Vec<usize>>> {
        self.inputs.iter().map(|i| i.shape.clone()).collect()
    }

    fn check_inputs(&self, inputs: &[TValue]) -> Result<()> {
        if inputs.len() != self.inputs.len() {
            return Err(Error::Invalid(format!("the model takes {} inputs, got {}", self.inputs.len(), inputs.len())));
        }
        for (value, want) in inputs.iter().zip(self.inputs.iter()) {
            if value.datum_type() != want.datum_type {
                return Err(Error::Invalid(format!("input {:?} is {:?}, got {:?}", want.name, want.datum_type, value.datum_type())));
            }
            if let Some(shape) = &want.shape {
                if value.shape() != shape.as_slice() {
                    return Err(Error::Invalid(format!(
                        "input {:?} expects dims {shape:?}, got {:?} (the model was built for these dims; give other input shapes when loading it to run others)",
                        want.name,
                        value.shape()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Largest intermediate value a plan may hold (bytes).
pub const MAX_VALUE_BYTES: u64 = 1 << 30;

/// Runs `f`, turning a panic inside tract into [`Error::Engine`] (natively;
/// in wasm a panic aborts, which is why models are checked before tract
/// sees them: [`crate::onnx::check_model`], [`check_sizes`]).
fn guard<T>(what: &str, f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let msg = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default();
        Error::Engine(format!("tract failed {what} (it panicked: {msg})"))
    })
}

/// Longest symbolic dimension accepted, in characters of its expression.
const MAX_DIM_EXPRESSION: usize = 256;

/// Whether `d` prints within [`MAX_DIM_EXPRESSION`] characters (stops
/// formatting once over).
fn short_expression(d: &TDim) -> bool {
    struct Bounded(usize);
    impl std::fmt::Write for Bounded {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len();
            if self.0 > MAX_DIM_EXPRESSION {
                Err(std::fmt::Error)
            } else {
                Ok(())
            }
        }
    }
    std::fmt::write(&mut Bounded(0), format_args!("{d}")).is_ok()
}

/// Checks the typed model before tract optimises it: no value over
/// [`MAX_VALUE_BYTES`] (a shape blown up by a corrupt attribute), and no
/// dimension whose symbolic expression has blown up (tract keeps a
/// mismatched broadcast, say 28 against 112, as an expression that doubles
/// at every residual join after it; optimising such a graph takes minutes
/// and gigabytes).
fn check_sizes(m: &TypedModel) -> Result<()> {
    for node in m.nodes() {
        for o in &node.outputs {
            if let Some(d) = o.fact.shape.iter().find(|d| !short_expression(d)) {
                let mut text = format!("{d}");
                text.truncate(80);
                return Err(Error::Corrupt(format!(
                    "node {:?}: the shapes do not fit together (a dimension resolves to {text}…)",
                    node.name
                )));
            }
            let Some(shape) = o.fact.shape.as_concrete() else { continue };
            let bytes = shape
                .iter()
                .try_fold(o.fact.datum_type.size_of() as u64, |a, &d| a.checked_mul(d as u64))
                .filter(|&b| b <= MAX_VALUE_BYTES);
            if bytes.is_none() {
                return Err(Error::Corrupt(format!(
                    "node {:?} would produce a value of shape {shape:?} ({:?}), over the {MAX_VALUE_BYTES}-byte limit",
                    node.name, o.fact.datum_type
                )));
            }
        }
    }
    Ok(())
}

/// Parses, types and optimises `model` in tract, with the input shapes from
/// `options` where given; without them, the model's declared input shapes
/// with every symbolic dimension (a dynamic batch, say) set to 1. Used for
/// p2u models and reference models alike, so that comparisons go through
/// identical code.
pub fn build_plan(model: &ModelProto, options: &RuntimeOptions) -> Result<Plan> {
    build(model, options, &[])
}

/// The plan of `skeleton` (a model without the named weights) with
/// `weights` baked in as constants that *share* the given tensors: no copy
/// of the weights is made on the way to tract (no ONNX initializers to
/// write, parse and convert), so building the final plan costs the packed
/// copies tract makes and nothing more. The graph tract optimises is the
/// one [`build_plan`] gets from the skeleton with those weights as
/// initializers.
pub fn build_plan_with_weights(skeleton: &ModelProto, weights: &[(&str, Arc<Tensor>)], options: &RuntimeOptions) -> Result<Plan> {
    let proto = crate::onnx::weights_as_inputs(skeleton, weights.iter().map(|(name, t)| (*name, t.shape())))?;
    build(&proto, options, weights)
}

/// [`build_plan`] of `model`, whose last `constants.len()` inputs become
/// constants holding those tensors before tract analyses it.
fn build(model: &ModelProto, options: &RuntimeOptions, constants: &[(&str, Arc<Tensor>)]) -> Result<Plan> {
    let shapes = match options.input_shapes.as_slice() {
        [] => declared_shapes(model),
        given => given.to_vec(),
    };
    if let Some(g) = &model.graph {
        crate::onnx::check_shapes(g, &shapes)?;
    }
    // shapes declared for a symbolic or other input shape would contradict
    // the concrete ones: tract infers them again from the inputs
    let concretised;
    let model = if needs_reannotation(model, &shapes) {
        concretised = crate::onnx::without_shape_annotations(model);
        &concretised
    } else {
        model
    };
    let mut m = guard("reading the model", || tract_onnx::onnx().model_for_proto_model(model))??;
    if !constants.is_empty() {
        let outlets = m.input_outlets()?.to_vec();
        let own = outlets.len().checked_sub(constants.len()).ok_or_else(|| Error::Engine("more weights than graph inputs".into()))?;
        for (outlet, (name, t)) in outlets[own..].iter().zip(constants) {
            let node = m.node_mut(outlet.node);
            if node.name != format!("{name}{}", crate::onnx::WEIGHT_INPUT_SUFFIX) {
                return Err(Error::Engine(format!("graph input {:?} is not weight {name:?}", node.name)));
            }
            node.op = Box::new(tract_onnx::tract_hir::ops::konst::Const::new(t.clone())?);
            node.outputs[0].fact = TypedFact::try_from(t.clone())?.into();
        }
        m.set_input_outlets(&outlets[..own])?;
    }
    let free_inputs = m.input_outlets()?.len();
    for (i, shape) in shapes.iter().take(free_inputs).enumerate() {
        let dt = m.input_fact(i)?.datum_type().unwrap_or(f32::datum_type());
        m = m.with_input_fact(i, InferenceFact::dt_shape(dt, shape))?;
    }
    let typed = guard("analysing the model", || m.into_typed())??;
    check_sizes(&typed)?;
    let inputs = typed
        .input_outlets()?
        .iter()
        .map(|o| {
            let fact = typed.outlet_fact(*o)?;
            let shape = fact.shape.as_concrete().map(<[usize]>::to_vec);
            Ok(PlanInput { name: typed.node(o.node).name.clone(), datum_type: fact.datum_type, shape })
        })
        .collect::<TractResult<Vec<_>>>()?;
    let model = guard("optimising the model", || typed.into_optimized()?.into_runnable())??;
    Ok(Plan { model: Some(model), inputs: Arc::new(inputs) })
}

/// True if an input's declared shape has a symbolic dimension or differs
/// from the shape it is run with: then the graph's other shape annotations
/// (value_info, outputs) may not hold.
fn needs_reannotation(model: &ModelProto, shapes: &[Vec<usize>]) -> bool {
    let Ok(inputs) = crate::onnx::declared_inputs(model) else { return true };
    inputs.iter().enumerate().any(|(i, d)| {
        d.dims.iter().any(Option::is_none)
            || shapes.get(i).is_some_and(|s| s.len() != d.dims.len() || s.iter().zip(&d.dims).any(|(a, b)| Some(*a) != *b))
    })
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
