"""Int8 weight GEMMs for ONNX Runtime (``ffexport build --precision int8``; issue 14).

:class:`QuantizeInt8` rewrites a saved fp32 graph with ONNX Runtime's own dynamic quantizer
(``onnxruntime.quantization.quantize_dynamic``): every MatMul whose second input is one of the chosen
``nn.Linear`` weights (the decoder layers' and, :data:`INT8_LM_HEAD`, ``lm_head``'s) gets int8
weights with one symmetric scale per output channel, and its activations are quantized to uint8 per
run (``DynamicQuantizeLinear`` + ``MatMulInteger``, fused by ONNX Runtime into
``DynamicQuantizeMatMul``, which MLAS runs on VNNI/AMX). Everything else stays fp32: attention
(MatMuls of two activations, GroupQueryAttention), norms, softmax, RoPE, FrameFusion's steps and the
embedding (a Gather). Weights are chosen by content, not by name (the exporter renames a weight when
it folds its transpose), so a constant that is not a model weight is never quantized.

:class:`Int8Fidelity` is the int8 graphs' own gate against the PyTorch fp32 reference: greedy tokens,
the prefill logits' max error relative to their range, and top-5 overlap (docs/build-format.md).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

log = logging.getLogger(__name__)

#: what the manifest says about how the graphs were quantized
SCHEME = ("onnxruntime.quantization.quantize_dynamic: MatMul weights int8, symmetric, one scale per output channel; "
          "activations uint8, quantized per run (DynamicQuantizeLinear + MatMulInteger)")

#: lm_head's weight in int8 too. Measured on the tiny preset (5 synthetic videos, 2026-12-03): prefill logits
#: max |diff| 1.3-2.0% of their range with lm_head int8, 1.4-2.0% with it fp32, same argmax and top-5; kept
#: fp32, the quantizer would still turn its Gemm into a MatMul over a transposed fp32 copy (a second
#: vocab x hidden fp32 tensor in weights.bin), and int8 reads a quarter of the bytes per decoded token.
INT8_LM_HEAD = True


def linear_weight_keys(modules: Iterable[Any]) -> frozenset[str]:
    """Content keys (:func:`tensor_key`) of every ``nn.Linear`` weight under ``modules``, as a graph
    stores it: transposed to [in, out] (what the exporter folds for ``x @ W.T``) and as it is."""
    from torch import nn

    keys = set()
    for module in modules:
        for sub in module.modules():
            if isinstance(sub, nn.Linear):
                weight = sub.weight.detach().float().cpu()
                for array in (weight.T.contiguous().numpy(), weight.contiguous().numpy()):
                    keys.add(_key(array.tobytes()))
    return frozenset(keys)


def decoder_weight_keys(parts) -> frozenset[str]:
    """The weights ``ffexport build --precision int8`` quantizes: every projection of the decoder layers
    (``parts``: :class:`ffexport.fusion.decoder.DecoderParts`) and, :data:`INT8_LM_HEAD`, ``lm_head``."""
    return linear_weight_keys([parts.layers, *([parts.lm_head] if INT8_LM_HEAD else [])])


def _key(data: bytes) -> str:
    return f"{onnx.TensorProto.FLOAT}:{hashlib.sha256(data).hexdigest()}"


def tensor_key(tensor: onnx.TensorProto, directory: Path) -> str | None:
    """The content key of a 2-D float32 initializer (inline or external data in ``directory``);
    None for any other tensor."""
    if tensor.data_type != onnx.TensorProto.FLOAT or len(tensor.dims) != 2:
        return None
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        info = {e.key: e.value for e in tensor.external_data}
        with open(directory / info["location"], "rb") as f:
            f.seek(int(info.get("offset", 0)))
            data = f.read(int(info["length"])) if "length" in info else f.read()
    else:
        data = tensor.raw_data or onnx.numpy_helper.to_array(tensor).astype(np.float32).tobytes()
    return _key(data)


@dataclass(frozen=True)
class QuantizedGraph:
    """What :class:`QuantizeInt8` did to one graph (the manifest's ``graphs.*.quantized``)."""

    source: str
    scheme: str
    #: weight GEMMs (MatMul, and Gemm turned MatMul) with int8 weights
    matmuls_int8: int
    #: MatMuls left fp32: both inputs are activations (attention), or a weight not chosen (lm_head)
    matmuls_fp32: int
    #: of those, Gemm nodes (lm_head, ``x @ W.T``) in int8 / left fp32 (over a transposed fp32 copy)
    gemms_int8: int
    gemms_fp32: int

    def to_json(self) -> dict[str, Any]:
        return {"from": self.source, **{k: v for k, v in asdict(self).items() if k != "source"}}


class QuantizeInt8:
    """``QuantizeInt8(weight_keys)(graph, out) -> QuantizedGraph``: ``graph`` (fp32, external data
    beside it) rewritten to ``out`` with its model-weight MatMuls in int8; ``out``'s tensors are
    saved as external data in ``out.name + ".data"`` beside it."""

    def __init__(self, weight_keys: frozenset[str]) -> None:
        if not weight_keys:
            raise ValueError("no model weights to quantize")
        self.weight_keys = weight_keys

    def select(self, model: onnx.ModelProto, directory: Path) -> tuple[list[str], list[str]]:
        """(MatMul nodes to quantize, MatMul nodes to keep fp32) of ``model`` saved in ``directory``, by the
        names the quantizer gives them: it turns every ``Gemm`` (lm_head: ``x @ W.T``) into a MatMul named
        ``<gemm>_MatMul`` over a transposed copy of its weight, quantized only when that weight is chosen."""
        initializers = {t.name: t for t in model.graph.initializer}
        keys: dict[str, str | None] = {}
        chosen, kept = [], []
        for node in model.graph.node:
            if node.op_type not in ("MatMul", "Gemm"):
                continue
            weight = initializers.get(node.input[1])
            if weight is not None and weight.name not in keys:
                keys[weight.name] = tensor_key(weight, directory)
            is_weight = weight is not None and keys[weight.name] in self.weight_keys
            name = node.name if node.op_type == "MatMul" else f"{node.name}_MatMul"
            (chosen if is_weight else kept).append(name)
        return chosen, kept

    def __call__(self, graph: Path, out: Path) -> QuantizedGraph:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        graph, out = Path(graph), Path(out)
        model = onnx.load(str(graph), load_external_data=False)
        chosen, kept = self.select(model, graph.parent)
        if not chosen:
            raise ValueError(f"{graph.name}: no MatMul takes a model weight; nothing to quantize")
        unnamed = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and not n.name]
        if unnamed:  # the quantizer selects nodes by name
            raise ValueError(f"{graph.name}: {len(unnamed)} MatMul node(s) without a name")
        # handed over in memory: the quantizer saves its own copy for shape inference in a temporary folder
        # (given a path, it would write one beside the graph; onnx refuses linked external data)
        full = onnx.load(str(graph), load_external_data=True)
        with _QuietQuantizer():
            quantize_dynamic(full, str(out), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"], nodes_to_quantize=chosen, nodes_to_exclude=kept,
                             use_external_data_format=True)
        del full
        result = onnx.load(str(out), load_external_data=False)
        done = sum(1 for n in result.graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul"))
        if done != len(chosen):
            raise ValueError(f"{graph.name}: {len(chosen)} weight MatMul(s) chosen, the quantizer wrote {done}")
        gemms = [f"{n.name}_MatMul" for n in model.graph.node if n.op_type == "Gemm"]
        return QuantizedGraph(graph.name, SCHEME, len(chosen), len(kept),
                              sum(name in chosen for name in gemms), sum(name in kept for name in gemms))


class _QuietQuantizer(logging.Filter):
    """Drops the quantizer's "Please consider to run pre-processing" warning (it logs through the root
    logger on every call; the pre-processing folds shapes, which our graphs have static already)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Please consider to run pre-processing")

    def __enter__(self) -> "_QuietQuantizer":
        logging.getLogger().addFilter(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger().removeFilter(self)


# ============================================================================ the int8 gate
@dataclass(frozen=True)
class Int8Fidelity:
    """Thresholds of the int8 gate, against the PyTorch fp32 reference on each parity video:

    - ``logits_rel``: the prefill logits' max |int8 - fp32| divided by the fp32 logits' range (max - min);
    - ``top5``: at least this many of the fp32 reference's top-5 prefill tokens in the int8 top-5;
    - ``first_token``: the first generated token (argmax of the prefill logits) must be the reference's.

    Greedy tokens over the build's ``check_tokens`` steps are recorded (equal, first divergence) and
    required equal only when ``tokens_equal`` is set: int8 arithmetic may flip a later near-tie (the
    tiny preset's static clip diverges at token 5 of 8).

    Chosen from measurements on the tiny preset (2026-12-03, 5 synthetic clips and the build's 3 parity
    videos): logits max |diff| 1.3-2.1% of their range (bound 5%, 2.4x the worst), top-5 overlap 4-5
    (bound 3), first token always equal; a corrupted scale (x50 on layer 0's q projection) gives 61% of
    the range, top-5 overlap 0 and another first token. docs/build-format.md, "Int8 builds"."""

    logits_rel: float = 0.05
    top5: int = 3
    first_token: bool = True
    tokens_equal: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Int8Comparison:
    """One parity video through the int8 graphs vs the PyTorch fp32 reference."""

    case: str
    logits_max_abs: float
    logits_range: float
    logits_rel: float
    top5_overlap: int
    argmax_equal: bool
    generated_ids: list[int]
    reference_ids: list[int]
    tokens_equal: bool
    #: the first step whose token differs (None: equal)
    first_divergence: int | None
    #: decoding with the bucket's static decode graph gave the same tokens as ``decode.int8.onnx``
    static_decode_equal: bool = True
    #: the fp32 reference's top-1 minus top-2 prefill logit: a margin below ``logits_max_abs`` is a near-tie
    #: that the int8 error alone can flip (recorded to tell such a flip from a wrong graph; still a failure)
    reference_margin: float = 0.0
    passed: bool = False
    failures: list[str] = field(default_factory=list)


def compare_int8(case: str, logits: np.ndarray, reference: np.ndarray, tokens: list[int], reference_ids: list[int],
                 fidelity: Int8Fidelity, *, static_tokens: list[int] | None = None) -> Int8Comparison:
    """The int8 prefill logits and greedy tokens of one case against the fp32 reference's, judged by ``fidelity``."""
    got = np.asarray(logits, dtype=np.float64).reshape(-1)
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    max_abs = float(np.abs(got - ref).max()) if np.isfinite(got).all() else float("inf")
    spread = float(ref.max() - ref.min())
    rel = max_abs / spread if spread > 0 else float("inf")
    top = set(np.argsort(-ref)[:5].tolist())
    overlap = len(top & set(np.argsort(-got)[:5].tolist())) if np.isfinite(got).all() else 0
    divergence = next((i for i, (a, b) in enumerate(zip(tokens, reference_ids)) if a != b),
                      None if len(tokens) == len(reference_ids) else min(len(tokens), len(reference_ids)))
    top2 = np.sort(ref)[-2:]
    result = Int8Comparison(case, max_abs, spread, rel, overlap, int(got.argmax()) == int(ref.argmax()), list(tokens),
                            list(reference_ids), divergence is None, divergence,
                            static_tokens is None or static_tokens == list(tokens),
                            float(top2[1] - top2[0]) if ref.size > 1 else float("inf"))
    if not rel <= fidelity.logits_rel:
        result.failures.append(f"logits max |diff| {rel:.3f} of their range > {fidelity.logits_rel}")
    if overlap < fidelity.top5:
        result.failures.append(f"top-5 overlap {overlap} < {fidelity.top5}")
    if fidelity.first_token and not result.argmax_equal:
        tie = " (a near-tie: below the int8 logits error {:.4g})".format(max_abs) \
            if result.reference_margin < max_abs else ""
        result.failures.append(f"first token differs (the fp32 reference's top-2 margin {result.reference_margin:.4g}"
                               f"{tie})")
    if fidelity.tokens_equal and not result.tokens_equal:
        result.failures.append(f"greedy tokens differ from step {divergence}")
    if not result.static_decode_equal:
        result.failures.append("the static decode graph's tokens differ from decode.int8.onnx's")
    result.passed = not result.failures
    return result
