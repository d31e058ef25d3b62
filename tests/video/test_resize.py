"""ffexport.video.resize against PyTorch's uint8 antialiased interpolation (what torchvision, and so
transformers' video processors, compute on the CPU): equal pixel for pixel."""

from __future__ import annotations

import numpy as np
import pytest

from ffexport.video.resize import axis_taps, resize_frames

torch = pytest.importorskip("torch", reason="PyTorch's interpolate is the reference (the export extra has it)")

SHAPES = [  # (H, W) -> (h, w): up, down, mixed, one axis only, odd and tiny sizes, large factors
    ((90, 160), (280, 392)),
    ((480, 640), (448, 448)),
    ((360, 640), (336, 597)),
    ((97, 131), (56, 84)),
    ((300, 200), (600, 100)),
    ((64, 64), (64, 200)),
    ((200, 64), (37, 64)),
    ((720, 1280), (56, 84)),
    ((5, 7), (33, 2)),
]


def _torch(frames: np.ndarray, size, mode: str) -> np.ndarray:
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    return torch.nn.functional.interpolate(x, size=size, mode=mode, antialias=True).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize("shape, size", SHAPES)
def test_equals_torch_uint8_interpolate(shape, size, mode):
    frames = np.random.default_rng(sum(shape) + sum(size)).integers(0, 256, (2, *shape, 3), dtype=np.uint8)
    frames[1] = np.linspace(0, 255, shape[1], dtype=np.uint8)[None, :, None]  # smooth ramps clip at 0 and 255
    np.testing.assert_array_equal(resize_frames(frames, size, mode), _torch(frames, size, mode))


def test_same_size_is_untouched_and_one_frame_keeps_its_rank():
    frame = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_frames(frame, (20, 30)), frame)
    assert resize_frames(frame, (40, 60)).shape == (40, 60, 3)


def test_weights_are_int16_and_each_row_sums_to_one_in_fixed_point():
    for n_in, n_out in [(90, 280), (640, 448), (7, 2)]:
        index, weights, precision = axis_taps(n_in, n_out)
        assert np.abs(weights).max() < 1 << 15 and 0 < precision < 22
        assert np.abs(weights.sum(axis=1) - (1 << precision)).max() <= weights.shape[1]  # rounding only
        assert index.min() >= 0 and index.max() < n_in


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="uint8"):
        resize_frames(np.zeros((2, 4, 4, 3), np.float32), (8, 8))
    with pytest.raises(ValueError, match="resample"):
        resize_frames(np.zeros((4, 4, 3), np.uint8), (8, 8), "lanczos")
