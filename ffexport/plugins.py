"""The FrameFusion plugin interface: one graph node per static merge / prune step.

Plugin-mode graphs (``ffexport build --ops plugin``) carry each step of the schedule as ONE node
instead of the standard-op subgraph of :mod:`ffexport.fusion.ops`. The nodes follow the contract
below, which three implementations share: the export-time torch custom ops
(:mod:`ffexport.export.plugin_ops`), the numpy kernels ONNX Runtime runs through
onnxruntime-extensions (:mod:`ffexport.runtime.plugins`), and the TensorRT plugins of
``libffexport_plugins.so`` (``plugins/``).

``FrameFusionMerge`` (a static merge step)
    inputs: ``visual`` [n, D] float32|float16|bfloat16 (the visual tokens' rows only, in sequence
    order: with frame blocks the text between blocks is not passed), ``patch_ids`` [n] int64 in
    [0, P) (a token's offset in its frame block modulo P). ints: ``remove`` M (1 <= M < n), ``patches_per_frame`` P,
    ``max_run`` (frames: bounds a patch chain's length). outputs: ``kept`` [n - M] int64 (surviving
    span positions, ascending), ``values`` [n - M, D] (their run averages, the input dtype).
``FrameFusionPrune`` (a static prune step)
    input: ``importance`` [n] float32. int: ``keep`` K (1 <= K < n). output: ``kept`` [K] int64.

In ONNX a node has ``op_type`` = the plugin name, domain ``ai.onnx.contrib`` (onnxruntime-extensions
runs Python custom ops in that domain only; TensorRT's parser ignores the domain) and the string
attributes ``plugin_version`` and ``plugin_namespace`` besides its int attributes.

This module imports nothing beyond the standard library (the linter and the runtime use it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: the ONNX domain of the plugin nodes (required by onnxruntime-extensions' PyOp)
ONNX_DOMAIN = "ai.onnx.contrib"
PLUGIN_NAMESPACE = "ffexport"
PLUGIN_VERSION = "1"
#: what the top-level CMake builds (build/libffexport_plugins.so); TensorRT loads it with --plugins
PLUGIN_LIBRARY = "libffexport_plugins.so"

MERGE = "FrameFusionMerge"
PRUNE = "FrameFusionPrune"

#: ``ffexport build --ops``: how a prefill graph computes FrameFusion's steps
OPS_MODES = ("standard", "plugin")


@dataclass(frozen=True)
class PluginOp:
    """One plugin of the interface: its name and the int attributes a node must carry."""

    name: str
    int_attributes: tuple[str, ...]
    version: str = PLUGIN_VERSION
    namespace: str = PLUGIN_NAMESPACE

    def record(self) -> dict[str, str]:
        """How the manifest lists it."""
        return {"name": self.name, "version": self.version, "namespace": self.namespace}


PLUGINS = {
    MERGE: PluginOp(MERGE, ("remove", "patches_per_frame", "max_run")),
    PRUNE: PluginOp(PRUNE, ("keep",)),
}


def _attribute(node: Any, name: str) -> Any:
    """An attribute of an ONNX NodeProto (ints and strings only), None when absent."""
    for a in node.attribute:
        if a.name == name:
            if a.s:
                return a.s.decode() if isinstance(a.s, bytes) else a.s
            return a.i
    return None


def plugin_of(node: Any) -> PluginOp | None:
    """The ffexport plugin an ONNX node stands for (op_type, plugin_namespace and plugin_version all
    match), else None. The domain is not looked at: TensorRT's parser ignores it too."""
    plugin = PLUGINS.get(node.op_type)
    if plugin is None:
        return None
    if _attribute(node, "plugin_namespace") != plugin.namespace or _attribute(node, "plugin_version") != plugin.version:
        return None
    return plugin


def plugins_in(nodes: Iterable[Any]) -> list[dict[str, str]]:
    """The distinct ffexport plugins among ``nodes`` (ONNX NodeProtos), in first-use order, as the
    manifest records them (``name``, ``version``, ``namespace``)."""
    seen: dict[str, dict[str, str]] = {}
    for node in nodes:
        plugin = plugin_of(node)
        if plugin is not None and plugin.name not in seen:
            seen[plugin.name] = plugin.record()
    return list(seen.values())


def plugins_in_file(path) -> list[dict[str, str]]:
    """:func:`plugins_in` for a saved ONNX graph (its external weights are not read; needs ``onnx``)."""
    import onnx

    return plugins_in(onnx.load(str(path), load_external_data=False).graph.node)
