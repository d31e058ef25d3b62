"""Shared fixtures: the tiny model is built once per session (deterministic random weights)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny():
    from ffexport.models import LoadModel

    return LoadModel("qwen2vl-tiny")()


@pytest.fixture(autouse=True)
def _fresh_ffexport_logger():
    """``ffexport.cli.main`` binds the "ffexport" logger to the stderr of its call; undo that after
    each test so later tests (and caplog) see records normally."""
    import logging

    yield
    logger = logging.getLogger("ffexport")
    logger.handlers[:] = []
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


@pytest.fixture
def error_line(capsys):
    """The single ``error: ...`` line a failed command printed (no traceback, nothing on stdout)."""

    def read() -> str:
        captured = capsys.readouterr()
        err = captured.err.strip().splitlines()
        assert len(err) == 1, err
        assert err[0].startswith("error: ")
        assert captured.out == ""
        return err[0]

    return read
