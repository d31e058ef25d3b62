"""``ffexport check``: NVIDIA's parser per graph, one line each; exit codes; external weights; profiles;
and the fallback to the hand rules when no TensorRT module is installed."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import onnx
import pytest
from lint_graphs import F, model, save, scatter_elements, single, topk, vi
from onnx import TensorProto, helper, numpy_helper

from ffexport.cli import main
from ffexport.export import trt_toolkit
from ffexport.export.trt_toolkit import (
    DEFAULT_DYNAMIC_DIMS,
    KNOWN_COMPUTE_CAPABILITIES,
    DimRange,
    EngineProfiles,
    parse_compute_capabilities,
    profile_shapes,
)
from ffexport.lint.check import graphs_to_check

I64 = TensorProto.INT64


def relu(path):
    return save(single("Relu", [vi("x", F, [1, "L"])], [vi("y", F, [1, "L"])], name="act"), path)


def with_external_weights(folder):
    """y = x @ W with W (64 x 64 floats) in weights.bin beside the graph."""
    w = numpy_helper.from_array(np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 4096, "W")
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    m = model([node], [vi("x", F, [2, 64])], [vi("y", F, [2, 64])], [w])
    folder.mkdir()
    onnx.save(m, str(folder / "g.onnx"), save_as_external_data=True, location="weights.bin", size_threshold=0)
    assert (folder / "weights.bin").stat().st_size == 64 * 64 * 4
    return folder / "g.onnx"


# ---------------------------------------------------------------- with the real parser
def test_a_graph_that_parses(tensorrt_rtx, tmp_path, capsys):
    path = relu(tmp_path / "ok.onnx")
    assert main(["check", path]) == 0
    assert capsys.readouterr().out.splitlines() == [f"check: TensorRT-RTX {tensorrt_rtx.version} (tensorrt_rtx)",
                                                    f"{path}: parsed"]


def test_a_rejected_node_is_one_line_naming_node_and_reason(tensorrt_rtx, tmp_path, capsys):
    node = helper.make_node("ScatterElements", ["data", "idx", "upd"], ["out"], name="node_scatter_1", axis=0)
    path = save(model([node], [vi("data", F, [24]), vi("idx", I64, [64]), vi("upd", F, [64])], [vi("out", F, [24])]),
                tmp_path / "bad.onnx")
    ok = relu(tmp_path / "ok.onnx")
    assert main(["check", path, ok]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1] == (f"{path}: rejected at node node_scatter_1 (ScatterElements): Assertion failed: indicesDims.d[i] <= "
                      "dataDims.d[i]: Indices dimensions must be less than data dimensions! indices dimension = 64, "
                      "data dimension = 24 on index 0.")
    assert out[2] == f"{ok}: parsed"
    assert out[3] == f"check (TensorRT-RTX {tensorrt_rtx.version}): 2 graphs: 1 parsed, 1 rejected"


def test_a_node_the_parser_does_not_name_is_found_by_its_importer(tensorrt_rtx, tmp_path, capsys):
    """TensorRT's ScatterElements importer reports "Unsupported reduction type" without a node."""
    path = save(scatter_elements("add", name="node_scatter_add"), tmp_path / "se.onnx")
    assert main(["check", path]) == 1
    assert capsys.readouterr().out.splitlines()[1] == (
        f"{path}: rejected at node node_scatter_add (ScatterElements): Unsupported reduction type")


