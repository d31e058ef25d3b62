"""Lint fixtures: graph builders live in lint_graphs.py (plain functions, imported by the tests); a
default ``ffexport build`` per precision is made once per session (the linter and the real parser both
read it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: the README's default bucket
DEFAULT_BUCKET = "8x112x112"


@pytest.fixture(scope="session")
def default_build(tmp_path_factory):
    """``default_build(precision) -> Path``: ``ffexport build --bucket 8x112x112 --precision P`` (tiny model),
    made on first use and kept for the session."""
    made: dict[str, Path] = {}

    def get(precision: str = "fp32") -> Path:
        if precision not in made:
            out = tmp_path_factory.mktemp(f"default_{precision}") / "build"
            done = subprocess.run([sys.executable, "-m", "ffexport", "-q", "build", "--out", str(out), "--bucket",
                                   DEFAULT_BUCKET, "--precision", precision],
                                  capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, done.stderr[-3000:]
            made[precision] = out
        return made[precision]

    return get
