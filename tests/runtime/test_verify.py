"""Item 13 of issue 12: a runtime session checks weights.bin against the sha256 recorded at build time.

A weights.bin damaged in place at the same size used to run silently (only ``--verify`` saw it).
Now ``Runtime(build)`` and ``ffexport run`` check it unless told not to (``verify=False``,
``--no-verify``); a verified, unchanged file is not hashed again on the next start."""

from __future__ import annotations

import os
import shutil

import pytest

import ffexport.runtime.manifest as manifest_module
from ffexport.cli import main
from ffexport.errors import InputError
from ffexport.runtime.session import Runtime
from toy_build import DEFAULT_BUCKETS, toy_case

VERIFIED = ".ffexport-verified.json"  # where a verified file is remembered


@pytest.fixture
def build(toy_build_dir, tmp_path):
    copy = tmp_path / "build"
    shutil.copytree(toy_build_dir, copy)
    (copy / VERIFIED).unlink(missing_ok=True)
    return copy


def _flip_in_place(path, offset=100):
    """Change one byte without changing the size (and put the mtime back, as a careless copy tool might)."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_session_refuses_weights_damaged_in_place(build):
    Runtime(build)  # intact: fine
    _flip_in_place(build / "weights.bin")
    with pytest.raises(InputError) as e:
        Runtime(build)
    message = str(e.value)
    assert str(build / "weights.bin") in message and "sha256" in message and "--no-verify" in message
    Runtime(build, verify=False)  # the caller's choice: sizes and graph digests only


def test_run_refuses_them_in_one_line_unless_no_verify(build, tmp_path, capsys, error_line):
    case = tmp_path / "case.npz"
    toy_case(DEFAULT_BUCKETS[0], seed=1).save(case)
    _flip_in_place(build / "weights.bin")
    assert main(["-q", "run", str(build), "--inputs", str(case), "--max-new-tokens", "1"]) == InputError.exit_code
    assert "weights.bin does not match its sha256" in error_line()
    assert main(["-q", "run", str(build), "--inputs", str(case), "--max-new-tokens", "1", "--no-verify"]) == 0


def test_a_repeat_start_does_not_hash_again_but_sees_any_write(build, monkeypatch):
    hashed = []
    real = manifest_module.sha256_of

    def counting(path, length=None):
        hashed.append(path.name)
        return real(path, length)

    monkeypatch.setattr(manifest_module, "sha256_of", counting)
    Runtime(build)
    assert "weights.bin" in hashed
    hashed.clear()
    Runtime(build)
    assert "weights.bin" not in hashed  # unchanged since it was verified: remembered
    _flip_in_place(build / "weights.bin")  # same size, same mtime: only the ctime tells
    with pytest.raises(InputError):
        Runtime(build)
    assert "weights.bin" in hashed


def test_a_build_that_cannot_be_written_is_verified_every_time(build, monkeypatch):
    def refuse(*args):
        raise PermissionError("read-only")

    monkeypatch.setattr(manifest_module.os, "replace", refuse)
    Runtime(build)  # verified; not remembered, and no error for it
    assert not (build / VERIFIED).exists()
    assert not list(build.glob("*.partial"))
