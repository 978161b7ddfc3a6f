//! Shared helpers for the integration tests: fixture models built in code,
//! locations of the real models, and comparison utilities.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use p2u_encode::encoder::file_info;
use p2u_encode::onnx::f32_tensor;
use p2u::{ProgressiveModel, RuntimeOptions};
use p2u_encode::{EncodeOptions, Encoded};
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorProto, ValueInfoProto,
};
use tract_onnx::prelude::Tensor;

/// Deterministic pseudo-random numbers (tests must be reproducible).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 11
    }
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() as f64 + 0.5) / (1u64 << 53) as f64
    }
    pub fn gauss(&mut self, sigma: f32) -> f32 {
        ((-2.0 * self.uniform().ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()) as f32 * sigma
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

pub fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    p2u_encode::onnx::value_info(name, DataType::Float, &dims)
}

pub fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: format!("{op}_{output}"),
        op_type: op.into(),
        attribute: attrs,
        ..Default::default()
    }
}

pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Ints as i32, ints: v.to_vec(), ..Default::default() }
}

pub fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: v, ..Default::default() }
}

/// An opset-17 model of one graph.
pub fn model(
    name: &str,
    node: Vec<NodeProto>,
    initializer: Vec<TensorProto>,
    input: Vec<ValueInfoProto>,
    output: Vec<ValueInfoProto>,
) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        producer_name: "p2u-tests".into(),
        graph: Some(GraphProto { node, name: name.into(), initializer, input, output, ..Default::default() }),
        ..Default::default()
    }
}

/// Input shape of [`fixture_model`].
pub const FIXTURE_INPUT: [usize; 4] = [1, 8, 16, 16];

/// A small model with every construct the encoder must handle: Conv,
/// unfolded BatchNorm, depthwise Conv with an all-zero bias, Mul/Add with
/// weight tensors, Gemm (transB), MatMul, two initializers with identical
/// values, and a weight stored as a `Constant` node.
pub fn fixture_model() -> ModelProto {
    let mut r = Rng(42);
    let mut t = |name: &str, dims: &[usize], sigma: f32, offset: f32| {
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|_| r.gauss(sigma) + offset).collect();
        f32_tensor(name, dims, &v)
    };
    let p = t("P", &[32, 32], 0.2, 0.0);
    let mut q = p.clone();
    q.name = "Q".into();
    let initializer = vec![
        t("W1", &[16, 8, 3, 3], 0.15, 0.0),
        t("B1", &[16], 0.1, 0.0),
        t("bn_scale", &[16], 0.1, 1.0),
        t("bn_bias", &[16], 0.1, 0.0),
        t("bn_mean", &[16], 0.1, 0.0),
        t("bn_var", &[16], 0.05, 1.0),
        t("W2", &[16, 1, 3, 3], 0.3, 0.0),
        f32_tensor("Bz", &[16], &[0.0; 16]),
        t("M", &[1, 16, 1, 1], 0.2, 1.0),
        t("A", &[1, 16, 1, 1], 0.2, 0.0),
        t("G", &[32, 16], 0.25, 0.0),
        t("Gb", &[32], 0.1, 0.0),
        p,
        q,
    ];
    let konst = AttributeProto {
        name: "value".into(),
        r#type: AttributeType::Tensor as i32,
        t: Some(t("K", &[32, 10], 0.2, 0.0)),
        ..Default::default()
    };
    let nodes = vec![
        node("Constant", &[], "K", vec![konst]),
        node("Conv", &["x", "W1", "B1"], "c1", vec![ints("pads", &[1, 1, 1, 1])]),
        node("BatchNormalization", &["c1", "bn_scale", "bn_bias", "bn_mean", "bn_var"], "bn", vec![]),
        node("Relu", &["bn"], "r", vec![]),
        node("Conv", &["r", "W2", "Bz"], "dw", vec![int("group", 16), ints("pads", &[1, 1, 1, 1])]),
        node("Mul", &["dw", "M"], "m", vec![]),
        node("Add", &["m", "A"], "a", vec![]),
        node("GlobalAveragePool", &["a"], "gap", vec![]),
        node("Flatten", &["gap"], "f", vec![]),
        node("Gemm", &["f", "G", "Gb"], "g", vec![int("transB", 1)]),
        node("MatMul", &["g", "P"], "mm1", vec![]),
        node("MatMul", &["mm1", "Q"], "mm2", vec![]),
        node("MatMul", &["mm2", "K"], "y", vec![]),
    ];
    model("fixture", nodes, initializer, vec![value_info("x", &[1, 8, 16, 16])], vec![value_info("y", &[1, 10])])
}

