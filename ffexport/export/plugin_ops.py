"""Export-time custom ops: one FrameFusionMerge / FrameFusionPrune node per static step.

``PluginSteps`` plugs into :class:`ffexport.fusion.reducers.StaticReducer` (``steps=``). Each step
calls a torch custom op (``ffexport::framefusion_merge`` / ``ffexport::framefusion_prune``):

- eager: the standard ops (:class:`ffexport.fusion.reducers.StandardSteps`), so PyTorch runs the
  reference math and the parity gate compares a plugin graph with exactly what a standard graph
  computes;
- fake (meta / tracing): the static output shapes the schedule fixes;
- ONNX (``TRANSLATIONS``, for ``torch.onnx.export(..., custom_translation_table=...)``): one node of
  the plugin interface (:mod:`ffexport.plugins`): op_type = plugin name, domain ``ai.onnx.contrib``,
  the int attributes and ``plugin_version`` / ``plugin_namespace``.

The exporter records the nodes' output types and static shapes as value_info (ONNX shape inference
cannot infer a custom node), and adds ``ai.onnx.contrib`` to the model's opset imports.
"""

from __future__ import annotations

import onnx.defs
import torch
from onnxscript.values import Op, Opset

from ffexport.fusion.reducers import StandardSteps
from ffexport.plugins import MERGE, ONNX_DOMAIN, PLUGIN_NAMESPACE, PLUGIN_VERSION, PRUNE

_STANDARD = StandardSteps()


# ---------------------------------------------------------------- torch custom ops
@torch.library.custom_op("ffexport::framefusion_merge", mutates_args=())
def framefusion_merge(visual: torch.Tensor, patch_ids: torch.Tensor, remove: int, patches_per_frame: int,
                      max_run: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A static merge step (the FrameFusionMerge plugin): ``(kept [n - remove], values [n - remove, D])``."""
    kept, values = _STANDARD.merge(visual, patch_ids, remove, patches_per_frame, max_run)
    return kept.clone(), values.clone()  # custom op outputs must be fresh tensors


@framefusion_merge.register_fake
def _merge_shapes(visual, patch_ids, remove, patches_per_frame, max_run):
    rows = visual.shape[0] - remove
    return visual.new_empty((rows,), dtype=torch.int64), visual.new_empty((rows, visual.shape[1]))


@torch.library.custom_op("ffexport::framefusion_prune", mutates_args=())
def framefusion_prune(importance: torch.Tensor, keep: int) -> torch.Tensor:
    """A static prune step (the FrameFusionPrune plugin): ``kept [keep]``."""
    return _STANDARD.prune(importance, keep).clone()


@framefusion_prune.register_fake
def _prune_shapes(importance, keep):
    return importance.new_empty((keep,), dtype=torch.int64)


class PluginSteps:
    """Static steps as plugin nodes (``StaticReducer(schedule, steps=PluginSteps())``)."""

    def merge(self, visual: torch.Tensor, patch_ids: torch.Tensor, remove: int, patches_per_frame: int,
              max_run: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.ops.ffexport.framefusion_merge(visual, patch_ids, remove, patches_per_frame, max_run)

    def prune(self, importance: torch.Tensor, keep: int) -> torch.Tensor:
        if keep == 0:  # the interface needs K >= 1; pruning every visual token needs no node
            return torch.zeros(0, dtype=torch.int64, device=importance.device)
        return torch.ops.ffexport.framefusion_prune(importance.to(torch.float32), keep)


# ---------------------------------------------------------------- ONNX translation
def _schema(name: str, inputs, outputs, ints: tuple[str, ...]) -> onnx.defs.OpSchema:
    """An OpSchema for onnxscript to build the node with (never registered with onnx: the checker
    and ONNX Runtime see an ordinary custom-domain node)."""
    S = onnx.defs.OpSchema
    attributes = [S.Attribute(a, S.AttrType.INT, "") for a in ints]
    attributes += [S.Attribute(a, S.AttrType.STRING, "") for a in ("plugin_version", "plugin_namespace")]
    return S(name, ONNX_DOMAIN, 1,
             inputs=[S.FormalParameter(n, t) for n, t in inputs],
             outputs=[S.FormalParameter(n, t) for n, t in outputs],
             type_constraints=[("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], "")],
             attributes=attributes)


_CONTRIB = Opset(ONNX_DOMAIN, 1)
_MERGE_OP = Op(_CONTRIB, MERGE, _schema(MERGE, [("visual", "T"), ("patch_ids", "tensor(int64)")],
                                        [("kept", "tensor(int64)"), ("values", "T")],
                                        ("remove", "patches_per_frame", "max_run")))
_PRUNE_OP = Op(_CONTRIB, PRUNE, _schema(PRUNE, [("importance", "tensor(float)")], [("kept", "tensor(int64)")],
                                        ("keep",)))


def _merge_node(visual, patch_ids, remove: int, patches_per_frame: int, max_run: int):
    return _MERGE_OP(visual, patch_ids, remove=remove, patches_per_frame=patches_per_frame, max_run=max_run,
                     plugin_version=PLUGIN_VERSION, plugin_namespace=PLUGIN_NAMESPACE, _num_outputs=2)


def _prune_node(importance, keep: int):
    return _PRUNE_OP(importance, keep=keep, plugin_version=PLUGIN_VERSION, plugin_namespace=PLUGIN_NAMESPACE)


#: ``torch.onnx.export(..., custom_translation_table=TRANSLATIONS)``
TRANSLATIONS = {
    torch.ops.ffexport.framefusion_merge.default: _merge_node,
    torch.ops.ffexport.framefusion_prune.default: _prune_node,
}
