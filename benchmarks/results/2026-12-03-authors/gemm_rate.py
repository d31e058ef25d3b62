"""fp32 GEMM rate on 2 threads for the reduced prefill's shapes (1265 tokens): PyTorch (what the authors'
nn.Linear calls) and ONNX Runtime MatMul with a constant weight (what ffexport's graph runs); bf16 in PyTorch
for reference. Best of 5 after a warm-up (the machine is shared)."""
import time, numpy as np, torch, onnx, onnxruntime as ort
from onnx import helper, TensorProto, numpy_helper
torch.set_num_threads(2)
T = 1265
shapes = {"q/o 1536x1536": (1536, 1536), "gate/up 1536x8960": (1536, 8960), "down 8960x1536": (8960, 1536)}
def best(f, n=5):
    f(); ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return min(ts)
opts = ort.SessionOptions(); opts.intra_op_num_threads = 2; opts.inter_op_num_threads = 1
for name, (k, n) in shapes.items():
    flop = 2 * T * k * n
    x = torch.randn(1, T, k); lin = torch.nn.Linear(k, n, bias=False)
    with torch.no_grad():
        t_torch = best(lambda: lin(x))
        lin16, x16 = lin.to(torch.bfloat16), x.to(torch.bfloat16)
        t_bf16 = best(lambda: lin16(x16))
    w = np.random.randn(k, n).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, T, k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, T, n])], [numpy_helper.from_array(w, "w")])
    s = ort.InferenceSession(helper.make_model(g).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    xn = x.numpy(); t_ort = best(lambda: s.run(None, {"x": xn}))
    print(f"{name}: torch fp32 {flop / t_torch / 1e9:6.0f} GFLOP/s, onnxruntime fp32 {flop / t_ort / 1e9:6.0f} GFLOP/s, "
          f"torch bf16 {flop / t_bf16 / 1e9:6.0f} GFLOP/s")
