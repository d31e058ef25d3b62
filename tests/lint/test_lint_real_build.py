"""The linter on a real ``ffexport build`` (tiny model, bucket 8x112x112): every graph lints clean for
both targets; the record test prints what it finds per graph, rule and node. NVIDIA's own parser reads
the same build in ``test_check_real_build.py``."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from ffexport.lint import lint_model
from ffexport.lint.cli import graphs_of_build

pytestmark = pytest.mark.slow
BUCKET = "8x112x112"


@pytest.fixture(scope="module")
def real_build(default_build) -> Path:
    return default_build("fp32")


@pytest.fixture(scope="module")
def findings(real_build) -> dict[str, dict[str, list]]:
    """{graph file: {target: findings}} for every graph the manifest lists."""
    return {p.name: {t: lint_model(p, target=t) for t in ("trt10", "trt11")} for p in graphs_of_build(real_build)}


def test_every_manifest_graph_is_linted(real_build, findings):
    manifest = json.loads((real_build / "manifest.json").read_text())
    expected = {g["file"] for g in manifest["graphs"].values()}
    expected |= {g["file"] for b in manifest["buckets"] for g in b["graphs"].values()}
    assert set(findings) == expected
    assert {"embed.onnx", "decode.onnx", f"{BUCKET}.vision.onnx", f"{BUCKET}.prefill.onnx"} <= expected


def test_record_what_the_linter_reports_today(findings, record_property, capsys):
    """Not an assertion about cleanliness: prints and records the findings per graph, rule and node."""
    summary = {}
    for graph, by_target in findings.items():
        for target, found in by_target.items():
            summary[f"{graph} ({target})"] = {rule: [f.node for f in found if f.rule == rule]
                                              for rule in sorted(Counter(f.rule for f in found))}
            for f in found:
                assert f.rule.startswith("TRT")
                assert f.op_type in ("input", "initializer") or f.message.startswith(f"{f.op_type} node '{f.node}'")
    record_property("tensorrt_lint", json.dumps(summary))
    with capsys.disabled():
        print("\nffexport lint on a real build (bucket %s):" % BUCKET)
        for key, rules in summary.items():
            print(f"  {key}: " + ("; ".join(f"{r} x{len(n)}: {', '.join(n)}" for r, n in rules.items()) or "clean"))


def test_cli_on_the_build_directory(real_build, capsys):
    import argparse

    from ffexport.lint.cli import lint_command

    rc = lint_command(argparse.Namespace(graphs=[str(real_build)], target="trt11"))
    out = capsys.readouterr().out
    assert rc in (0, 1)
    for name in ("embed.onnx", "decode.onnx", f"{BUCKET}.vision.onnx", f"{BUCKET}.prefill.onnx"):
        assert str(real_build / name) in out


@pytest.mark.parametrize("target", ["trt10", "trt11"])
def test_real_build_is_clean(findings, target):
    dirty = {g: [str(f) for f in by_target[target]] for g, by_target in findings.items() if by_target[target]}
    assert dirty == {}
