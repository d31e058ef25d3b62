"""Attention in the exported graphs: which formulation a backend gets, and the rewrites of the
``Attention`` node (opset 23) that torch.onnx emits for SDPA (see :mod:`ffexport.fusion.attention`).

Choice (``ffexport build --attention``, default by backend, precision and version; recorded in the
manifest):

* ONNX Runtime >= 1.23: ``fused``. ONNX Runtime's CPU ``Attention`` kernel materializes the L x L
  scores (measured: no faster than the explicit graph at 4096 tokens), its contrib
  ``GroupQueryAttention`` kernel is causal-aware and linear in memory (2.2x faster, 1/9 of the peak
  at 4096 tokens x 12 heads x 128, fp32, 2 threads), so the causal prefill node is rewritten to it.
* TensorRT-RTX (1.7): ``fused`` for fp16/bf16 (the parser maps ``Attention`` to IAttention and the
  AOT build takes it); ``explicit`` for fp32 ("Attention operation was not supported by a dedicated
  kernel").
* TensorRT (10.14+ parses ``Attention``): ``fused`` for fp16/bf16, ``explicit`` for fp32 (IAttention in
  float32 is not verified here), ``explicit`` before 10.14.

Rewrites (onnxscript rewriter rules; a failed match is a value with its reason):

* :class:`SoftmaxFloat32` (ONNX Runtime only): half-precision ``Attention`` nodes take their softmax
  in float32 (``softmax_precision = FLOAT``), the semantics of the PyTorch reference. TensorRT's parser
  rejects the attribute ("Setting softmax precision is not supported in TensorRT Attention";
  TensorRT-RTX 1.7.1), so graphs for TensorRT leave it out.
* :class:`CausalToGroupQueryAttention` (ONNX Runtime only): a causal self-attention node with 4-D
  q/k/v of equal length -> ``com.microsoft.GroupQueryAttention`` on [B, S, H*d] views.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import onnx_ir as ir
from onnxscript.rewriter import MatchResult, RewriteRuleClassBase, RewriteRuleSet

from ffexport.errors import InputError
from ffexport.fusion.attention import EXPLICIT, FUSED, MODES, OPSETS

log = logging.getLogger(__name__)

CONTRIB = "com.microsoft"
#: first ONNX Runtime with a CPU kernel for the opset-23 ``Attention`` op
ORT_ATTENTION_SINCE = (1, 23)
#: first TensorRT whose parser maps ``Attention`` to IAttention
TRT_ATTENTION_SINCE = (10, 14)


def _version(text: str | None) -> tuple[int, ...]:
    parts = []
    for p in (text or "0").split("."):
        digits = "".join(c for c in p if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


@dataclass(frozen=True)
class AttentionChoice:
    """What a build's graphs use: ``mode`` (fused/explicit), the opset, whether the graphs are for ONNX
    Runtime (``contrib``: the causal prefill attention becomes its contrib kernel and half-precision
    attention says ``softmax_precision``), and why (for the manifest)."""

    mode: str
    contrib: bool
    reason: str

    @property
    def opset(self) -> int:
        return OPSETS[self.mode]

    def to_json(self) -> dict:
        return {"mode": self.mode, "opset": self.opset,
                "prefill_op": ("com.microsoft.GroupQueryAttention" if self.contrib else "Attention")
                if self.mode == FUSED else "MatMul+Softmax",
                "reason": self.reason}


def choose_attention(requested: str | None, *, backend: str, precision: str, graph_only: bool = False,
                     versions: dict[str, str] | None = None) -> AttentionChoice:
    """Resolve ``--attention`` (None: the default for ``backend``/``precision``/the installed versions).
    ``versions`` maps "onnxruntime"/"tensorrt" to version strings (tests); None reads the installed ones."""
    if requested is not None and requested not in MODES:
        raise InputError(f"--attention {requested}: use {' or '.join(MODES)}")
    versions = dict(versions or {})
    if backend == "onnxruntime":
        if "onnxruntime" not in versions:
            import onnxruntime

            versions["onnxruntime"] = onnxruntime.__version__
        ok = _version(versions["onnxruntime"]) >= ORT_ATTENTION_SINCE
        default = (FUSED, f"ONNX Runtime {versions['onnxruntime']} runs Attention/GroupQueryAttention on CPU") if ok \
            else (EXPLICIT, f"ONNX Runtime {versions['onnxruntime']} predates the Attention op (1.23)")
        if requested == FUSED and not ok:
            raise InputError(f"--attention fused needs ONNX Runtime >= 1.23 (installed: {versions['onnxruntime']})")
    elif backend == "tensorrt-rtx":
        default = (EXPLICIT, "TensorRT-RTX 1.7 cannot build the Attention op in fp32 (no dedicated kernel)") \
            if precision == "fp32" else (FUSED, f"TensorRT-RTX parses Attention into IAttention and builds it in {precision}")
        if requested == FUSED and precision == "fp32":
            raise InputError("--attention fused with --backend tensorrt-rtx --precision fp32: TensorRT-RTX 1.7 cannot "
                             "build the Attention op in fp32 ('not supported by a dedicated kernel'); "
                             "use --attention explicit or --precision fp16/bf16")
    elif backend == "tensorrt":
        if "tensorrt" not in versions:
            try:
                import tensorrt

                versions["tensorrt"] = tensorrt.__version__
            except ImportError:
                versions["tensorrt"] = "0"
        new = _version(versions["tensorrt"]) >= TRT_ATTENTION_SINCE
        if not new:
            default = (EXPLICIT, f"TensorRT {versions['tensorrt']} predates the parser's Attention support (10.14)")
        elif precision == "fp32":
            default = (EXPLICIT, "IAttention in fp32 is not verified on TensorRT; fp32 keeps MatMul+Softmax")
        else:
            default = (FUSED, f"TensorRT {versions['tensorrt']} parses Attention into IAttention")
    else:
        raise InputError(f"--backend {backend}: use onnxruntime, tensorrt or tensorrt-rtx")
    mode, reason = (requested, "requested (--attention)") if requested is not None else default
    # graph-only builds are linted against TensorRT: keep the standard op there
    return AttentionChoice(mode, contrib=mode == FUSED and backend == "onnxruntime" and not graph_only, reason=reason)


# ============================================================================ rewrite rules
def _static_dims(value: ir.Value, rank: int) -> list | None:
    shape = value.shape
    if shape is None or len(shape) != rank:
        return None
    return list(shape)


class SoftmaxFloat32(RewriteRuleClassBase):
    """``Attention`` on float16/bfloat16 inputs -> the same node with ``softmax_precision = FLOAT``."""

    def __init__(self) -> None:
        super().__init__("attention_softmax_float32", remove_nodes=True)

    def pattern(self, op, q, k, v):
        return op.Attention(q, k, v, _allow_other_attributes=True, _outputs=["out"])

    def check(self, context, q, k, v, out, **_) -> MatchResult:
        result = MatchResult()
        node = out.producer()
        if q.dtype not in (ir.DataType.FLOAT16, ir.DataType.BFLOAT16):
            return result.fail(f"inputs are {q.dtype}: float32 softmax already")
        if "softmax_precision" in node.attributes:
            return result.fail("softmax_precision is set already")
        return result

    def rewrite(self, op, q, k, v, out, **_):
        node = out.producer()
        attrs = {name: attr.value for name, attr in node.attributes.items()}
        return op.Attention(q, k, v, softmax_precision=int(ir.DataType.FLOAT), **attrs)


class CausalToGroupQueryAttention(RewriteRuleClassBase):
    """Causal self-attention ``Attention(q, k, v)`` ([1, H, S, d] each, one output, no mask, no
    softcap) -> ``com.microsoft.GroupQueryAttention`` over [1, S, H*d] views (ONNX Runtime)."""

    def __init__(self) -> None:
        super().__init__("causal_attention_to_gqa", remove_nodes=True)

    def pattern(self, op, q, k, v):
        return op.Attention(q, k, v, _allow_other_attributes=True, _outputs=["out"])

    def check(self, context, q, k, v, out, **_) -> MatchResult:
        result = MatchResult()
        node = out.producer()
        attrs = node.attributes
        if attrs.get_int("is_causal", 0) != 1:
            return result.fail("not causal (the decode and vision attentions stay Attention)")
        if attrs.get_float("softcap", 0.0) != 0.0 or attrs.get_int("qk_matmul_output_mode", 0) != 0:
            return result.fail("softcap or qk output requested")
        if q.dtype not in (ir.DataType.FLOAT, ir.DataType.FLOAT16):
            return result.fail(f"{q.dtype}: ONNX Runtime's CPU GroupQueryAttention takes float32/float16")
        dims = [_static_dims(x, 4) for x in (q, k, v)]
        if any(d is None for d in dims):
            return result.fail("q/k/v are not 4-D with known shapes")
        (qb, qh, qs, qd), (kb, kh, ks, kd), (vb, vh, vs, vd) = dims
        if not all(isinstance(x, int) for x in (qh, qd, kh, kd, vh, vd)):
            return result.fail("head count or head size is not static")
        if qb != 1 or kb != 1 or vb != 1:
            return result.fail("batch is not 1")
        if qs != ks or ks != vs:
            return result.fail("q and k/v lengths differ (not a prefill self-attention)")
        if kd != qd or vd != qd or kh != vh or qh % kh:
            return result.fail("head layout unsupported")
        return result

    def rewrite(self, op, q, k, v, out, **_):
        node = out.producer()
        heads, head_dim = q.shape[1], q.shape[3]
        kv_heads = k.shape[1]
        scale = node.attributes.get_float("scale", head_dim**-0.5)
        packed = op.Constant(value_ints=[0, 0, -1])

        def bsd(x):
            return op.Reshape(op.Transpose(x, perm=[0, 2, 1, 3]), packed)

        length = op.Shape(q, start=2, end=3)  # [1] int64
        total = op.Cast(op.Squeeze(length), to=int(ir.DataType.INT32))
        seqlens = op.Cast(op.Sub(length, op.Constant(value_ints=[1])), to=int(ir.DataType.INT32))
        o, _, _ = op.GroupQueryAttention(
            bsd(q), bsd(k), bsd(v), None, None, seqlens, total,
            num_heads=heads, kv_num_heads=kv_heads, scale=scale, _domain=CONTRIB, _outputs=3)
        return op.Transpose(op.Reshape(o, op.Constant(value_ints=[0, 0, heads, head_dim])), perm=[0, 2, 1, 3])


def rewrite_attention(model: ir.Model, *, contrib: bool) -> dict[str, int]:
    """Apply the rules in place (``contrib``: graphs for ONNX Runtime; TensorRT's keep the exporter's
    ``Attention`` as it is); returns how many nodes each rule rewrote (for logs and tests)."""
    from onnxscript.rewriter import rewrite

    counts = {}
    rules = [SoftmaxFloat32.rule(), CausalToGroupQueryAttention.rule()] if contrib else []
    for rule in rules:
        before = _count(model)
        rewrite(model, pattern_rewrite_rules=RewriteRuleSet([rule]))
        counts[rule.name] = before - _count(model) if rule.name == "causal_attention_to_gqa" else \
            sum(1 for n in model.graph if n.op_type == "Attention" and "softmax_precision" in n.attributes)
    if contrib and counts.get("causal_attention_to_gqa") and CONTRIB not in model.opset_imports:
        model.opset_imports[CONTRIB] = 1
    return counts


def _count(model: ir.Model) -> int:
    return sum(1 for n in model.graph if n.op_type == "Attention" and n.domain in ("", "ai.onnx"))