/// Encoder options for the fixture (small tensors are quantized too): the
/// default encode (mixed precision measured on synthetic inputs, rate order).
pub fn fixture_options() -> EncodeOptions {
    EncodeOptions { min_elements: 16, ..EncodeOptions::default() }
}

/// A uniform `bits`-bit base and a stage-by-stage stream for the fixture.
pub fn fixture_uniform(bits: u8) -> EncodeOptions {
    EncodeOptions { min_elements: 16, ..EncodeOptions::uniform(bits) }
}

/// Item length of [`text_fixture`]'s inputs.
pub const TEXT_LEN: usize = 8;

/// A two-input text-like model: int64 token ids `[N, 8]` looked up in an
/// embedding table (`Gather`), multiplied by an int64 `mask` `[N, 8]` (cast
/// to float), a MatMul with a bias, mean over the sequence, a classifier.
pub fn text_fixture() -> ModelProto {
    let mut r = Rng(7);
    let mut t = |name: &str, dims: &[usize], sigma: f32| {
        let n: usize = dims.iter().product();
        f32_tensor(name, dims, &(0..n).map(|_| r.gauss(sigma)).collect::<Vec<_>>())
    };
    let initializer = vec![
        t("E", &[50, 16], 0.5),
        t("W", &[16, 32], 0.25),
        t("b", &[32], 0.1),
        t("C", &[32, 4], 0.3),
        p2u_encode::onnx::int64_tensor("axes1", &[1], &[2]),
    ];
    let int_input = |name: &str| {
        let mut v = value_info(name, &[1, TEXT_LEN as i64]);
        if let Some(tract_onnx::pb::type_proto::Value::TensorType(t)) = v.r#type.as_mut().and_then(|t| t.value.as_mut()) {
            t.elem_type = DataType::Int64 as i32;
        }
        v
    };
    let cast = AttributeProto { name: "to".into(), r#type: AttributeType::Int as i32, i: DataType::Float as i64, ..Default::default() };
    let nodes = vec![
        node("Gather", &["E", "ids"], "emb", vec![]),
        node("Cast", &["mask"], "maskf", vec![cast]),
        node("Unsqueeze", &["maskf", "axes1"], "mask3", vec![]),
        node("Mul", &["emb", "mask3"], "masked", vec![]),
        node("MatMul", &["masked", "W"], "h", vec![]),
        node("Add", &["h", "b"], "hb", vec![]),
        node("Relu", &["hb"], "hr", vec![]),
        node("ReduceMean", &["hr"], "pooled", vec![ints("axes", &[1]), int("keepdims", 0)]),
        node("MatMul", &["pooled", "C"], "y", vec![]),
    ];
    model("text", nodes, initializer, vec![int_input("ids"), int_input("mask")], vec![value_info("y", &[1, 4])])
}

/// `model` in half precision, as fp16 exporters write it: every FLOAT
/// initializer, `Constant` value and declared type becomes `half` (FLOAT16 or BFLOAT16),
/// values rounded to nearest.
pub fn half_model(model: &ModelProto, half: DataType) -> ModelProto {
    let mut m = model.clone();
    let g = m.graph.as_mut().unwrap();
    let constants = g.node.iter_mut().flat_map(|n| &mut n.attribute).filter_map(|a| a.t.as_mut());
    for t in g.initializer.iter_mut().chain(constants) {
        if t.data_type == DataType::Float as i32 {
            let bits: Vec<u16> = p2u_encode::onnx::tensor_f32(t)
                .unwrap()
                .into_iter()
                .map(|v| if half == DataType::Float16 { half::f16::from_f32(v).to_bits() } else { half::bf16::from_f32(v).to_bits() })
                .collect();
            t.data_type = half as i32;
            t.float_data.clear();
            t.raw_data = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        }
    }
    for v in g.input.iter_mut().chain(&mut g.output).chain(&mut g.value_info) {
        if let Some(tract_onnx::pb::type_proto::Value::TensorType(t)) = v.r#type.as_mut().and_then(|t| t.value.as_mut()) {
            if t.elem_type == DataType::Float as i32 {
                t.elem_type = half as i32;
            }
        }
    }
    m
}

