//! Opset conversion: the base is written at opset 21 (UINT4
//! `DequantizeLinear`) or 25 (UINT2), so the original's graph is carried
//! there, keeping its meaning.
//!
//! [`upgrade`] takes an opset 7–12 graph to opset 13, rewriting the
//! operators whose signature changed on the way: attributes that became
//! inputs (`Squeeze`/`Unsqueeze`/`ReduceSum` axes, `Split` sizes, `Clip`
//! bounds, `Pad` pads and value, `Slice` ranges, `TopK` k), `Upsample` and
//! `Resize`-10 as `Resize` (asymmetric coordinates, floor for nearest),
//! `Scatter` as `ScatterElements`, attributes that were dropped
//! (`BatchNormalization` spatial, `Dropout` ratio), and `Softmax`-family
//! ops, which before 13 flattened their input to 2-D at `axis`, as
//! `Flatten` → op over the last axis → `Reshape` back. What it cannot carry
//! over (a `Scan`-8 body, `BatchNormalization` per activation) is refused
//! before any work, naming the node. [`raise`] then takes 13+ to the base's
//! opset (Reduce axes to inputs and `Split` output counts, as 18 wants).
//! Subgraphs (`If`, `Loop`, `Scan` bodies) are converted too.

use tract_onnx::pb::{self, attribute_proto::AttributeType, AttributeProto, ModelProto, NodeProto, TensorProto};

use super::{f32_tensor, int64_tensor, int_attr, opset, REDUCE_OPS};
use p2u::error::{Error, Result};

/// Oldest opset [`upgrade`] converts from.
pub const OLDEST_OPSET: i64 = 7;
/// The opset [`upgrade`] converts to, and [`raise`] from.
pub const UPGRADED_OPSET: i64 = 13;

/// Converts an opset 7–12 model to opset 13 (unchanged if it is 13 or
/// newer); returns the opset it had. Refuses, naming the node, what it
/// cannot convert.
pub fn upgrade(m: &mut ModelProto) -> Result<i64> {
    let from = opset(m);
    if from >= UPGRADED_OPSET {
        return Ok(from);
    }
    if from < OLDEST_OPSET {
        return Err(Error::Unsupported(format!(
            "opset {from}: p2u converts opset {OLDEST_OPSET} and newer (re-export the model with a newer opset)"
        )));
    }
    let g = m.graph.as_mut().ok_or_else(|| Error::Onnx("model has no graph".into()))?;
    upgrade_graph(g, from)?;
    set_opset(m, UPGRADED_OPSET, 7);
    Ok(from)
}

/// Raises an opset ≥ 13 model to `target`, with the `axes` attribute of
/// Reduce ops moved to an input and `Split`'s `num_outputs` set, as opset
/// 18 requires.
pub fn raise(m: &mut ModelProto, target: i64, ir_version: i64) -> Result<()> {
    let from = opset(m);
    if from >= target {
        return Ok(());
    }
    if from < UPGRADED_OPSET {
        return Err(Error::Unsupported(format!("opset {from}: p2u needs opset ≥ {UPGRADED_OPSET} here (convert it first)")));
    }
    let g = m.graph.as_mut().ok_or_else(|| Error::Onnx("model has no graph".into()))?;
    if from < 18 && target >= 18 {
        for_each_graph(g, &mut |g| {
            let mut added = vec![];
            for n in &mut g.node {
                if REDUCE_OPS.contains(&n.op_type.as_str()) {
                    attr_to_input(n, "axes", 1, &mut added, |a| int64s(&a.ints));
                }
                let sizes_given = n.input.get(1).is_some_and(|s| !s.is_empty());
                if n.op_type == "Split" && !sizes_given && !n.attribute.iter().any(|a| a.name == "num_outputs") {
                    n.attribute.push(int_attr("num_outputs", n.output.len() as i64));
                }
            }
            g.initializer.extend(added);
            Ok(())
        })?;
    }
    set_opset(m, target, ir_version);
    Ok(())
}

fn set_opset(m: &mut ModelProto, version: i64, ir_version: i64) {
    m.ir_version = m.ir_version.max(ir_version);
    m.opset_import.retain(|o| !(o.domain.is_empty() || o.domain == "ai.onnx"));
    m.opset_import.push(pb::OperatorSetIdProto { domain: String::new(), version });
}

/// Calls `f` on `g` and every subgraph in it, innermost last.
fn for_each_graph(g: &mut pb::GraphProto, f: &mut dyn FnMut(&mut pb::GraphProto) -> Result<()>) -> Result<()> {
    f(g)?;
    for n in &mut g.node {
        for a in &mut n.attribute {
            for sub in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                for_each_graph(sub, f)?;
            }
        }
    }
    Ok(())
}

