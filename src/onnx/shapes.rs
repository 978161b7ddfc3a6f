//! A quick static check that a graph's shapes fit together, before tract.
//!
//! tract's shape analysis does not reject an elementwise op on shapes that
//! do not broadcast (say 28 against 112): it keeps the pair as a symbolic
//! expression that doubles at every later join, and analysing a damaged
//! residual network then takes minutes and gigabytes. [`check_shapes`]
//! follows concrete shapes from the inputs and constants through the ops
//! whose output shape is plain (elementwise, Conv, pooling and the usual
//! CNN tail) and rejects a broadcast that cannot hold, in time linear in the
//! graph. Where an op is not followed, its outputs are unknown and nothing
//! after them is checked: the check never rejects a shape it cannot derive.

use std::collections::HashMap;

use tract_onnx::pb::{GraphProto, NodeProto};

use super::{attr_int, attr_ints, attr_str};
use crate::error::{Error, Result};

/// Ops whose output has the shape of their first input.
const SAME_SHAPE: &[&str] = &[
    "Relu",
    "Clip",
    "Sigmoid",
    "Tanh",
    "Exp",
    "Log",
    "Neg",
    "Abs",
    "Sqrt",
    "Reciprocal",
    "Identity",
    "Cast",
    "Erf",
    "LeakyRelu",
    "HardSigmoid",
    "HardSwish",
    "Softplus",
    "Softsign",
    "Selu",
    "Elu",
    "Gelu",
    "Mish",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "BatchNormalization",
    "InstanceNormalization",
    "LRN",
    "Softmax",
    "LogSoftmax",
    "Dropout",
    "Not",
    "Sin",
    "Cos",
];
/// Elementwise ops with numpy broadcasting over all their inputs.
const BROADCAST: &[&str] =
    &["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where", "Equal", "Less", "Greater", "And", "Or"];

/// Checks the shapes of `graph` given the input shapes (in graph-input
/// order; missing ones are taken from the declared dims when fully known).
pub fn check_shapes(graph: &GraphProto, inputs: &[Vec<usize>]) -> Result<()> {
    let mut known: HashMap<&str, Vec<usize>> = HashMap::new();
    for t in &graph.initializer {
        if let Ok(d) = t.dims.iter().map(|&d| usize::try_from(d)).collect::<Result<Vec<_>, _>>() {
            known.insert(&t.name, d);
        }
    }
    // the given shapes are those of the inputs that are not initializers
    for (i, vi) in super::free_inputs(graph).enumerate() {
        let shape = match inputs.get(i) {
            Some(s) => Some(s.clone()),
            None => super::declared(vi).dims.into_iter().collect::<Option<Vec<_>>>(),
        };
        if let Some(s) = shape {
            known.entry(&vi.name).or_insert(s);
        }
    }
    for n in &graph.node {
        let input = |i: usize| n.input.get(i).and_then(|name| known.get(name.as_str()));
        check_axis(n, input(0).map(Vec::len))?;
        let out = shape_of(n, &input)?;
        if let (Some(s), Some(name)) = (out, n.output.first()) {
            known.insert(name, s);
        }
    }
    Ok(())
}

