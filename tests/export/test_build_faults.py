"""The build directory under faults (issue 12, items 10-12): overwrite, two writers, an interrupted
addition. The commit protocol is in ffexport/export/builddir.py and docs/build-format.md; the full
table of injected faults (real signals, real concurrent processes) is scripts/fault_table.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ffexport.export.build as build_module
from ffexport.cli import main
from ffexport.errors import InputError
from ffexport.runtime.manifest import load_manifest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from toy_build import write_toy_build  # noqa: E402

BUCKET = "8x112x112"
OTHER = "8x112x140"
ARGS = ["--max-text", "128"]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A real build, made with --overwrite over another, valid build (a hand-written one holding a
    ``parity/`` folder, as every real build does): item 10, at no extra cost."""
    out = tmp_path_factory.mktemp("faults") / "good"
    write_toy_build(out)
    (out / "parity").mkdir()
    (out / "parity" / "from-the-old-build.json").write_text("{}")
    code = main(["-q", "build", "--bucket", BUCKET, "--out", str(out), "--overwrite", *ARGS])
    assert code == 0, "--overwrite of a good build failed"
    return out


@pytest.fixture
def build(good, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(good, copy)
    return copy


def _siblings(out):
    return [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_a_second_build_into_a_locked_directory_is_refused_naming_the_holder(build, capsys, error_line,
                                                                            monkeypatch):
    import ffexport.cli as cli
    import ffexport.export.streamed as streamed

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded although another build holds --out")

    monkeypatch.setattr(cli, "load_model", no_load)  # refused before loading anything
    monkeypatch.setattr(streamed, "streamed_model", no_load)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         f"f = open({str(build / '.ffexport.lock')!r}, 'a+')\n"
         "fcntl.flock(f, fcntl.LOCK_EX); f.truncate(0); f.write(str(os.getpid())); f.flush()\n"
         "print('locked', flush=True); time.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = (build / "manifest.json").read_bytes(), (build / "weights.bin").read_bytes()
        code = main(["-q", "build", "--bucket", OTHER, "--out", str(build), *ARGS])
        line = error_line()
    finally:
        holder.kill()
        holder.wait()
    assert code == InputError.exit_code
    assert f"pid {holder.pid}" in line and "another ffexport build" in line
    assert ((build / "manifest.json").read_bytes(), (build / "weights.bin").read_bytes()) == before


def test_an_interrupted_overwrite_leaves_the_old_build_in_place(build, monkeypatch):
    before = (build / "manifest.json").read_bytes()
    monkeypatch.setenv("FFEXPORT_FAULT", "sigint@export vision graph")  # a real SIGINT, mid-build
    assert main(["-q", "build", "--bucket", BUCKET, "--out", str(build), "--overwrite", *ARGS]) == 130
    assert (build / "manifest.json").read_bytes() == before
    assert load_manifest(build, verify=True).buckets[0].name == BUCKET  # still a valid, complete build
    assert _siblings(build) == []  # the half-built replacement is gone


def test_overwrite_replaces_a_good_build(good):
    """It used to delete the build, then refuse the directory (``parity/`` survived the clearing)."""
    manifest = load_manifest(good, verify=True)
    assert manifest.model.name == "qwen2vl-tiny" and [b.name for b in manifest.buckets] == [BUCKET]
    assert not (good / "4x112x224.vision.onnx").exists()  # nothing of the old build is left
    assert not (good / "parity" / "from-the-old-build.json").exists()
    assert _siblings(good) == []


def test_an_interrupted_bucket_addition_leaves_the_committed_build_valid(build, monkeypatch):
    from ffexport.export.weights import SharedWeights

    before = (build / "manifest.json").read_bytes()
    committed = json.loads(before)["files"]["weights.bin"]["bytes"]
    real = build_module.Build._save_graph

    def save_then_interrupt(self, spec, filename, store):  # Ctrl-C once the new vision graph is stored
        if filename == f"{OTHER}.prefill.onnx":
            raise KeyboardInterrupt
        return real(self, spec, filename, store)

    monkeypatch.setattr(build_module.Build, "_save_graph", save_then_interrupt)
    assert main(["-q", "build", "--bucket", BUCKET, "--bucket", OTHER, "--out", str(build), *ARGS]) == 130
    assert (build / "manifest.json").read_bytes() == before
    assert (build / "weights.bin").stat().st_size > committed  # the new bucket's tensors: an uncommitted tail
    manifest = load_manifest(build, verify=True)  # the committed bucket still loads and verifies
    assert [b.name for b in manifest.buckets] == [BUCKET]
    SharedWeights(build, committed=committed)  # what the next build does first: drop the tail
    assert (build / "weights.bin").stat().st_size == committed
    load_manifest(build, verify=True)


def test_a_finished_onnx_build_is_not_finished_for_engines(good, tiny, tensorrt_rtx):
    """Re-running with --backend tensorrt-rtx on a finished ONNX build used to skip every bucket and
    build no engine (``_finished`` ignored engines)."""
    from ffexport.export.build import Build, BuildConfig

    manifest = json.loads((good / "manifest.json").read_text())
    onnx_only = Build(tiny, BuildConfig(buckets=(BUCKET,), out=good, max_text=128))
    assert onnx_only._finished(manifest, onnx_only.buckets[0])
    engines = Build(tiny, BuildConfig(buckets=(BUCKET,), out=good, max_text=128, backend="tensorrt-rtx",
                                      compute_capabilities=("SM89",)))
    assert not engines._finished(manifest, engines.buckets[0])


def test_a_graph_only_build_into_a_build_with_weights_is_refused(build, error_line):
    """Graph-only graphs take the weights as inputs: written into a build with weights they would
    mix two kinds of graph under one manifest. The model facts differ, so the build is refused."""
    before = {p.name: p.read_bytes() for p in build.iterdir() if p.is_file()}
    code = main(["-q", "build", "--graph-only", "--bucket", OTHER, "--out", str(build), *ARGS])
    line = error_line()
    assert code == InputError.exit_code
    assert "--overwrite" in line and str(build) in line
    assert {p.name: p.read_bytes() for p in build.iterdir() if p.is_file()} == before
