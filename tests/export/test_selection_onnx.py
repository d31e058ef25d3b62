"""Top-k selection exported to ONNX picks the same tokens in ONNX Runtime as in PyTorch, on the
inputs that break naive formulations: exact ties (static content) and near-ties at the cut. The
bisection that finds the cut is one ONNX ``Loop`` (not 40 unrolled steps) that TensorRT-RTX parses
and builds."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ffexport.export.capture import CaptureOnnx, GraphSpec
from ffexport.export.trt_toolkit import BuildFailure, ParseOnnx, Rejection, SerializeEngine
from ffexport.fusion import ops


class Select(torch.nn.Module):
    def __init__(self, count: int, relative: bool) -> None:
        super().__init__()
        self.count, self.relative = count, relative

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return ops.top_flags(scores, self.count, relative=self.relative)


def _keys(kind: str, n: int = 1024) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if kind == "long":  # beyond TensorRT's TopK limit (K < 3840), with exact ties at the cut
        return torch.cat([torch.rand(n // 2, generator=g), torch.zeros(n - n // 2)])
    if kind == "exact ties":  # identical frames: every chained key is exactly 0
        return torch.cat([torch.full((64,), -8.0), torch.zeros(960)])
    if kind == "near ties":  # keys spaced by a fraction of the tie window around the cut
        return -6e-6 + 1e-10 * torch.randint(-30, 30, (1024,), generator=g).to(torch.float32)
    return torch.rand(1024, generator=g) * 1e-3  # importances


def _export(module: Select, scores: torch.Tensor, path):
    model = CaptureOnnx()(GraphSpec("select", module, (scores,), ["scores"], ["flags"]))
    onnx.save(model, str(path))
    return model


@pytest.mark.parametrize("kind, relative, count", [("exact ties", False, 716), ("near ties", False, 716),
                                                   ("importances", True, 716), ("long", False, 9000)])
def test_selection_is_the_same_in_onnx_runtime(tmp_path, kind, relative, count):
    scores = _keys(kind, 16384)
    module = Select(count, relative)
    path = tmp_path / "select.onnx"
    model = _export(module, scores, path)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"scores": scores.numpy()})[0]
    expected = module(scores).numpy()
    assert expected.sum() == count
    np.testing.assert_array_equal(got, expected)
    # the bisection is one Loop of ops._BISECT_STEPS iterations, not unrolled: a handful of nodes
    assert [n.op_type for n in model.graph.node].count("Loop") == 1
    assert len(model.graph.node) < 40


def test_selection_parses_and_builds_with_tensorrt_rtx(tmp_path, tensorrt_rtx):
    path = tmp_path / "select.onnx"
    _export(Select(716, True), _keys("importances"), path)
    parsed = ParseOnnx(toolkit=tensorrt_rtx)(path)
    assert not isinstance(parsed, Rejection), str(parsed)
    engine = SerializeEngine(compute_capabilities=("SM89",))(parsed, None)
    assert not isinstance(engine, BuildFailure), str(engine)
