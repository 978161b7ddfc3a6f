//! Graph surgery for tract: a skeleton with weights put back as
//! initializers ([`assemble`]) or turned into graph inputs
//! ([`weights_as_inputs`]), and stale shape annotations dropped.

use std::collections::HashMap;

use tract_onnx::pb::{self, tensor_proto::DataType, type_proto, ModelProto, TensorProto};

use super::{f32_tensor, value_info};
use crate::error::{Error, Result};

/// The skeleton with the given weights put back as FLOAT initializers.
pub fn assemble<'a>(skeleton: &ModelProto, weights: impl IntoIterator<Item = (&'a str, &'a [usize], &'a [f32])>) -> ModelProto {
    let mut m = skeleton.clone();
    if let Some(g) = m.graph.as_mut() {
        let mut inits: Vec<TensorProto> = weights.into_iter().map(|(n, d, v)| f32_tensor(n, d, v)).collect();
        inits.append(&mut g.initializer);
        g.initializer = inits;
    }
    m
}

/// Suffix of the graph inputs that carry weights in [`weights_as_inputs`].
pub const WEIGHT_INPUT_SUFFIX: &str = "::w";

/// The skeleton with the given weights turned into extra graph inputs
/// (named `W::w`, appended after the model's own inputs) so one optimised
/// plan can serve any weight values. Fails if a weight is also a graph output.
pub fn weights_as_inputs<'a>(skeleton: &ModelProto, weights: impl IntoIterator<Item = (&'a str, &'a [usize])>) -> Result<ModelProto> {
    let mut m = skeleton.clone();
    let g = m.graph.as_mut().ok_or_else(|| Error::Onnx("model has no graph".into()))?;
    let mut renamed: HashMap<&str, String> = HashMap::new();
    for (name, dims) in weights {
        if g.output.iter().any(|o| o.name == name) {
            return Err(Error::Unsupported(format!("weight {name:?} is also a graph output")));
        }
        let input = format!("{name}{WEIGHT_INPUT_SUFFIX}");
        g.input.push(value_info(&input, DataType::Float, dims));
        renamed.insert(name, input);
    }
    for n in &mut g.node {
        for i in &mut n.input {
            if let Some(r) = renamed.get(i.as_str()) {
                *i = r.clone();
            }
        }
    }
    Ok(m)
}

/// `model` without intermediate shape annotations (`value_info`) and
/// without the output shapes (their element types stay): tract infers them
/// from the input shapes it is given, where stale or symbolic annotations
/// could contradict them.
pub fn without_shape_annotations(model: &ModelProto) -> ModelProto {
    fn strip(g: &mut pb::GraphProto) {
        g.value_info.clear();
        for o in &mut g.output {
            if let Some(type_proto::Value::TensorType(t)) = o.r#type.as_mut().and_then(|t| t.value.as_mut()) {
                t.shape = None;
            } else {
                o.r#type = None;
            }
        }
        // subgraphs (If branches, Scan bodies) carry the same stale dims
        for a in g.node.iter_mut().flat_map(|n| &mut n.attribute) {
            a.g.iter_mut().chain(a.graphs.iter_mut()).for_each(strip);
        }
    }
    let mut m = model.clone();
    if let Some(g) = m.graph.as_mut() {
        strip(g);
    }
    m
}
