"""``ffexport lint``: the table, exit codes (0 clean, 1 findings, 2 unreadable input), build directories."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
from lint_graphs import F, cumsum, save, scatter_nd, single, topk, vi

from ffexport.errors import FFExportError
from ffexport.lint.cli import add_lint_parser


def run_lint(argv: list[str]) -> int:
    """What ``ffexport lint ...`` does once ``add_lint_parser`` is wired into ``ffexport/cli.py``: the same
    parser and the same ``error: ...`` / exit-code handling as ``ffexport.cli.main``."""
    parser = argparse.ArgumentParser(prog="ffexport")
    add_lint_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["lint", *argv])
    try:
        return args.func(args)
    except FFExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


@pytest.fixture
def clean(tmp_path):
    return save(single("Relu", [vi("x", F, [4])], [vi("y", F, [4])], name="relu"), tmp_path / "clean.onnx")


@pytest.fixture
def dirty(tmp_path):
    return save(topk(8192), tmp_path / "dirty.onnx")


def test_clean_graph(clean, capsys):
    assert run_lint([clean]) == 0
    assert capsys.readouterr().out == f"{clean}: no findings (trt11)\n"
    assert run_lint([clean, "--target", "trt10"]) == 0
    assert capsys.readouterr().out == f"{clean}: no findings (trt10)\n"


def test_findings_table(dirty, capsys):
    assert run_lint([dirty, "--target", "trt10"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{dirty}: 1 finding (trt10)"
    assert out[1].split() == ["rule", "severity", "node", "message"]
    assert out[2].split()[:4] == ["TRT001", "error", "node_TopK_12", "(TopK)"]
    assert out[2].rstrip().endswith("K = 8192 >= 3840 (TensorRT TopK limit); K is the whole axis: a full sort "
                                    "(argsort)")
    assert len(out) == 3


def test_several_graphs_and_a_summary(tmp_path, clean, dirty, capsys):
    both = save(scatter_nd("add"), tmp_path / "scatter.onnx")
    cs = save(cumsum(axis_as="input"), tmp_path / "cumsum.onnx")
    assert run_lint([clean, dirty, both, cs]) == 1
    out = capsys.readouterr().out
    assert f"{clean}: no findings (trt11)" in out
    assert f"{both}: 1 finding (trt11)" in out and "TRT002" in out
    assert f"{cs}: 1 finding (trt11)" in out and "TRT005" in out
    assert out.rstrip().splitlines()[-1] == "lint (trt11): 3 findings in 3 of 4 graphs"


@pytest.mark.parametrize("content", [b"", b"this is not protobuf \xff\xfe" * 10])
def test_unreadable_file_is_an_input_error(tmp_path, content, clean, error_line):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    assert run_lint([clean, str(bad)]) == 2
    line = error_line()  # one line, nothing on stdout: no graph is linted when one input is unreadable
    assert line.startswith(f"error: input: {bad}: not a readable ONNX model")


def test_missing_file(tmp_path, error_line):
    assert run_lint([str(tmp_path / "nope.onnx")]) == 2
    assert error_line() == f"error: input: {tmp_path / 'nope.onnx'}: no such file"


def test_directory_without_manifest(tmp_path, error_line):
    assert run_lint([str(tmp_path)]) == 2
    assert "a directory without manifest.json is not an ffexport build" in error_line()


def _write_build(directory, graphs: dict, buckets: list):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "manifest.json").write_text(json.dumps({"format": "ffexport.manifest/1", "graphs": graphs,
                                                         "buckets": buckets}))
    return directory


def test_build_directory_lints_every_manifest_graph(tmp_path, capsys):
    build = tmp_path / "build"
    build.mkdir()
    save(single("Relu", [vi("x", F, [4])], [vi("y", F, [4])], name="relu"), build / "embed.onnx")
    save(topk(8192), build / "8x112x112.prefill.onnx")
    save(single("Relu", [vi("x", F, [4])], [vi("y", F, [4])], name="relu"), build / "8x112x112.vision.onnx")
    _write_build(build, {"embed": {"file": "embed.onnx"}},
                 [{"name": "8x112x112", "graphs": {"vision": {"file": "8x112x112.vision.onnx"},
                                                   "prefill": {"file": "8x112x112.prefill.onnx"}}},
                  {"name": "again", "graphs": {"vision": {"file": "8x112x112.vision.onnx"}}}])  # listed twice
    assert run_lint([str(build)]) == 1
    out = capsys.readouterr().out
    labels = [line.split(":")[0] for line in out.splitlines() if line.startswith(str(build))]
    assert labels == [str(build / "embed.onnx"), str(build / "8x112x112.vision.onnx"),
                      str(build / "8x112x112.prefill.onnx")]
    assert out.rstrip().splitlines()[-1] == "lint (trt11): 1 finding in 1 of 3 graphs"


def test_build_directory_with_a_missing_graph(tmp_path, error_line):
    build = _write_build(tmp_path / "b", {"embed": {"file": "embed.onnx"}}, [])
    assert run_lint([str(build)]) == 2
    assert error_line() == f"error: input: {build / 'embed.onnx'}: no such file"


@pytest.mark.parametrize("manifest", ["{not json", json.dumps({"graphs": {"embed": {}}}), json.dumps({"graphs": {}})])
def test_build_directory_with_a_bad_manifest(tmp_path, manifest, error_line):
    build = tmp_path / "b"
    build.mkdir()
    (build / "manifest.json").write_text(manifest)
    assert run_lint([str(build)]) == 2
    assert str(build / "manifest.json") in error_line()


def test_bad_target_is_an_argparse_error(clean, capsys):
    with pytest.raises(SystemExit) as e:
        run_lint([clean, "--target", "trt9"])
    assert e.value.code == 2
    assert "invalid choice: 'trt9'" in capsys.readouterr().err


def test_through_the_main_cli(dirty, clean, tmp_path, capsys):
    """Once ``add_lint_parser`` is wired into ``ffexport/cli.py``, ``ffexport lint`` behaves the same."""
    from ffexport.cli import build_parser, main

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    if "lint" not in sub.choices:
        pytest.skip("ffexport/cli.py does not call ffexport.lint.cli.add_lint_parser yet")
    assert main(["lint", clean]) == 0
    assert main(["lint", dirty]) == 1
    assert main(["lint", str(tmp_path / "nope.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: input: {tmp_path / 'nope.onnx'}: no such file"


def test_lint_is_torch_free(dirty):
    """Importing and running the linter loads neither torch nor transformers."""
    code = (
        "import sys, argparse\n"
        "import ffexport.lint, ffexport.lint.cli\n"
        f"rc = ffexport.lint.cli.lint_command(argparse.Namespace(graphs=[{dirty!r}], target='trt11'))\n"
        "assert rc == 1, rc\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "HEAVY=\n" in done.stdout
