"""Top-k selection exported to ONNX picks the same tokens in ONNX Runtime as in PyTorch, on the
inputs that break naive formulations: exact ties (static content) and near-ties at the cut."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

from ffexport.fusion import ops


class Select(torch.nn.Module):
    def __init__(self, count: int, relative: bool) -> None:
        super().__init__()
        self.count, self.relative = count, relative

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return ops.top_flags(scores, self.count, relative=self.relative)


def _keys(kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if kind == "exact ties":  # identical frames: every chained key is exactly 0
        return torch.cat([torch.full((64,), -8.0), torch.zeros(960)])
    if kind == "near ties":  # keys spaced by a fraction of the tie window around the cut
        return -6e-6 + 1e-10 * torch.randint(-30, 30, (1024,), generator=g).to(torch.float32)
    return torch.rand(1024, generator=g) * 1e-3  # importances


@pytest.mark.parametrize("kind, relative", [("exact ties", False), ("near ties", False), ("importances", True)])
def test_selection_is_the_same_in_onnx_runtime(tmp_path, kind, relative):
    scores = _keys(kind)
    module = Select(716, relative)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (scores,), dynamo=True, opset_version=18, verbose=False)
    path = tmp_path / "select.onnx"
    program.save(str(path))
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"scores": scores.numpy()})[0]
    expected = module(scores).numpy()
    assert expected.sum() == 716
    np.testing.assert_array_equal(got, expected)
