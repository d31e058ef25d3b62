"""Runtime fixtures: a hand-written toy build (always) and a real `ffexport build` of the tiny model."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy_build import write_toy_build  # noqa: E402

REAL_BUCKET = "8x112x112"


@pytest.fixture(autouse=True)
def _fresh_ffexport_logger():
    """``ffexport.cli.main`` points the "ffexport" logger at the sys.stderr of its call (a capture pytest
    closes afterwards) and stops propagation; reset it around each test so caplog sees the records."""

    def reset() -> None:
        logger = logging.getLogger("ffexport")
        logger.handlers.clear()
        logger.setLevel(logging.NOTSET)
        logger.propagate = True

    reset()
    yield
    reset()


@pytest.fixture(scope="session")
def toy_build_dir(tmp_path_factory) -> Path:
    """A complete toy build (buckets 8x112x112, 4x112x224, and 16x112x112 marked unusable). Do not modify."""
    return write_toy_build(tmp_path_factory.mktemp("toy") / "build")


@pytest.fixture(scope="session")
def real_bucket() -> str:
    """The one bucket of :func:`real_build_dir`."""
    return REAL_BUCKET


@pytest.fixture(scope="session")
def real_build_dir(tmp_path_factory) -> Path:
    """`ffexport build --model qwen2vl-tiny --bucket 8x112x112` once per session. Do not modify."""
    out = tmp_path_factory.mktemp("real") / "build"
    done = subprocess.run(
        [sys.executable, "-m", "ffexport", "-q", "build", "--model", "qwen2vl-tiny", "--bucket", REAL_BUCKET,
         "--out", str(out)],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, f"ffexport build failed ({done.returncode}):\n{done.stderr[-4000:]}"
    assert (out / "manifest.json").is_file()
    return out
