"""Fixtures for the C++ runtime (cpp/): its CMake build (once per session) and a toy build."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "runtime"))
from cpp_support import CppBuild, build_cpp  # noqa: E402
from toy_build import write_toy_build  # noqa: E402


@pytest.fixture(scope="session")
def cpp_build(tmp_path_factory) -> CppBuild:
    return build_cpp(tmp_path_factory)


@pytest.fixture(scope="session")
def toy_build_dir(tmp_path_factory) -> Path:
    """tests/runtime's hand-written build (buckets 8x112x112, 4x112x224, 16x112x112 unusable). Do not modify."""
    return write_toy_build(tmp_path_factory.mktemp("toy") / "build")
