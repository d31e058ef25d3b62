"""``ffexport build --ops standard|plugin``: which combinations can be built and verified, and what
a plugin-mode build changes (the prefill's step implementation, its capture, its manifest record).

Plugin mode exports every merge/prune step of a prefill graph as one node of the plugin interface
(:mod:`ffexport.plugins`); everything else in the graph stays standard ONNX. The parity gate runs
those graphs in ONNX Runtime with the numpy kernels of :mod:`ffexport.runtime.plugins`
(onnxruntime-extensions, float32 only); TensorRT runs them with ``libffexport_plugins.so``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ffexport.errors import InputError
from ffexport.plugins import OPS_MODES, PLUGIN_LIBRARY, plugins_in_file


def check_ops(*, ops: str, precision: str, backend: str, plugins: tuple[str, ...] = (),
              graph_only: bool = False) -> None:
    """Refuse (:class:`InputError`, one line) an ``--ops`` choice this build could not verify."""
    if ops not in OPS_MODES:
        raise InputError(f"--ops {ops}: use {' or '.join(OPS_MODES)}")
    if ops != "plugin":
        return
    if precision != "fp32" and backend == "onnxruntime" and not graph_only:
        raise InputError(
            f"--ops plugin --precision {precision} cannot be verified with ONNX Runtime: onnxruntime-extensions runs "
            f"the plugin nodes in float32 only; build it with --backend tensorrt --plugins {PLUGIN_LIBRARY} "
            "(TensorRT runs the gate), or use --precision fp32 or --ops standard")
    if backend == "tensorrt" and not plugins:
        raise InputError(
            f"--backend tensorrt --ops plugin needs the plugin library: add --plugins build/{PLUGIN_LIBRARY} "
            "(built by the top-level CMake, see docs/tensorrt.md)")


def prefill_steps(ops: str):
    """The ``steps`` a plugin-mode prefill uses (None: the standard ops) and the exporter's custom
    translation table for them (None when there is nothing to translate)."""
    if ops != "plugin":
        return None, None
    from ffexport.export.plugin_ops import TRANSLATIONS, PluginSteps

    return PluginSteps(), TRANSLATIONS


def plugin_record(path: Path) -> dict[str, Any]:
    """What the manifest adds to a graph's entry: ``{"plugins": [{"name", "version", "namespace"}, ...]}``
    when the saved graph holds plugin nodes, else nothing."""
    found = plugins_in_file(path)
    return {"plugins": found} if found else {}


def plugin_session(path: str | Path, options=None):
    """An ONNX Runtime CPU session for a graph with plugin nodes (the numpy kernels through
    onnxruntime-extensions).

    onnxruntime-extensions takes float32 only, so a plugin node fed float16/bfloat16 runs between
    Casts in the session's copy of the graph: float32 in, the float32 kernel, the input's type out.
    That is the plugin contract (all internal math in float32, values cast back), so the copy computes
    what TensorRT's plugin computes; the file on disk is not changed.
    """
    import onnx
    import onnxruntime as ort

    from ffexport.runtime.plugins import session_options

    path = Path(path)
    options = session_options(options)
    model = onnx.load(str(path), load_external_data=False)
    if not fp32_plugin_islands(model):
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(path.parent))
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def fp32_plugin_islands(model) -> int:
    """Wrap every plugin node whose float input is not float32 in Casts (in place); returns how many."""
    import onnx
    from onnx import TensorProto, helper

    from ffexport.plugins import plugin_of

    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info, *graph.output]}
    types.update({t.name: t.data_type for t in graph.initializer})
    nodes, wrapped = [], 0
    for node in graph.node:
        plugin = plugin_of(node)
        dtype = types.get(node.input[0]) if plugin is not None else None
        if dtype in (None, TensorProto.FLOAT):
            nodes.append(node)
            continue
        wrapped += 1
        wide = f"{node.input[0]}/fp32_{wrapped}"
        nodes.append(helper.make_node("Cast", [node.input[0]], [wide], to=TensorProto.FLOAT))
        node.input[0] = wide
        nodes.append(node)
        for i, out in enumerate(node.output):  # float outputs (a merge's values) go back to the input type
            if types.get(out) == dtype:
                node.output[i] = f"{out}/fp32_{wrapped}"
                nodes.append(helper.make_node("Cast", [node.output[i]], [out], to=dtype))
    if wrapped:
        del graph.node[:]
        graph.node.extend(nodes)
        onnx.checker.check_model(model)
    return wrapped
