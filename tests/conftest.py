"""Shared fixtures: the tiny model is built once per session (deterministic random weights)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny():
    from ffexport.models import LoadModel

    return LoadModel("qwen2vl-tiny")()
