"""NVIDIA's own parser and builder on every graph ffexport writes: a default build (tiny model, bucket
8x112x112) in fp32 and fp16, each graph parsed by TensorRT-RTX and built ahead of time for SM89 with the
profile its manifest implies. A rejected graph fails with the parser's own message and the node's name.
(The 7B graphs at 64x448x448 are parsed in ``test_lint_real_sizes.py``.)"""

from __future__ import annotations

import json

import pytest

from ffexport.lint.check import BUILT, CheckGraph, graphs_to_check

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_every_graph_of_a_default_build_parses_and_builds_for_sm89(default_build, tensorrt_rtx, precision):
    build = default_build(precision)
    targets = graphs_to_check([str(build)])
    manifest = json.loads((build / "manifest.json").read_text())
    listed = {g["file"] for g in manifest["graphs"].values()} | {
        g["file"] for b in manifest["buckets"] for g in b["graphs"].values()}
    assert {p.name for p, _ in targets} == listed and len(listed) == 5  # with the bucket's static decode
    check = CheckGraph(toolkit=tensorrt_rtx, build_for=("SM89",))
    lines = [check(path, dims).line() for path, dims in targets]
    assert all(": built for SM89 (" in line for line in lines), "\n".join(lines)


def test_the_profile_of_each_graph_comes_from_the_manifest(default_build):
    build = default_build("fp32")
    ranges = {p.name: d for p, d in graphs_to_check([str(build)])}
    manifest = json.loads((build / "manifest.json").read_text())
    n, max_text = manifest["buckets"][0]["visual_tokens"], manifest["max_text"]
    assert (ranges["8x112x112.prefill.onnx"].min, ranges["8x112x112.prefill.onnx"].max) == (n + 1, n + max_text)
    assert ranges["embed.onnx"].max == n + max_text
    assert ranges["decode.onnx"].max == n + max_text + 512


def test_the_check_command_on_a_default_build(default_build, tensorrt_rtx, capsys):
    from ffexport.cli import main

    build = default_build("fp16")
    assert main(["check", str(build), "--build-for", "SM89,SM120"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"check: TensorRT-RTX {tensorrt_rtx.version} (tensorrt_rtx), building for SM89,SM120"
    assert len([line for line in out if ": built for SM89,SM120 (" in line]) == 5
    assert out[-1] == f"check (TensorRT-RTX {tensorrt_rtx.version}): 5 graphs: 5 built"


def test_check_result_statuses_are_what_the_lines_say(default_build, tensorrt_rtx):
    build = default_build("fp32")
    path, dims = next((p, d) for p, d in graphs_to_check([str(build)]) if p.name == "embed.onnx")
    parsed = CheckGraph(toolkit=tensorrt_rtx)(path, dims)
    assert parsed.ok and parsed.line() == f"{path}: parsed"
    built = CheckGraph(toolkit=tensorrt_rtx, build_for=("SM89",))(path, dims)
    assert built.status == BUILT and built.engine_bytes > 0
