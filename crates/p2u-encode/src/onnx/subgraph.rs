//! Weights inside subgraphs (`If` branches, `Loop` and `Scan` bodies):
//! [`hoist_weights`] lifts them into the main graph, where they are
//! quantized and refined like any other weight. A subgraph reads values of
//! the graphs around it by name, so a body whose weight became a top-level
//! initializer computes the same; tract passes such outer values to its
//! `If` and `Scan` ops as inputs.

use std::collections::HashSet;

use tract_onnx::pb::{tensor_proto::DataType, GraphProto, ModelProto, NodeProto, TensorProto};

use super::element_count;
use p2u::error::{Error, Result};

/// A weight lifted out of a subgraph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hoisted {
    /// The weight's name (unchanged).
    pub name: String,
    /// The top-level node whose subgraph held it.
    pub owner: String,
}

/// Moves every FLOAT initializer and `Constant` value of at least
/// `min_elements` elements out of the subgraphs of `m` (at any depth) into
/// its main graph's initializers, names unchanged. Refuses, naming it, a
/// weight whose name the main graph or another lifted weight already uses.
pub fn hoist_weights(m: &mut ModelProto, min_elements: usize) -> Result<Vec<Hoisted>> {
    let g = m.graph.as_mut().ok_or_else(|| Error::Onnx("model has no graph".into()))?;
    let mut taken: HashSet<String> = g
        .initializer
        .iter()
        .map(|t| t.name.clone())
        .chain(g.input.iter().map(|v| v.name.clone()))
        .chain(g.node.iter().flat_map(|n| n.output.iter().cloned()))
        .collect();
    let mut lifted = vec![];
    let mut hoisted = vec![];
    for node in &mut g.node {
        let owner = node.name.clone();
        for a in &mut node.attribute {
            for sub in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                lift(sub, min_elements, &mut lifted);
            }
        }
        for t in lifted.drain(..) {
            let t: TensorProto = t;
            if !taken.insert(t.name.clone()) {
                return Err(Error::Unsupported(format!(
                    "weight {:?} inside the subgraph of node {owner:?} has the name of another value of the model; \
                     p2u cannot lift it into the main graph (rename it)",
                    t.name
                )));
            }
            hoisted.push(Hoisted { name: t.name.clone(), owner: owner.clone() });
            g.initializer.push(t);
        }
    }
    Ok(hoisted)
}

/// True if `n` has a subgraph (an `If` branch, a `Loop` or `Scan` body).
pub fn holds_subgraph(n: &NodeProto) -> bool {
    n.attribute.iter().any(|a| a.g.is_some() || !a.graphs.is_empty())
}

/// True if a node of the main graph has a subgraph.
pub fn has_subgraphs(m: &ModelProto) -> bool {
    m.graph.iter().flat_map(|g| &g.node).any(holds_subgraph)
}

/// Takes the large float constants out of `g` and its subgraphs.
fn lift(g: &mut GraphProto, min_elements: usize, out: &mut Vec<TensorProto>) {
    let weight = |t: &TensorProto| t.data_type == DataType::Float as i32 && element_count(t) >= min_elements;
    let (keep, take): (Vec<_>, Vec<_>) = std::mem::take(&mut g.initializer).into_iter().partition(|t| !weight(t));
    g.initializer = keep;
    out.extend(take);
    let mut nodes = Vec::with_capacity(g.node.len());
    for mut node in std::mem::take(&mut g.node) {
        if node.op_type == "Constant" && node.output.len() == 1 && node.attribute.len() == 1 && node.attribute[0].name == "value" {
            if let Some(t) = node.attribute[0].t.as_ref().filter(|t| weight(t)) {
                let mut t = t.clone();
                t.name = node.output[0].clone();
                out.push(t);
                continue;
            }
        }
        for a in &mut node.attribute {
            for sub in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                lift(sub, min_elements, out);
            }
        }
        nodes.push(node);
    }
    g.node = nodes;
}