/// `If(cond)`: `relu(x · Wt)` (an initializer of the then-branch) or
/// `x · We` (a `Constant` of the else-branch), then `· C` in the main graph.
pub fn branching_model() -> tract_onnx::pb::ModelProto {
    use p2u_encode::onnx::{f32_tensor, value_info};
    use tract_onnx::pb::{attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, GraphProto};
    let mut r = Rng(9);
    let mut weights = |name: &str, dims: &[usize]| f32_tensor(name, dims, &(0..dims.iter().product()).map(|_| r.gauss(0.3)).collect::<Vec<_>>());
    let then_branch = GraphProto {
        name: "then".into(),
        initializer: vec![weights("Wt", &[16, 32])],
        node: vec![node("MatMul", &["x", "Wt"], "t_mm", vec![]), node("Relu", &["t_mm"], "y_then", vec![])],
        output: vec![value_info("y_then", DataType::Float, &[1, 32])],
        // as exporters annotate: shapes that hold at the declared batch only
        value_info: vec![value_info("t_mm", DataType::Float, &[1, 32])],
        ..Default::default()
    };
    let constant = AttributeProto { name: "value".into(), r#type: AttributeType::Tensor as i32, t: Some(weights("", &[16, 32])), ..Default::default() };
    let else_branch = GraphProto {
        name: "else".into(),
        node: vec![node("Constant", &[], "We", vec![constant]), node("MatMul", &["x", "We"], "y_else", vec![])],
        output: vec![value_info("y_else", DataType::Float, &[1, 32])],
        ..Default::default()
    };
    let branch = |name: &str, g: GraphProto| AttributeProto { name: name.into(), r#type: AttributeType::Graph as i32, g: Some(g), ..Default::default() };
    let mut choose = node("If", &["cond"], "y", vec![branch("then_branch", then_branch), branch("else_branch", else_branch)]);
    choose.name = "branch".into();
    model(
        "branching",
        vec![choose, node("MatMul", &["y", "C"], "out", vec![])],
        vec![weights("C", &[32, 4])],
        vec![value_info("x", DataType::Float, &[1, 16]), value_info("cond", DataType::Bool, &[])],
        vec![value_info("out", DataType::Float, &[1, 4])],
    )
}

/// Encodes a model held in memory.
pub fn encode(model: &ModelProto, name: &str, opts: &EncodeOptions) -> Encoded {
    let bytes = p2u_encode::onnx::encode_model(model);
    p2u_encode::encode(model, name, file_info(&format!("{name}.onnx"), &bytes), opts, &mut |_| {}).expect("encode")
}

/// A deterministic input tensor.
pub fn input(shape: &[usize], seed: u64, lo: f32, hi: f32) -> Tensor {
    let mut r = Rng(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| lo + (hi - lo) * r.uniform() as f32).collect();
    Tensor::from_shape(shape, &v).expect("shape")
}

/// Values of an f32 tensor.
pub fn values(t: &Tensor) -> Vec<f32> {
    t.to_plain_array_view::<f32>().expect("f32 tensor").iter().copied().collect()
}

/// f32 bits of the first output.
/// The bits of every output's values, outputs in order.
pub fn output_bits(outputs: &[Tensor]) -> Vec<u32> {
    outputs.iter().flat_map(|t| values(t)).map(f32::to_bits).collect()
}

/// Largest absolute difference between two f32 tensors.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    values(a).iter().zip(values(b)).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Runs a plain ONNX model in tract through the same plan builder p2u uses.
pub fn reference_outputs(model: &ModelProto, shape: &[usize], input: &Tensor) -> Vec<Tensor> {
    let plan = p2u::runtime::build_plan(model, &RuntimeOptions { input_shapes: vec![shape.to_vec()], ..Default::default() }).expect("plan");
    plan.run(vec![input.clone()]).expect("run")
}

/// A model loaded from a base, at stage 0.
pub fn load_base(enc: &Encoded, shape: &[usize]) -> ProgressiveModel {
    ProgressiveModel::from_base(&enc.base, RuntimeOptions { input_shapes: vec![shape.to_vec()], ..Default::default() }).expect("base loads")
}

/// A fresh scratch directory for one test (`name` unique per test binary).
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("p2u-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A finished command's stdout then stderr, as text (for assertions).
pub fn output_text(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

/// Where `../shared/models` is (override with `P2U_SHARED_MODELS`).
pub fn shared_models() -> PathBuf {
    std::env::var_os("P2U_SHARED_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/models"))
}

/// The repository's top (the workspace root), whichever crate's tests run.
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().find(|d| d.join("Cargo.lock").exists()).unwrap_or(here).to_path_buf()
}

/// Where downloaded models are cached (`.ci/fetch-models` fills it).
pub fn model_cache() -> PathBuf {
    std::env::var_os("P2U_MODEL_CACHE").map(PathBuf::from).unwrap_or_else(|| dirs_home().join(".cache/p2u/models"))
}

fn dirs_home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"))
}

/// A required model file; panics with how to get it.
pub fn require(path: PathBuf) -> PathBuf {
    assert!(path.exists(), "{} is missing: run `bash .ci/fetch-models` first", path.display());
    path
}

/// Smooth, channel-correlated images (a few random low-frequency waves plus
/// a little noise): neighbouring inputs correlate, as in real images.
pub fn smooth_items(count: usize, seed: u64) -> Vec<f32> {
    let [_, c, h, w] = FIXTURE_INPUT;
    let mut r = Rng(seed);
    let mut out = Vec::with_capacity(count * c * h * w);
    for _ in 0..count {
        let waves: Vec<(f32, f32, f32, f32)> =
            (0..3).map(|_| (r.gauss(0.4), r.gauss(0.4), r.uniform() as f32 * std::f32::consts::TAU, 0.5 + r.uniform() as f32)).collect();
        let mix: Vec<f32> = (0..c).map(|_| 0.5 + r.uniform() as f32).collect();
        for m in &mix {
            for y in 0..h {
                for x in 0..w {
                    let v: f32 = waves.iter().map(|(fy, fx, ph, a)| a * (fy * y as f32 + fx * x as f32 + ph).sin()).sum();
                    out.push(m * v + r.gauss(0.05));
                }
            }
        }
    }
    out
}

/// A NumPy `.npy` file (version 1) of little-endian f32 values.
pub fn npy(descr: &str, shape: &str, values: &[f32]) -> Vec<u8> {
    npy_bytes(descr, shape, &values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
}

/// A float32, int64 or bool tensor as a NumPy `.npy` file.
pub fn tensor_npy(t: &Tensor) -> Vec<u8> {
    let shape = match t.shape() {
        [n] => format!("({n},)"),
        dims => format!("({})", dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    match t.datum_type() {
        tract_onnx::prelude::DatumType::I64 => {
            let v = t.to_plain_array_view::<i64>().unwrap();
            npy_bytes("<i8", &shape, &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
        }
        tract_onnx::prelude::DatumType::Bool => {
            let v = t.to_plain_array_view::<bool>().unwrap();
            npy_bytes("|b1", &shape, &v.iter().map(|&b| b as u8).collect::<Vec<u8>>())
        }
        _ => npy("<f4", &shape, &values(t)),
    }
}

/// A NumPy `.npy` file (format 1.0) with a raw little-endian body.
pub fn npy_bytes(descr: &str, shape: &str, body: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(body);
    out
}
