"""The 7B architecture at a real bucket (64 frames at 448x448: 8192 visual tokens, far past TopK's
K < 3840) captures without weights, lints clean for TensorRT 10 and 11, and NVIDIA's own parser
(TensorRT-RTX) takes every graph (about 1 s and 150 MB for the four; the capture takes minutes) and builds
the prefill for SM89."""

from __future__ import annotations

import pytest

from ffexport.cli import main
from ffexport.lint import lint_model


@pytest.fixture(scope="module")
def graphs_7b(tmp_path_factory):
    out = tmp_path_factory.mktemp("g7b") / "b"
    assert main(["-q", "build", "--graph-only", "--model", "qwen2vl-7b", "--precision", "fp16",
                 "--bucket", "64x448x448", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("target", ["trt10", "trt11"])
def test_7b_64x448x448_lints_clean(graphs_7b, target):
    files = sorted(graphs_7b.glob("*.onnx"))
    assert {f.name for f in files} == {"embed.onnx", "decode.onnx", "64x448x448.vision.onnx", "64x448x448.prefill.onnx"}
    findings = {f.name: [str(x) for x in lint_model(f, target=target)] for f in files}
    assert findings == {f.name: [] for f in files}


def test_lint_command_on_the_build_directory(graphs_7b, capsys):
    assert main(["lint", str(graphs_7b), "--target", "trt11"]) == 0
    assert "no findings" in capsys.readouterr().out


def test_7b_64x448x448_every_graph_parses_with_tensorrt_rtx(graphs_7b, tensorrt_rtx):
    from ffexport.lint.check import CheckGraph, graphs_to_check

    check = CheckGraph(toolkit=tensorrt_rtx)
    lines = [check(path, dims).line() for path, dims in graphs_to_check([str(graphs_7b)])]
    assert len(lines) == 4 and all(line.endswith(": parsed") for line in lines), "\n".join(lines)


def test_7b_64x448x448_prefill_builds_for_sm89(graphs_7b, tensorrt_rtx):
    """The product graph at 8192 visual tokens through TensorRT-RTX's builder (weights are graph inputs in a
    graph-only build; about 30 s and 0.8 GB)."""
    from ffexport.lint.check import CheckGraph, graphs_to_check

    path, dims = next((p, d) for p, d in graphs_to_check([str(graphs_7b)]) if p.name == "64x448x448.prefill.onnx")
    line = CheckGraph(toolkit=tensorrt_rtx, build_for=("SM89",))(path, dims).line()
    assert ": built for SM89 (" in line, line