fn upgrade_graph(g: &mut pb::GraphProto, from: i64) -> Result<()> {
    for_each_graph(g, &mut |g| {
        let mut added = vec![];
        let mut nodes = Vec::with_capacity(g.node.len());
        for mut n in std::mem::take(&mut g.node) {
            let replaced = upgrade_node(&mut n, from, &mut added)?;
            match replaced {
                Some(many) => nodes.extend(many),
                None => nodes.push(n),
            }
        }
        g.node = nodes;
        g.initializer.extend(added);
        Ok(())
    })
}

/// Rewrites `n` in place for opset 13, or returns the nodes replacing it;
/// new constants go to `added`.
fn upgrade_node(n: &mut NodeProto, from: i64, added: &mut Vec<TensorProto>) -> Result<Option<Vec<NodeProto>>> {
    let named = |n: &NodeProto| {
        format!("{} node {:?}", n.op_type, if n.name.is_empty() { n.output.first().cloned().unwrap_or_default() } else { n.name.clone() })
    };
    match n.op_type.as_str() {
        "Squeeze" | "Unsqueeze" | "ReduceSum" => attr_to_input(n, "axes", 1, added, |a| int64s(&a.ints)),
        "Split" => attr_to_input(n, "split", 1, added, |a| int64s(&a.ints)),
        "TopK" if from < 10 => attr_to_input(n, "k", 1, added, |a| int64s(&[a.i])),
        "Slice" if from < 10 => {
            let take = |n: &mut NodeProto, name: &str| n.attribute.iter().position(|a| a.name == name).map(|p| n.attribute.remove(p).ints);
            let (starts, ends, axes) = (take(n, "starts"), take(n, "ends"), take(n, "axes"));
            let (Some(starts), Some(ends)) = (starts, ends) else {
                return Err(Error::Unsupported(format!("{} has no starts/ends", named(n))));
            };
            n.input.truncate(1);
            for (what, values) in [("starts", Some(starts)), ("ends", Some(ends)), ("axes", axes)] {
                if let Some(v) = values {
                    n.input.push(constant(n, what, int64s(&v), added));
                }
            }
        }
        "Clip" if from < 11 => {
            let bound = |n: &mut NodeProto, name: &str| n.attribute.iter().position(|a| a.name == name).map(|p| n.attribute.remove(p).f);
            let (lo, hi) = (bound(n, "min"), bound(n, "max"));
            n.input.truncate(1);
            if lo.is_some() || hi.is_some() {
                n.input.push(lo.map(|v| constant(n, "min", float_scalar(v), added)).unwrap_or_default());
            }
            if let Some(v) = hi {
                n.input.push(constant(n, "max", float_scalar(v), added));
            }
        }
        "Pad" if from < 11 => {
            let pads = n.attribute.iter().position(|a| a.name == "pads").map(|p| n.attribute.remove(p).ints);
            let value = n.attribute.iter().position(|a| a.name == "value").map(|p| n.attribute.remove(p).f);
            let Some(pads) = pads else {
                return Err(Error::Unsupported(format!("{} has no pads", named(n))));
            };
            n.input.truncate(1);
            n.input.push(constant(n, "pads", int64s(&pads), added));
            if let Some(v) = value {
                n.input.push(constant(n, "value", float_scalar(v), added));
            }
        }
        "Upsample" => upsample_as_resize(n, from, added)?,
        "Resize" if from < 11 => upsample_as_resize(n, from, added)?,
        "Scatter" => n.op_type = "ScatterElements".into(),
        "BatchNormalization" => {
            if n.attribute.iter().any(|a| a.name == "spatial" && a.i == 0) {
                return Err(Error::Unsupported(format!("{} normalizes per activation (spatial = 0), which opset 9 dropped", named(n))));
            }
            n.attribute.retain(|a| !["spatial", "is_test", "consumed_inputs"].contains(&a.name.as_str()));
        }
        "Dropout" => n.attribute.retain(|a| !["ratio", "is_test"].contains(&a.name.as_str())),
        "Softmax" | "LogSoftmax" | "Hardmax" => return Ok(softmax_over_last_axis(n)),
        "Scan" if from < 9 => {
            return Err(Error::Unsupported(format!("{} has opset 8's batched signature, which p2u does not convert", named(n))));
        }
        _ => {}
    }
    Ok(None)
}