def test_build_for_builds_and_a_builder_failure_is_one_line(tensorrt_rtx, tmp_path, capsys):
    ok, big = relu(tmp_path / "ok.onnx"), save(topk(8192), tmp_path / "topk.onnx")
    assert main(["check", ok, big, "--build-for", "sm89,SM120"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("building for SM89,SM120")
    assert out[1].startswith(f"{ok}: built for SM89,SM120 (") and out[1].endswith(" s)")
    assert out[2].startswith(f"{big}: parsed; build for SM89,SM120 failed: ")
    assert "K exceeds the maximum value allowed (3840)" in out[2]


def test_external_weights_are_read_beside_the_graph_from_any_directory(tensorrt_rtx, tmp_path, capsys,
                                                                       monkeypatch):
    path = with_external_weights(tmp_path / "build")
    monkeypatch.chdir(tmp_path)  # not the graph's folder
    assert main(["check", str(path), "--build-for", "SM89"]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert line.startswith(f"{path}: built for SM89 (")
    engine_bytes = int(line.split("(")[1].split(" bytes")[0])
    assert engine_bytes > 64 * 64 * 4  # the weights are in the engine: they were read


def test_missing_external_weights_are_one_line_exit_2(tmp_path, error_line):
    path = with_external_weights(tmp_path / "build")
    (tmp_path / "build" / "weights.bin").unlink()
    assert main(["check", str(path)]) == 2
    assert error_line() == (f"error: input: {path}: its weights file {tmp_path / 'build' / 'weights.bin'} is missing "
                            "(initializer 'W')")


# ---------------------------------------------------------------- bad input (any machine)
def test_a_corrupt_onnx_file_is_one_line_exit_2(tmp_path, error_line):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage" * 10)
    assert main(["check", str(bad)]) == 2
    assert error_line().startswith(f"error: input: {bad}: not a readable ONNX model")


def test_an_unknown_compute_capability_lists_the_valid_ones(tmp_path, error_line):
    assert main(["check", relu(tmp_path / "ok.onnx"), "--build-for", "SM89,SM90"]) == 2
    line = error_line()
    assert "compute capability 'SM90' is not one TensorRT-RTX builds for" in line
    assert line.endswith("choose from SM75, SM80, SM86, SM89, SM120, SM121 (comma-separated)")


def test_the_known_compute_capabilities_are_tensorrt_rtx_s(tensorrt_rtx):
    assert tensorrt_rtx.compute_capabilities() == KNOWN_COMPUTE_CAPABILITIES
    assert parse_compute_capabilities("sm89, SM120,SM89", tensorrt_rtx) == ("SM89", "SM120")


# ---------------------------------------------------------------- without a parser
def test_without_a_parser_one_line_then_the_hand_rules(tmp_path, capsys, monkeypatch):
    for name in trt_toolkit.PARSER_MODULES:  # a None entry makes `import name` raise ImportError
        monkeypatch.setitem(sys.modules, name, None)
    node = helper.make_node("ScatterElements", ["data", "idx", "upd"], ["out"], name="node_scatter_1", axis=0)
    path = save(model([node], [vi("data", F, [24]), vi("idx", I64, [64]), vi("upd", F, [64])], [vi("out", F, [24])]),
                tmp_path / "bad.onnx")
    assert main(["check", path, "--build-for", "SM89"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("check: TensorRT's ONNX parser is not installed here (pip install 'ffexport[tensorrt-rtx]'")
    assert out[0].endswith("falling back to the hand rules of ffexport lint (--target trt11); no engine was built")
    assert out[1] == f"{path}: 1 finding (trt11)"
    assert "TRT013" in out[3] and "node_scatter_1" in out[3]
    clean = relu(tmp_path / "ok.onnx")
    assert main(["check", clean]) == 0
    assert capsys.readouterr().out.splitlines()[1] == f"{clean}: no findings (trt11)"


# ---------------------------------------------------------------- profiles
def test_profile_ranges_of_a_build():
    profiles = EngineProfiles(visual_tokens=(64, 256), max_text=256)
    assert profiles.prefill(64) == DimRange(65, 128, 320)
    assert profiles.embed() == DimRange(1, 128, 512) and profiles.decode() == DimRange(1, 128, 1024)
    assert profiles.for_graph("vision") is None


def test_profile_shapes_cover_dynamic_dims_only():
    from ffexport.export.trt_toolkit import NetworkInput

    inputs = [NetworkInput("inputs_embeds", (1, -1, 64)), NetworkInput("video_start", ()),
              NetworkInput("k", (1,), is_shape_tensor=True)]
    shapes = profile_shapes(inputs, DimRange(65, 128, 320))
    assert [(s.name, s.min, s.opt, s.max) for s in shapes] == [
        ("inputs_embeds", (1, 65, 64), (1, 128, 64), (1, 320, 64)), ("k", (65,), (128,), (320,))]


def test_a_graph_outside_a_build_gets_the_documented_default(tmp_path):
    path = relu(tmp_path / "ok.onnx")
    assert graphs_to_check([path]) == [(tmp_path / "ok.onnx", DimRange(*DEFAULT_DYNAMIC_DIMS))]


def test_a_graph_inside_a_build_gets_its_manifest_range(tmp_path):
    relu(tmp_path / "8x112x112.prefill.onnx")
    relu(tmp_path / "decode.onnx")
    manifest = {"max_text": 100, "graphs": {"decode": {"file": "decode.onnx"}},
                "buckets": [{"visual_tokens": 64, "graphs": {"prefill": {"file": "8x112x112.prefill.onnx"}}}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert dict(graphs_to_check([str(tmp_path)])) == {tmp_path / "decode.onnx": DimRange(1, 128, 676),
                                                      tmp_path / "8x112x112.prefill.onnx": DimRange(65, 128, 164)}
    assert graphs_to_check([os.path.join(tmp_path, "8x112x112.prefill.onnx")])[0][1] == DimRange(65, 128, 164)


# ---------------------------------------------------------------- plugin-mode graphs
def prune_node_graph(path, **attrs):
    node = helper.make_node("FrameFusionPrune", ["imp"], ["kept"], name="prune0", domain="ai.onnx.contrib", **attrs)
    m = model([node], [vi("imp", F, [16])], [vi("kept", I64, [4])], extra_opsets=[("ai.onnx.contrib", 1)])
    return save(m, path)


def test_plugin_nodes_are_left_to_the_hand_rules_under_tensorrt_rtx(tensorrt_rtx, tmp_path, capsys):
    """TensorRT-RTX has no plugin layers (its parser aborts the process after creating a plugin), so a
    plugin-mode graph is not handed to it: the hand rules check it, and say why."""
    good = prune_node_graph(tmp_path / "good.onnx", keep=4, plugin_version="1", plugin_namespace="ffexport")
    assert main(["check", good, "--build-for", "SM89"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        f"{good}: not parsed: TensorRT-RTX builds no plugin layers (its network has no addPluginV3; its parser aborts "
        "the process after creating one), so its FrameFusionPrune nodes were checked by the hand rules: no findings")
    bad = prune_node_graph(tmp_path / "bad.onnx", plugin_version="1", plugin_namespace="ffexport")  # no keep
    assert main(["check", bad]) == 1
    line = capsys.readouterr().out.splitlines()[1]
    assert line.endswith("hand rules: TRT010 at node prune0: FrameFusionPrune node 'prune0': the libffexport_plugins.so "
                         "plugin needs the int attribute(s) keep")


def test_tensorrt_rtx_has_no_plugin_layers(tensorrt_rtx):
    """What docs/tensorrt.md says blocks plugin mode under TensorRT-RTX: its network API adds no plugin layer."""
    network_api = dir(tensorrt_rtx.module.INetworkDefinition)
    assert not [name for name in network_api if "plugin" in name.lower()]
    assert "add_topk" in network_api  # the check looks at the right class


def test_build_with_tensorrt_rtx_refuses_plugin_mode(tensorrt_rtx, tmp_path, error_line):
    out = tmp_path / "b"
    assert main(["build", "--backend", "tensorrt-rtx", "--compute-capability", "SM89", "--ops", "plugin", "--out",
                 str(out)]) == 2
    assert error_line().startswith("error: input: --backend tensorrt-rtx builds no plugin layers")
    assert not out.exists()
