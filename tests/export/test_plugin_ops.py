"""Plugin-mode prefill graphs (``--ops plugin``): one FrameFusionMerge / FrameFusionPrune node per
step, standard ONNX around them, equal to PyTorch in ONNX Runtime (numpy kernels through
onnxruntime-extensions); and the ``--ops`` choices the build refuses."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from ffexport.cli import main
from ffexport.errors import InputError
from ffexport.export.capture import CaptureOnnx, GraphSpec, check_graph
from ffexport.export.graphs import PrefillGraph, present_names
from ffexport.export.parity import OrtRunner
from ffexport.export.plugin_mode import check_ops, fp32_plugin_islands, plugin_session
from ffexport.export.plugin_ops import TRANSLATIONS, PluginSteps
from ffexport.fusion.decoder import ReducedDecoder
from ffexport.fusion.reducers import StandardSteps
from ffexport.fusion.schedule import Schedule, Stage
from ffexport.plugins import MERGE, ONNX_DOMAIN, PLUGIN_LIBRARY, PRUNE, plugin_of, plugins_in
from ffexport.reference import Reference
from ffexport.video import synthetic_video

#: cascaded merges (one that removes nothing: no node), then a prune; 8x112x112: N=64, P=16, 4 frames
SCHEDULE = Schedule(64, 16, (Stage(0, "before_attention", "merge", 20), Stage(0, "after_attention", "merge", 0),
                             Stage(1, "after_attention", "merge", 10), Stage(2, "after_attention", "prune", 8)))
VIDEOS = (("moving_object", 0), ("pan", 1), ("static", 2))
#: what the standard formulation needs and a plugin graph must not contain (patch order, bisection, compaction)
STANDARD_ONLY = {"CumSum", "ScatterElements", "ScatterND", "TopK"}


def _inputs(loaded, kind, seed):
    case = loaded.case_from_video(synthetic_video(kind, frames=8, height=112, width=112, seed=seed), "What is it?")
    p = Reference(loaded).prepare(case)
    return p.inputs_embeds, p.position_ids, p.video_start


def _capture(loaded, path, schedule=SCHEDULE):
    decoder = ReducedDecoder(loaded.adapter.decoder_parts(loaded.model))
    module = PrefillGraph(decoder, schedule, steps=PluginSteps()).eval()
    args = _inputs(loaded, *VIDEOS[0])
    length = torch.export.Dim("L", min=65, max=64 + 128)
    spec = GraphSpec("prefill", module, args, ["inputs_embeds", "position_ids", "video_start"],
                     ["logits", *present_names(loaded.num_layers)], ({1: length}, {1: length}, None), TRANSLATIONS)
    model = CaptureOnnx()(spec)
    onnx.save(model, str(path))
    check_graph(model, str(path))  # onnx.checker (full) and strict shape inference pass
    return module, decoder, model


@pytest.fixture(scope="module")
def plugin_graph(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("plugin") / "prefill.onnx"
    module, decoder, model = _capture(tiny, path)
    return path, module, decoder, model


def _node_graph(path, node, inputs, outputs):
    from onnx import helper

    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(*i) for i in inputs],
                              [helper.make_tensor_value_info(*o) for o in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(ONNX_DOMAIN, 1)])
    onnx.save(model, str(path))
    return plugin_session(path)


def test_plugin_nodes_in_onnx_runtime_compute_the_standard_steps(tmp_path):
    """What ONNX Runtime runs for a plugin node (the numpy kernels of ffexport/runtime/plugins.py through
    onnxruntime-extensions) against the standard torch formulation, on a merge with exact ties (a
    repeated frame) and on a prune; the plugins' eager torch path is not involved."""
    from onnx import TensorProto, helper

    f, i = TensorProto.FLOAT, TensorProto.INT64
    g = torch.Generator().manual_seed(0)
    p, frames, remove = 8, 5, 13
    visual = torch.randn(p * frames, 12, generator=g)
    visual[8:16] = visual[:8]  # a static frame: exact ties
    patch_ids = torch.arange(p * frames) % p
    node = helper.make_node(MERGE, ["visual", "patch_ids"], ["kept", "values"], domain=ONNX_DOMAIN, remove=remove,
                            patches_per_frame=p, max_run=frames, plugin_version="1", plugin_namespace="ffexport")
    session = _node_graph(tmp_path / "merge.onnx", node, [("visual", f, [40, 12]), ("patch_ids", i, [40])],
                          [("kept", i, [40 - remove]), ("values", f, [40 - remove, 12])])
    kept, values = session.run(None, {"visual": visual.numpy(), "patch_ids": patch_ids.numpy()})
    ref_kept, ref_values = StandardSteps().merge(visual, patch_ids, remove, p, frames)
    np.testing.assert_array_equal(kept, ref_kept.numpy())
    np.testing.assert_allclose(values, ref_values.numpy(), rtol=0, atol=1e-6)
    assert not np.array_equal(values, visual.numpy()[kept])  # the merge changed the survivors' values
    importance = torch.rand(27, generator=g)
    node = helper.make_node(PRUNE, ["importance"], ["kept"], domain=ONNX_DOMAIN, keep=11, plugin_version="1",
                            plugin_namespace="ffexport")
    session = _node_graph(tmp_path / "prune.onnx", node, [("importance", f, [27])], [("kept", i, [11])])
    (kept,) = session.run(None, {"importance": importance.numpy()})
    np.testing.assert_array_equal(kept, StandardSteps().prune(importance, 11).numpy())


