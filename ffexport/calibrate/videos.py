"""Calibration videos: a synthetic mix with the structure real videos have, or the files of a folder.

The synthetic mix cycles through :data:`CALIBRATION_KINDS` (a static scene, a moving object, a pan, a
zoom, a scene cut): video ``i`` of a set with base seed ``S`` is ``synthetic_video(kind_i, seed=S + i)``
at the bucket's size, plus temporal sensor grain (Gaussian, sigma drawn from [0, 3] grey levels with the
same seed) so that static regions are not bit-identical across frames, as in a camera. Every video is
named ``synthetic:KIND:SEED:grainG`` and can be made again from its name alone.

:data:`OUT_OF_DISTRIBUTION` are the probes the fidelity report always adds: a slideshow (flat slides held
still, everything merges) and pure noise (nothing merges). Torch-free.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ffexport.errors import InputError
from ffexport.video import synthetic_video

log = logging.getLogger(__name__)

CALIBRATION_KINDS: tuple[str, ...] = ("static", "moving_object", "pan", "zoom", "scene_cut")
OUT_OF_DISTRIBUTION: tuple[str, ...] = ("slideshow", "noise")
#: held-out sets start this far from the calibration seed (no video is in both)
HELD_OUT_SEED_OFFSET = 10_000


@dataclass(frozen=True)
class VideoSource:
    """A named video that can be loaded at a bucket's frame count and size (uint8 [T, H, W, 3])."""

    name: str
    kind: str | None = None  # synthetic kind (None: a file)
    seed: int = 0
    grain: float = 0.0
    path: Path | None = None

    def load(self, frames: int, height: int, width: int) -> np.ndarray:
        """The video's frames: synthetic ones made at the size, files read and sampled to ``frames``
        (the caller resizes); raises InputError for an unreadable file."""
        if self.path is not None:
            from ffexport.runtime.video import read_video

            return read_video(self.path, wanted=frames)
        video = synthetic_video(self.kind, frames=frames, height=height, width=width, seed=self.seed)
        if self.grain > 0:
            rng = np.random.default_rng([self.seed, 7919])
            noisy = video.astype(np.float32) + rng.normal(0.0, self.grain, size=video.shape).astype(np.float32)
            video = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        return video


def synthetic_set(count: int, *, seed: int = 0, kinds: Sequence[str] = CALIBRATION_KINDS,
                  grain: bool = True) -> list[VideoSource]:
    """``count`` synthetic videos cycling through ``kinds`` with seeds ``seed, seed + 1, ...``."""
    from ffexport.video import SYNTHETIC_KINDS

    if count < 1:
        raise InputError(f"--synthetic must be at least 1, got {count}")
    unknown = [k for k in kinds if k not in SYNTHETIC_KINDS]
    if unknown or not kinds:
        raise InputError(f"unknown synthetic kind(s) {', '.join(unknown) or '(none given)'}; valid: "
                         f"{', '.join(SYNTHETIC_KINDS)}")
    videos = []
    for i in range(count):
        kind, s = kinds[i % len(kinds)], seed + i
        sigma = round(float(np.random.default_rng([s, 104729]).uniform(0.0, 3.0)), 1) if grain else 0.0
        videos.append(VideoSource(f"synthetic:{kind}:{s}:grain{sigma:g}", kind, s, sigma))
    return videos


def probe_set(seed: int = 0) -> list[VideoSource]:
    """The out-of-distribution probes: a slideshow and pure noise."""
    return [VideoSource(f"synthetic:{kind}:{seed}", kind, seed) for kind in OUT_OF_DISTRIBUTION]


def folder_videos(directory: str | Path) -> list[VideoSource]:
    """Every visible file in ``directory`` (sorted by name); whether it is a readable video is decided
    when it is loaded. An empty or missing folder is an InputError."""
    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"--videos {d}: no such folder")
    files = sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise InputError(f"--videos {d}: the folder holds no files")
    return [VideoSource(p.name, path=p) for p in files]
