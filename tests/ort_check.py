"""Independent check of a p2u base with the ONNX tools.

usage: ort_check.py BASE.onnx INPUTS P2U_OUTPUT.f32 TOLERANCE [--plain]

Runs onnx.checker on the base, runs it in onnxruntime on the inputs
(`X.npy` for the model's only input, or `NAME=X.npy,NAME=Y.npy` naming
each) and compares its first output with the stage-0 output p2u computed
in tract (raw little-endian float32): max |ort - p2u| must be <= TOLERANCE * max|p2u|
and the arg-max must agree (ORT's QDQ fusions are disabled for this
comparison, and their effect is printed). Exit code 0 only then. With
--plain the model is any ONNX file (e.g. the original of an old opset),
not a base: no DequantizeLinear nodes are required.
"""
import sys

import numpy as np
import onnx
import onnxruntime as ort

base, inputs, p2u_out, tol = sys.argv[1:5]
plain = "--plain" in sys.argv[5:]
model = onnx.load(base)
onnx.checker.check_model(model, full_check=True)
dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
types = {t.name: t.data_type for t in model.graph.initializer}
assert dq or plain, "the base has no DequantizeLinear nodes"
assert all(types[n.input[0]] in (onnx.TensorProto.UINT2, onnx.TensorProto.UINT4, onnx.TensorProto.UINT8) for n in dq)
feeds = [part.rpartition("=")[::2] for part in inputs.split(",")]

def run(disable_qdq_fusion):
    opts = ort.SessionOptions()
    # ORT may fuse DequantizeLinear into integer kernels that also quantize
    # activations: that computes another model than the ONNX semantics.
    opts.add_session_config_entry("session.disable_quant_qdq", "1" if disable_qdq_fusion else "0")
    sess = ort.InferenceSession(base, opts, providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in sess.get_inputs()}
    first = sess.get_inputs()[0].name
    # a float16 model takes float16 inputs (p2u serves it in float32)
    half = lambda name, x: x.astype(np.float16) if inputs[name].type == "tensor(float16)" else x
    out = sess.run(None, {name or first: half(name or first, np.load(f)) for name, f in feeds})[0]
    return out.astype(np.float32).ravel()


y = run(True)
fused = run(False)
ref = np.fromfile(p2u_out, dtype="<f4")
assert y.shape == ref.shape, (y.shape, ref.shape)
scale = float(np.abs(ref).max())
err = float(np.abs(y - ref).max())
print(f"onnx.checker ok; {len(dq)} DequantizeLinear nodes; onnxruntime {ort.__version__}: "
      f"max|ort - p2u| = {err:.3e} ({err / scale:.2e} of max|output|), argmax {y.argmax()} vs {ref.argmax()}; "
      f"with ORT's QDQ fusions on: {float(np.abs(fused - ref).max()) / scale:.2e} of max|output|, argmax {fused.argmax()}")
assert err <= float(tol) * scale, f"outputs differ by {err}, tolerance {float(tol) * scale}"
assert y.argmax() == ref.argmax()
