"""Capture a PyTorch module as an ONNX graph (torch.onnx, dynamo exporter).

Weights stay raw initializers (never constant-folded into transposed copies), so one shared
weight file can serve every graph of a build (see :mod:`ffexport.export.weights`).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch

from ffexport.errors import CaptureError

log = logging.getLogger(__name__)

#: the opset of graphs without the Attention op (``--attention explicit``); fused graphs use 23
OPSET = 18
#: constants with more elements than this are never folded (weights keep their identity)
FOLD_INPUT_LIMIT = 1024
FOLD_OUTPUT_LIMIT = 1 << 16


@dataclass(frozen=True)
class GraphSpec:
    """What to capture: a module, example inputs, the ecosystem's names, and which sizes vary."""

    name: str
    module: torch.nn.Module
    inputs: tuple[Any, ...]
    input_names: Sequence[str]
    output_names: Sequence[str]
    dynamic_shapes: Any = None
    #: ``custom_translation_table`` for torch.onnx (custom ops -> ONNX nodes), e.g. plugin_ops.TRANSLATIONS
    translations: Any = None


class CaptureOnnx:
    """``CaptureOnnx(attention=...)(spec) -> onnx.ModelProto`` with weights inline (saved later).

    ``attention``: an :class:`~ffexport.export.attention_rewrite.AttentionChoice`, or None for the
    default of an ONNX Runtime build (fused: ``Attention`` at opset 23, the causal prefill node as
    ONNX Runtime's GroupQueryAttention). The opset follows the choice unless ``opset`` is given."""

    def __init__(self, *, attention: Any = None, opset: int | None = None, structure_only: bool = False,
                 keep_metadata: bool = False, constants: Any = None) -> None:
        if attention is None:
            from ffexport.export.attention_rewrite import choose_attention

            attention = choose_attention(None, backend="onnxruntime", precision="fp32")
        self.attention = attention
        self.opset = opset if opset is not None else attention.opset
        #: meta-device modules: no optimizer pass (it needs values) and no initializers in the result
        self.structure_only = structure_only
        #: structure only: ``constants(tensor) -> tensor | None`` decides for every captured tensor (meta
        #: or real): a value keeps it a constant, None makes it a graph input (weights that
        #: :mod:`ffexport.export.streamed` writes); without it, meta tensors become inputs
        self.constants = constants
        #: keep the exporter's per-node metadata (stack traces: ``ffexport bench`` attributes profiled time)
        self.keep_metadata = keep_metadata

    def __call__(self, spec: GraphSpec) -> onnx.ModelProto:
        import onnxscript.optimizer

        from ffexport.export.attention_rewrite import rewrite_attention
        from ffexport.export.selection import TRANSLATIONS as SELECTION  # top-k's cut: one Loop
        from ffexport.fusion.attention import FUSED, capturing

        log.debug("capturing %s (attention %s)", spec.name, self.attention.mode)
        for noisy in ("torch.onnx", "onnxscript", "onnx_ir"):  # e.g. "torchvision is not installed"
            logging.getLogger(noisy).setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings(), torch.no_grad(), capturing(self.attention.mode):
                warnings.simplefilter("ignore")
                program = torch.onnx.export(
                    spec.module, spec.inputs, dynamo=True, opset_version=self.opset, optimize=False,
                    input_names=list(spec.input_names), output_names=list(spec.output_names),
                    dynamic_shapes=spec.dynamic_shapes, verbose=False,
                    custom_translation_table={**SELECTION, **(spec.translations or {})},
                )
            if self.structure_only:
                model = program.model
                # meta tensors have no values: weights become graph inputs (valid ONNX, same structure)
                for name, value in list(model.graph.initializers.items()):
                    raw = getattr(value.const_value, "raw", None)
                    if isinstance(raw, torch.Tensor) and (raw.device.type == "meta" or self.constants is not None):
                        real = self.constants(raw) if self.constants is not None else None
                        if real is raw:
                            continue
                        if real is not None:
                            import onnx_ir

                            value.const_value = onnx_ir.Tensor(real.detach().cpu().contiguous().numpy(), name=name)
                            continue
                        value.const_value = None
                        model.graph.inputs.append(value)
                        del model.graph.initializers[name]
                # the optimizer also rewrites sequence ops (SplitToSequence -> Split) that TensorRT lacks
                model = onnxscript.optimizer.optimize(
                    model, input_size_limit=FOLD_INPUT_LIMIT, output_size_limit=FOLD_OUTPUT_LIMIT
                )
            else:
                model = onnxscript.optimizer.optimize(
                    program.model, input_size_limit=FOLD_INPUT_LIMIT, output_size_limit=FOLD_OUTPUT_LIMIT
                )
            if self.attention.mode == FUSED:
                counts = rewrite_attention(model, contrib=self.attention.contrib)
                log.debug("%s: attention rewrites %s", spec.name, counts)
            proto = onnx.ModelProto()
            proto.CopyFrom(_to_proto(model))
        except Exception as e:  # the exporter raises many types; all mean "this graph did not capture"
            raise CaptureError(f"capturing the {spec.name} graph failed: {type(e).__name__}: {e}") from e
        proto.producer_name = "ffexport"
        if not self.keep_metadata:
            _strip_metadata(proto)
        return proto


def _strip_metadata(model: onnx.ModelProto) -> None:
    """Drop per-node exporter metadata (Python stack traces, FX names): most of a small graph's bytes."""
    for node in model.graph.node:
        del node.metadata_props[:]
    for fn in model.functions:
        for node in fn.node:
            del node.metadata_props[:]


def _to_proto(model) -> onnx.ModelProto:
    import onnx_ir

    return onnx_ir.serde.serialize_model(model)


def check_graph(model: onnx.ModelProto, path: str) -> None:
    """onnx.checker (full check) and strict shape inference, on the saved file (external data)."""
    try:
        onnx.checker.check_model(path, full_check=True)
        onnx.shape_inference.infer_shapes_path(path, path + ".inferred", strict_mode=True)
    except Exception as e:
        raise CaptureError(f"{path} fails the ONNX checker: {e}") from e
    finally:
        if os.path.exists(path + ".inferred"):
            os.remove(path + ".inferred")


def save_checked(model: onnx.ModelProto, directory: Path, filename: str) -> Path:
    """Save ``model`` as ``directory/filename`` atomically, after the ONNX checker and strict shape
    inference pass on the saved file (by path: external data and >2 GB graphs work)."""
    tmp = directory / f".{filename}.partial"
    onnx.save(model, str(tmp))
    try:
        check_graph(model, str(tmp))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, directory / filename)
    return directory / filename
