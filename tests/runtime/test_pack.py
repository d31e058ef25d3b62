"""``ffexport pack``: a deployment folder that runs exactly like the build, appears only when complete,
and never replaces what the user had without --overwrite. Faults are injected, not assumed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ffexport.cli import main
from ffexport.errors import InputError
from ffexport.export import pack as pack_module
from ffexport.export.builddir import DirectoryLock
from ffexport.runtime.manifest import load_manifest
from toy_build import DEFAULT_BUCKETS, toy_case


@pytest.fixture(scope="module")
def case_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("case") / "case.npz"
    toy_case(DEFAULT_BUCKETS[0], seed=5).save(path)
    return path


@pytest.fixture
def build(toy_build_dir, tmp_path):
    """A copy of the toy build this test may change."""
    return shutil.copytree(toy_build_dir, tmp_path / "build")


def _run(directory, case_file, out):
    assert main(["-q", "run", str(directory), "--inputs", str(case_file), "--max-new-tokens", "6", "--out",
                 str(out)]) == 0
    with np.load(out) as data:
        return {k: data[k] for k in data.files}


def _pack(build, out, *extra, env=None):
    return subprocess.run([sys.executable, "-m", "ffexport", "-q", "pack", str(build), "--out", str(out), *extra],
                          capture_output=True, text=True, env={**os.environ, **(env or {})})


def test_a_packed_build_runs_like_the_build(build, case_file, tmp_path, capsys):
    out = tmp_path / "deploy"
    assert main(["pack", str(build), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"-> {out}" in captured.err and not captured.out
    manifest = json.loads((out / "manifest.json").read_text())
    source = json.loads((build / "manifest.json").read_text())
    assert manifest["packed"]["manifest_sha256"] and manifest["packed"]["from"] == str(build.resolve())
    assert set(manifest["files"]) == set(source["files"])  # nothing to leave out in a plain build
    assert {k: v for k, v in manifest.items() if k not in ("files", "packed")} == \
        {k: v for k, v in source.items() if k != "files"}
    load_manifest(out, verify=True)  # the runtime's own check
    packed, original = _run(out, case_file, tmp_path / "a.npz"), _run(build, case_file, tmp_path / "b.npz")
    assert packed.keys() == original.keys()
    for key in packed:
        np.testing.assert_array_equal(packed[key], original[key])
    assert not [p for p in tmp_path.iterdir() if "ffexport-pack" in p.name]  # no staging folder left


def test_tensors_no_graph_reads_are_left_out(build, tmp_path):
    """weights.bin bytes that no listed graph points at (a rebuilt bucket's old tensors) are not copied."""
    from ffexport.export.manifest import file_record

    manifest = json.loads((build / "manifest.json").read_text())
    with open(build / "weights.bin", "ab") as f:
        f.write(b"\x07" * 4096)  # an orphan tensor, committed like the rest
    manifest["files"]["weights.bin"] = file_record(build, "weights.bin")
    (build / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "deploy"
    assert main(["-q", "pack", str(build), "--out", str(out)]) == 0
    packed = json.loads((out / "manifest.json").read_text())["packed"]
    assert packed["weights_bytes"]["packed"] <= packed["weights_bytes"]["build"] - 4096
    assert b"\x07" * 4096 not in (out / "weights.bin").read_bytes()


def test_the_check_fails_when_a_tensor_lands_on_the_wrong_bytes(build, tmp_path, monkeypatch, error_line):
    """The byte-for-byte check is not a formality: point every tensor one byte off and the pack is refused,
    leaving no folder."""
    point = pack_module._point
    monkeypatch.setattr(pack_module, "_point", lambda tensor, offset, length: point(tensor, offset + 1, length))
    out = tmp_path / "deploy"
    assert main(["pack", str(build), "--out", str(out)]) == InputError.exit_code
    assert "bytes differ from the build's" in error_line()
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "ffexport-pack" in p.name]


@pytest.mark.parametrize("how, words", [
    ("graph", "sha256"), ("missing", "is missing"), ("no manifest", "has no manifest.json")])
def test_a_damaged_build_is_refused_before_anything_is_written(build, tmp_path, how, words, error_line):
    graph = build / "decode.onnx"
    if how == "graph":
        data = bytearray(graph.read_bytes())
        data[len(data) // 2] ^= 0xFF
        graph.write_bytes(bytes(data))
    elif how == "missing":
        graph.unlink()
    else:
        (build / "manifest.json").unlink()
    out = tmp_path / "deploy"
    assert main(["pack", str(build), "--out", str(out)]) == InputError.exit_code
    assert words in error_line()
    assert not out.exists()


def test_refusals_leave_what_the_user_had(build, tmp_path, error_line):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["pack", str(build), "--out", str(mine)]) == InputError.exit_code
    assert "not empty" in error_line()
    assert main(["pack", str(build), "--out", str(mine), "--overwrite"]) == InputError.exit_code
    assert "other than a packed build" in error_line()
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep"
    assert main(["pack", str(build), "--out", str(build)]) == InputError.exit_code
    assert "the build itself" in error_line()
    out = tmp_path / "deploy"
    assert main(["-q", "pack", str(build), "--out", str(out)]) == 0
    before = (out / "manifest.json").read_bytes()
    assert main(["pack", str(build), "--out", str(out)]) == InputError.exit_code  # no silent replacement
    assert "--overwrite" in error_line()
    assert (out / "manifest.json").read_bytes() == before
    assert main(["-q", "pack", str(build), "--out", str(out), "--overwrite"]) == 0
    load_manifest(out, verify=True)


def test_a_build_being_written_is_not_packed(build, tmp_path, error_line):
    with DirectoryLock(build):  # what `ffexport build` holds while it writes
        assert main(["pack", str(build), "--out", str(tmp_path / "deploy")]) == InputError.exit_code
    assert "being written by an ffexport build" in error_line()
    assert not (tmp_path / "deploy").exists()


@pytest.mark.parametrize("point", pack_module.PACK_POINTS)
def test_a_killed_pack_leaves_no_folder_and_the_next_one_cleans_up(build, tmp_path, point):
    out = tmp_path / "deploy"
    done = _pack(build, out, env={"FFEXPORT_FAULT": f"sigkill@{point}"})
    assert done.returncode == -9
    assert not out.exists() or not [p for p in out.iterdir() if p.name != ".ffexport.lock"]
    with pytest.raises(InputError):
        load_manifest(out)
    assert [p for p in tmp_path.iterdir() if "ffexport-pack" in p.name]  # the staging folder the kill left
    assert _pack(build, out).returncode == 0
    load_manifest(out, verify=True)
    assert not [p for p in tmp_path.iterdir() if "ffexport-pack" in p.name]


def test_an_interrupted_overwrite_keeps_the_old_packed_folder(build, case_file, tmp_path):
    out = tmp_path / "deploy"
    assert _pack(build, out).returncode == 0
    contents = lambda: {p.name: p.read_bytes() for p in out.iterdir()  # noqa: E731
                        if p.is_file() and not p.name.startswith(".")}  # not the lock (a pid) or verify cache
    before = contents()
    for fault in ("sigint@pack before rename", "sigkill@pack weights written"):
        done = _pack(build, out, "--overwrite", env={"FFEXPORT_FAULT": fault})
        assert done.returncode in (130, -9), done.stderr
        assert contents() == before
        load_manifest(out, verify=True)
    if done.returncode == 130:
        assert done.stderr.strip().splitlines()[-1] == "error: interrupted"
    _run(out, case_file, tmp_path / "after.npz")


def test_a_second_pack_into_the_same_folder_is_refused_while_the_first_runs(build, tmp_path):
    out, ready = tmp_path / "deploy", tmp_path / "ready"
    first = subprocess.Popen([sys.executable, "-m", "ffexport", "-q", "pack", str(build), "--out", str(out)],
                             env={**os.environ, "FFEXPORT_FAULT": "pause@pack weights written",
                                  "FFEXPORT_FAULT_READY": str(ready), "FFEXPORT_FAULT_SECONDS": "60"},
                             stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            if ready.exists() or first.poll() is not None:
                break
            import time

            time.sleep(0.1)
        assert ready.exists(), first.stderr.read() if first.poll() is not None else "the first pack never paused"
        second = _pack(build, out)
        assert second.returncode == InputError.exit_code
        (line,) = second.stderr.strip().splitlines()
        assert "being written by another ffexport" in line and ready.read_text() in line
        other = _pack(build, tmp_path / "elsewhere")  # the build itself is only read: another pack of it runs
        assert other.returncode == 0, other.stderr
    finally:
        first.kill()
        first.wait()


def test_a_read_only_build_packs(build, tmp_path, monkeypatch):
    """A build folder the user cannot write (no lock file can be made there; as root chmod would not stop
    it, so the refusal is simulated) is packed all the same: no build can be writing it either."""
    real_open = os.open

    def read_only(path, flags, *args):
        if Path(path).parent == build and flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    (build / ".ffexport.lock").unlink(missing_ok=True)
    monkeypatch.setattr(os, "open", read_only)
    assert main(["-q", "pack", str(build), "--out", str(tmp_path / "deploy")]) == 0
    monkeypatch.undo()
    assert not (build / ".ffexport.lock").exists()
    load_manifest(tmp_path / "deploy", verify=True)


def test_a_build_into_a_packed_folder_is_refused(build, tmp_path, error_line):
    """Adding buckets to a deployment folder would keep its `packed` record stale: refused in one line,
    the folder untouched; --overwrite replaces it with a build."""
    out = tmp_path / "deploy"
    assert main(["-q", "pack", str(build), "--out", str(out)]) == 0
    before = (out / "manifest.json").read_bytes()
    assert main(["-q", "build", "--out", str(out)]) == InputError.exit_code  # refused before the model loads
    line = error_line()
    assert "deployment folder written by `ffexport pack`" in line and str(build.resolve()) in line
    assert (out / "manifest.json").read_bytes() == before
    assert main(["-q", "build", "--out", str(out), "--overwrite"]) == 0  # what the line offers works
    manifest = load_manifest(out, verify=True)
    assert "packed" not in manifest.raw and [b.name for b in manifest.buckets] == ["8x112x112"]