@pytest.mark.slow
def test_one_plugin_node_per_step_and_no_standard_step_subgraph(plugin_graph):
    _, _, _, model = plugin_graph
    counts = Counter(n.op_type for n in model.graph.node)
    acting = [s for s in SCHEDULE.stages if s.remove > 0]
    assert counts[MERGE] == sum(s.op == "merge" for s in acting) == 2
    assert counts[PRUNE] == sum(s.op == "prune" for s in acting) == 1
    assert not STANDARD_ONLY & set(counts), counts
    nodes = [n for n in model.graph.node if n.op_type in (MERGE, PRUNE)]
    assert all(n.domain == ONNX_DOMAIN and plugin_of(n) is not None for n in nodes)
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in nodes]
    assert [a.get("remove") or a.get("keep") for a in attrs] == [20, 10, 64 - 30 - 8]
    assert attrs[0]["patches_per_frame"] == 16 and attrs[0]["max_run"] == 4 and attrs[0]["plugin_version"] == b"1"
    assert {o.domain: o.version for o in model.opset_import}[ONNX_DOMAIN] == 1
    assert plugins_in(model.graph.node) == [{"name": MERGE, "version": "1", "namespace": "ffexport"},
                                           {"name": PRUNE, "version": "1", "namespace": "ffexport"}]
    # the custom nodes' outputs carry static declared shapes (shape inference cannot infer them)
    declared = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}
    assert declared[nodes[0].output[0]] == [44] and declared[nodes[0].output[1]] == [44, 64]
    assert declared[nodes[1].output[0]] == [34] and declared[nodes[2].output[0]] == [26]


@pytest.mark.slow
def test_plugin_graph_in_onnx_runtime_equals_pytorch(plugin_graph, tiny):
    path, module, decoder, _ = plugin_graph
    runner = OrtRunner()
    for kind, seed in VIDEOS:
        args = _inputs(tiny, kind, seed)
        got = runner.run(path, {"inputs_embeds": args[0].numpy(), "position_ids": args[1].numpy(),
                                "video_start": args[2].numpy()})
        with torch.no_grad():
            standard = PrefillGraph(decoder, SCHEDULE)(*args)
        names = ["logits", *present_names(tiny.num_layers)]
        assert list(got) == names
        for name, s in zip(names, standard):  # ONNX Runtime's plugin kernels vs the standard-op module
            assert got[name].shape == tuple(s.shape), (kind, name)
            assert np.abs(got[name] - s.numpy()).max() <= 1e-4, (kind, name)
        # the lengths each layer saw: 20 removed before layer 0, 10 after layer 1, 8 after layer 2
        length = args[0].shape[1]
        assert [got[f"present.{i}.key"].shape[2] for i in range(4)] == [length - 20, length - 20, length - 30, length - 38]


def test_fp16_plugin_node_runs_between_casts(tmp_path):
    """A TensorRT build of an fp16 plugin graph still gets its ONNX Runtime gate: the session's copy runs
    the float32 kernel between Casts (the plugin contract: float32 math, values cast back to fp16)."""
    from onnx import TensorProto, helper

    p, frames, remove = 4, 5, 9
    node = helper.make_node(MERGE, ["visual", "patch_ids"], ["kept", "values"], domain=ONNX_DOMAIN, remove=remove,
                            patches_per_frame=p, max_run=frames, plugin_version="1", plugin_namespace="ffexport")
    h, i = TensorProto.FLOAT16, TensorProto.INT64
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("visual", h, [20, 8]),
                                            helper.make_tensor_value_info("patch_ids", i, [20])],
                              [helper.make_tensor_value_info("kept", i, [11]),
                               helper.make_tensor_value_info("values", h, [11, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(ONNX_DOMAIN, 1)])
    onnx.save(model, str(tmp_path / "half.onnx"))
    assert fp32_plugin_islands(onnx.load(str(tmp_path / "half.onnx"))) == 1
    visual = torch.randn(20, 8, generator=torch.Generator().manual_seed(1)).half()
    visual[4:8] = visual[:4]
    patch_ids = torch.arange(20) % p
    kept, values = plugin_session(tmp_path / "half.onnx").run(None, {"visual": visual.numpy(),
                                                                      "patch_ids": patch_ids.numpy()})
    ref_kept, ref_values = StandardSteps().merge(visual, patch_ids, remove, p, frames)
    assert values.dtype == np.float16
    np.testing.assert_array_equal(kept, ref_kept.numpy())
    np.testing.assert_array_equal(values, ref_values.numpy())  # float32 math either way, one rounding to fp16


# ---------------------------------------------------------------- what the build refuses
def test_ops_choices_the_build_refuses():
    check_ops(ops="plugin", precision="fp32", backend="onnxruntime")
    check_ops(ops="plugin", precision="fp16", backend="onnxruntime", graph_only=True)  # nothing runs
    check_ops(ops="plugin", precision="fp16", backend="tensorrt", plugins=("lib.so",))
    with pytest.raises(InputError, match="float32 only"):
        check_ops(ops="plugin", precision="fp16", backend="onnxruntime")
    with pytest.raises(InputError, match=PLUGIN_LIBRARY):
        check_ops(ops="plugin", precision="fp32", backend="tensorrt")
    with pytest.raises(InputError, match="standard or plugin"):
        check_ops(ops="plugins", precision="fp32", backend="onnxruntime")


@pytest.mark.parametrize("argv, words", [
    (["--precision", "fp16"], "--ops plugin --precision fp16 cannot be verified with ONNX Runtime"),
    (["--backend", "tensorrt"], "--backend tensorrt --ops plugin needs the plugin library: add --plugins"),
])
def test_refusals_are_one_line(tmp_path, error_line, argv, words):
    out = tmp_path / "b"
    assert main(["build", "--ops", "plugin", *argv, "--out", str(out)]) == InputError.exit_code
    assert words in error_line()
    assert not out.exists()  # refused before any work