fn shape_of<'a>(n: &NodeProto, input: &dyn Fn(usize) -> Option<&'a Vec<usize>>) -> Result<Option<Vec<usize>>> {
    let op = n.op_type.as_str();
    if SAME_SHAPE.contains(&op) {
        return Ok(input(0).cloned());
    }
    if BROADCAST.contains(&op) {
        let mut acc: Vec<usize> = vec![];
        for i in 0..n.input.len() {
            let Some(s) = input(i) else { return Ok(None) };
            acc = broadcast(&acc, s)
                .ok_or_else(|| Error::Corrupt(format!("node {:?} ({op}): inputs of shapes {acc:?} and {s:?} do not broadcast", n.name)))?;
        }
        return Ok(Some(acc));
    }
    Ok(match op {
        "DequantizeLinear" => input(0).cloned(),
        "Constant" => n.attribute.first().and_then(|a| match a.name.as_str() {
            "value" => a.t.as_ref().and_then(|t| t.dims.iter().map(|&d| usize::try_from(d).ok()).collect()),
            "value_float" | "value_int" | "value_string" => Some(vec![]),
            "value_floats" => Some(vec![a.floats.len()]),
            "value_ints" => Some(vec![a.ints.len()]),
            _ => None,
        }),
        "Flatten" => input(0).and_then(|x| {
            let axis = attr_int(n, "axis").unwrap_or(1);
            let at = usize::try_from(if axis < 0 { axis + x.len() as i64 } else { axis }).ok().filter(|&a| a <= x.len())?;
            Some(vec![x[..at].iter().product(), x[at..].iter().product()])
        }),
        "GlobalAveragePool" | "GlobalMaxPool" => input(0).filter(|s| s.len() >= 2).map(|s| {
            let mut o = s.clone();
            o[2..].iter_mut().for_each(|d| *d = 1);
            o
        }),
        "Conv" => match (input(0), input(1)) {
            (Some(x), Some(w)) if x.len() == w.len() && x.len() >= 3 => window(n, x, &w[2..]).map(|mut o| {
                o[1] = w[0];
                o
            }),
            _ => None,
        },
        // with ceil_mode, exporters and runtimes disagree on the last window: not followed
        "MaxPool" | "AveragePool" if attr_int(n, "ceil_mode").unwrap_or(0) == 0 => match (input(0), attr_ints(n, "kernel_shape")) {
            (Some(x), Some(k)) if n.output.len() == 1 => {
                let k: Option<Vec<usize>> = k.iter().map(|&v| usize::try_from(v).ok()).collect();
                k.and_then(|k| window(n, x, &k))
            }
            _ => None,
        },
        _ => None,
    })
}

/// Ops whose `axis` attribute indexes their first input's axes
/// (`Flatten` may also name the end).
const AXIS_OPS: &[&str] = &[
    "Flatten",
    "Concat",
    "Gather",
    "GatherElements",
    "ScatterElements",
    "Softmax",
    "LogSoftmax",
    "Hardmax",
    "Split",
    "ArgMax",
    "ArgMin",
    "TopK",
    "LpNormalization",
    "Compress",
];

/// Checks an `axis` against the rank of the first input, when known
/// (tract indexes with it unchecked in places: a `Flatten` whose axis is
/// past a scalar input panics).
fn check_axis(n: &NodeProto, rank: Option<usize>) -> Result<()> {
    if !AXIS_OPS.contains(&n.op_type.as_str()) {
        return Ok(());
    }
    // Flatten's axis defaults to 1 (also past a scalar's rank)
    let given = attr_int(n, "axis").or((n.op_type == "Flatten").then_some(1));
    let (Some(axis), Some(rank)) = (given, rank) else { return Ok(()) };
    let r = rank as i64;
    let top = if n.op_type == "Flatten" { r } else { r - 1 };
    if axis < -r || axis > top {
        return Err(Error::Corrupt(format!("node {:?} ({}): axis {axis} for an input of rank {rank}", n.name, n.op_type)));
    }
    Ok(())
}

/// Numpy broadcast of two shapes, `None` if they do not broadcast.
fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let at = |s: &[usize], i: usize| if i + s.len() >= rank { s[i + s.len() - rank] } else { 1 };
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y || y == 1 => Some(x),
            (1, y) => Some(y),
            _ => None,
        })
        .collect()
}

/// Output shape of a Conv or pool over `x` with kernel `k`, when every
/// attribute is plain (`auto_pad` NOTSET or VALID); `None` otherwise.
fn window(n: &NodeProto, x: &[usize], k: &[usize]) -> Option<Vec<usize>> {
    let r = x.len().checked_sub(2)?;
    if k.len() != r || !matches!(attr_str(n, "auto_pad"), None | Some("NOTSET") | Some("VALID") | Some("")) {
        return None;
    }
    let get = |name: &str, default: usize, len: usize| -> Option<Vec<usize>> {
        match attr_ints(n, name) {
            None => Some(vec![default; len]),
            Some(v) if v.len() == len => v.iter().map(|&d| usize::try_from(d).ok()).collect(),
            Some(_) => None,
        }
    };
    let (s, d, p) = (get("strides", 1, r)?, get("dilations", 1, r)?, get("pads", 0, 2 * r)?);
    let mut out = x[..2].to_vec();
    for i in 0..r {
        let span = (k[i].checked_sub(1)?).checked_mul(d[i])? + 1;
        let padded = x[2 + i].checked_add(p[i])?.checked_add(p[i + r])?;
        let room = padded.checked_sub(span)?;
        if s[i] == 0 {
            return None;
        }
        out.push(room / s[i] + 1);
    }
    Some(out)
}
