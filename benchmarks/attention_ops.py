"""One causal self-attention (12 heads x 128, the Qwen2-VL-2B shape, fp32) in ONNX Runtime on CPU, four ways:
explicit MatMul+Softmax (opset 18), the ONNX Attention op (opset 23), com.microsoft MultiHeadAttention
(unidirectional) and com.microsoft GroupQueryAttention. Prints the best of 3 runs, the error against
numpy (L <= 2048) and the process's peak RSS. Run each kind in its own process:

    python benchmarks/attention_ops.py {explicit|attention|mha|gqa} L [threads]

Why ffexport rewrites the causal prefill attention to GroupQueryAttention for ONNX Runtime:
docs/benchmarks.md, "Fused attention".
"""
import sys, time, resource, numpy as np, onnx, onnxruntime as ort
from onnx import helper as h, TensorProto as T
L = int(sys.argv[2]); H=12; D=128; kind=sys.argv[1]; threads=int(sys.argv[3]) if len(sys.argv)>3 else 2
f = T.FLOAT
def vi(n, shape): return h.make_tensor_value_info(n, f, shape)
scale = D**-0.5
if kind == "attention":
    nodes=[h.make_node("Attention", ["q","k","v"], ["o"], is_causal=1, scale=scale)]
    ins=[vi("q",[1,H,L,D]),vi("k",[1,H,L,D]),vi("v",[1,H,L,D])]; out=[vi("o",[1,H,L,D])]; ops=[h.make_opsetid("",23)]
elif kind == "mha":
    nodes=[h.make_node("MultiHeadAttention", ["q","k","v"], ["o"], domain="com.microsoft", num_heads=H, unidirectional=1, scale=scale)]
    ins=[vi("q",[1,L,H*D]),vi("k",[1,L,H*D]),vi("v",[1,L,H*D])]; out=[vi("o",[1,L,H*D])]; ops=[h.make_opsetid("",23),h.make_opsetid("com.microsoft",1)]
elif kind == "gqa":
    nodes=[h.make_node("GroupQueryAttention", ["q","k","v","","","seqlens_k","total_len"], ["o","pk","pv"], domain="com.microsoft", num_heads=H, kv_num_heads=H, scale=scale)]
    ins=[vi("q",[1,L,H*D]),vi("k",[1,L,H*D]),vi("v",[1,L,H*D]),h.make_tensor_value_info("seqlens_k",T.INT32,[1]),h.make_tensor_value_info("total_len",T.INT32,[])]
    out=[vi("o",[1,L,H*D]),vi("pk",None),vi("pv",None)]; ops=[h.make_opsetid("",23),h.make_opsetid("com.microsoft",1)]
elif kind == "explicit":
    import numpy as np
    mask = np.triu(np.full((L,L), -np.inf, np.float32), 1)
    nodes=[h.make_node("Transpose",["k"],["kt"],perm=[0,1,3,2]), h.make_node("MatMul",["q","kt"],["s0"]), h.make_node("Mul",["s0","sc"],["s1"]),
           h.make_node("Add",["s1","mask"],["s2"]), h.make_node("Softmax",["s2"],["p"],axis=-1), h.make_node("MatMul",["p","v"],["o"])]
    ins=[vi("q",[1,H,L,D]),vi("k",[1,H,L,D]),vi("v",[1,H,L,D])]; out=[vi("o",[1,H,L,D])]; ops=[h.make_opsetid("",18)]
inits=[]
if kind=="explicit":
    inits=[h.make_tensor("sc",f,[],[scale]), onnx.numpy_helper.from_array(mask,"mask")]
g = h.make_graph(nodes,"g",ins,out,inits)
m = h.make_model(g, opset_imports=ops); m.ir_version=10
so = ort.SessionOptions(); so.intra_op_num_threads=threads; so.inter_op_num_threads=1
s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
rng=np.random.default_rng(0)
q=rng.standard_normal((1,H,L,D),np.float32); k=rng.standard_normal((1,H,L,D),np.float32); v=rng.standard_normal((1,H,L,D),np.float32)
def ref():
    sc=(q@k.transpose(0,1,3,2))*scale+np.triu(np.full((L,L),-np.inf,np.float32),1); sc-=sc.max(-1,keepdims=True); p=np.exp(sc); p/=p.sum(-1,keepdims=True); return p@v
if kind in ("attention","explicit"): feed={"q":q,"k":k,"v":v}
else:
    t=lambda x: x.transpose(0,2,1,3).reshape(1,L,H*D)
    feed={"q":t(q),"k":t(k),"v":t(v)}
    if kind=="gqa": feed.update(seqlens_k=np.array([L-1],np.int32), total_len=np.array(L,np.int32))
rss0=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
o=s.run(["o"],feed)[0]
if kind not in ("attention","explicit"): o=o.reshape(1,L,H,D).transpose(0,2,1,3)
if L<=2048: err=np.abs(o-ref()).max()
else: err=float("nan")
ts=[]
for _ in range(3):
    t0=time.perf_counter(); s.run(["o"],feed); ts.append(time.perf_counter()-t0)
print(f"{kind} L={L} thr={threads} min {min(ts)*1000:.1f} ms  err {err:.2e} peakRSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024:.0f} MB (before run {rss0/1024:.0f})")
