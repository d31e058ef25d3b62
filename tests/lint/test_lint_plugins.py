"""TRT010 and ffexport's own plugins: FrameFusionMerge / FrameFusionPrune nodes (op_type, plugin_namespace
"ffexport", plugin_version "1") are provided by libffexport_plugins.so; anything else stays a finding."""

from __future__ import annotations

import pytest
from lint_graphs import F, single, vi
from onnx import TensorProto

from ffexport.lint import lint_model

I64 = TensorProto.INT64
CONTRIB = [("ai.onnx.contrib", 1)]


def _merge(**attrs):
    return single("FrameFusionMerge", [vi("v", F, [8, 4]), vi("p", I64, [8])], [vi("k", I64, [5]), vi("x", F, [5, 4])],
                  name="merge", domain="ai.onnx.contrib", extra_opsets=CONTRIB, **attrs)


@pytest.mark.parametrize("target", ["trt10", "trt11"])
def test_ffexport_plugin_nodes_are_provided_by_the_plugin_library(target):
    merge = _merge(remove=3, patches_per_frame=2, max_run=4, plugin_version="1", plugin_namespace="ffexport")
    prune = single("FrameFusionPrune", [vi("i", F, [8])], [vi("k", I64, [5])], name="prune", domain="ai.onnx.contrib",
                   extra_opsets=CONTRIB, keep=5, plugin_version="1", plugin_namespace="ffexport")
    assert lint_model(merge, target=target) == []
    assert lint_model(prune, target=target) == []


def test_other_versions_namespaces_and_names_still_need_a_plugin():
    for attrs in ({"plugin_version": "2", "plugin_namespace": "ffexport"},
                  {"plugin_version": "1", "plugin_namespace": "other"}, {"plugin_version": "1"}):
        (f,) = lint_model(_merge(remove=3, patches_per_frame=2, max_run=4, **attrs))
        assert f.rule == "TRT010" and f.severity == "plugin" and "plugin named 'FrameFusionMerge'" in f.message
    other = single("FrameFusionSplit", [vi("x", F, [4])], [vi("y", F, [4])], domain="ai.onnx.contrib",
                   extra_opsets=CONTRIB, plugin_version="1", plugin_namespace="ffexport")
    assert [f.severity for f in lint_model(other)] == ["plugin"]


def test_ffexport_plugin_node_without_its_int_attributes_is_an_error():
    (f,) = lint_model(_merge(remove=3, plugin_version="1", plugin_namespace="ffexport"))
    assert f.rule == "TRT010" and f.severity == "error"
    assert "libffexport_plugins.so plugin needs the int attribute(s) patches_per_frame, max_run" in f.message
