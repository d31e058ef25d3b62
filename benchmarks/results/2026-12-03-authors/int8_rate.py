"""ONNX Runtime: fp32 MatMul vs com.microsoft.DynamicQuantizeMatMul (int8 weights, per-run quantized
activations; MLAS picks AMX/VNNI kernels) at the reduced prefill's gate/up shape, 2 threads, best of 5."""
import time, numpy as np, onnxruntime as ort
from onnx import helper, TensorProto, numpy_helper
T, K, N = 1265, 1536, 8960
opts = ort.SessionOptions(); opts.intra_op_num_threads = 2; opts.inter_op_num_threads = 1
x = np.random.randn(1, T, K).astype(np.float32); w = (np.random.randn(K, N) * 0.02).astype(np.float32)
scale = np.float32(np.abs(w).max() / 127); wq = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
def session(nodes, inits):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, T, K])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, T, N])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
def best(s, n=5):
    s.run(None, {"x": x}); ts = []
    for _ in range(n):
        t = time.perf_counter(); s.run(None, {"x": x}); ts.append(time.perf_counter() - t)
    return min(ts)
fp32 = session([helper.make_node("MatMul", ["x", "w"], ["y"])], [numpy_helper.from_array(w, "w")])
q = session([helper.make_node("DynamicQuantizeMatMul", ["x", "wq", "ws", "wz"], ["y"], domain="com.microsoft")],
            [numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(np.array([scale], np.float32), "ws"),
             numpy_helper.from_array(np.array([0], np.int8), "wz")])
flop = 2 * T * K * N
a, b = best(fp32), best(q)
print(f"gate/up {K}x{N}, {T} tokens: onnxruntime fp32 MatMul {flop / a / 1e9:.0f} GFLOP/s ({a * 1e3:.0f} ms), "
      f"DynamicQuantizeMatMul int8 {flop / b / 1e9:.0f} GFLOP/s ({b * 1e3:.0f} ms): {a / b:.2f}x")