/// `Upsample` (scales as attribute before 9, as input since) and
/// `Resize`-10 as `Resize` with inputs `(X, roi = "", scales)`: both scale
/// output index `i` to input coordinate `i / scale` (asymmetric), nearest
/// taking the floor.
fn upsample_as_resize(n: &mut NodeProto, from: i64, added: &mut Vec<TensorProto>) -> Result<()> {
    let scales = match n.attribute.iter().position(|a| a.name == "scales") {
        Some(p) => {
            let s = n.attribute.remove(p).floats;
            constant(n, "scales", floats(&s), added)
        }
        None => n
            .input
            .get(1)
            .cloned()
            .ok_or_else(|| Error::Unsupported(format!("{} node {:?} (opset {from}) has no scales", n.op_type, n.name)))?,
    };
    let mode = n.attribute.iter().find(|a| a.name == "mode").map(|a| String::from_utf8_lossy(&a.s).to_string()).unwrap_or("nearest".into());
    let mode = match mode.as_str() {
        "nearest" => "nearest",
        "linear" | "bilinear" => "linear",
        other => return Err(Error::Unsupported(format!("{} node {:?}: mode {other:?}", n.op_type, n.name))),
    };
    n.op_type = "Resize".into();
    n.input = vec![n.input[0].clone(), String::new(), scales];
    n.attribute = vec![str_attr("mode", mode), str_attr("coordinate_transformation_mode", "asymmetric")];
    if mode == "nearest" {
        n.attribute.push(str_attr("nearest_mode", "floor"));
    }
    Ok(())
}

/// Before opset 13 `Softmax`, `LogSoftmax` and `Hardmax` worked on the
/// input flattened to 2-D at `axis` (default 1); since 13 on one axis
/// (default −1). With `axis = −1` the two agree; otherwise the old meaning
/// is spelled out: `Flatten(axis)` → op over the last axis → `Reshape` to
/// the input's shape.
fn softmax_over_last_axis(n: &mut NodeProto) -> Option<Vec<NodeProto>> {
    let axis = n.attribute.iter().find(|a| a.name == "axis").map_or(1, |a| a.i);
    n.attribute.retain(|a| a.name != "axis");
    n.attribute.push(int_attr("axis", -1));
    if axis == -1 {
        return None;
    }
    let base = if n.name.is_empty() { n.output[0].clone() } else { n.name.clone() };
    let (x, y) = (n.input[0].clone(), n.output[0].clone());
    let (flat, soft, shape) = (format!("p2u/upgrade/{base}/flat"), format!("p2u/upgrade/{base}/2d"), format!("p2u/upgrade/{base}/shape"));
    let node = |op: &str, name: &str, input: Vec<String>, output: &str, attribute: Vec<AttributeProto>| NodeProto {
        op_type: op.into(),
        name: name.into(),
        input,
        output: vec![output.into()],
        attribute,
        ..Default::default()
    };
    let mut op = n.clone();
    op.input = vec![flat.clone()];
    op.output = vec![soft.clone()];
    Some(vec![
        node("Flatten", &flat, vec![x.clone()], &flat, vec![int_attr("axis", axis)]),
        op,
        node("Shape", &shape, vec![x], &shape, vec![]),
        node("Reshape", &format!("p2u/upgrade/{base}/reshape"), vec![soft, shape], &y, vec![]),
    ])
}

/// Moves attribute `name` of `n` to input `index` as a constant made by
/// `value` (inputs before it padded with "").
fn attr_to_input(
    n: &mut NodeProto,
    name: &str,
    index: usize,
    added: &mut Vec<TensorProto>,
    value: impl Fn(&AttributeProto) -> TensorProto,
) {
    let Some(pos) = n.attribute.iter().position(|a| a.name == name) else { return };
    let a = n.attribute.remove(pos);
    let c = constant(n, name, value(&a), added);
    n.input.truncate(index);
    n.input.resize(index, String::new());
    n.input.push(c);
}

/// Adds `t` named after the node and `what` to `added`; returns its name.
fn constant(n: &NodeProto, what: &str, mut t: TensorProto, added: &mut Vec<TensorProto>) -> String {
    let owner = if n.name.is_empty() { n.output.first().map(String::as_str).unwrap_or("") } else { n.name.as_str() };
    t.name = format!("p2u/upgrade/{owner}/{what}");
    let name = t.name.clone();
    added.push(t);
    name
}

/// A 1-D INT64 constant (named by [`constant`]).
fn int64s(v: &[i64]) -> TensorProto {
    int64_tensor("", &[v.len()], v)
}

/// A 1-D float constant (named by [`constant`]).
fn floats(v: &[f32]) -> TensorProto {
    f32_tensor("", &[v.len()], v)
}

/// A float scalar constant (named by [`constant`]).
fn float_scalar(v: f32) -> TensorProto {
    f32_tensor("", &[], &[v])
}

fn str_attr(name: &str, s: &str) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::String as i32, s: s.as_bytes().to_vec(), ..Default::default() }
}
