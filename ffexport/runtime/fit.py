"""Fit a real video to a build's buckets: pick the bucket, sample its frames, match its aspect ratio.

Real videos rarely have a bucket's shape. ``ffexport run --video`` picks a bucket by
:func:`choose_bucket`, keeps the bucket's frame count spread uniformly over the video, and makes the
frames the bucket's aspect ratio (width / height) as ``--fit`` says:

- ``crop`` (default): cut the centre of each frame to the bucket's aspect ratio (nothing stretched);
- ``pad``: add black bars around each frame up to the bucket's aspect ratio (nothing cut);
- ``resize``: stretch the frames to the bucket's size (the processor's plain resize);
- ``strict``: only a bucket whose aspect ratio is within 25% of the video's (then resized as is);
  none: an error naming the bucket to build.

Each choice is said in one line (:class:`FitVideo`), and a video far from every bucket's shape also
gets the ``ffexport build --bucket`` that would fit it (:func:`suggest_bucket`). numpy only: no torch.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ffexport.errors import InputError
from ffexport.runtime.defaults import FITS
from ffexport.runtime.manifest import Bucket, Manifest
from ffexport.runtime.session import ASPECT_TOLERANCE  # the rule of Runtime.pick_bucket
from ffexport.runtime.video import VideoInfo, probe_video, read_video
from ffexport.video.preprocess import sample_frame_indices

log = logging.getLogger(__name__)


def _distance(bucket: Bucket, aspect: float) -> float:
    return abs(math.log(bucket.aspect / aspect))


def choose_bucket(buckets: Sequence[Bucket], frames: int, height: int, width: int, *, fit: str) -> Bucket | None:
    """The bucket for a video of ``frames`` frames of ``height`` x ``width`` pixels (None: no bucket fits).

    Among the buckets whose aspect ratio is within 25% of the video's (with ``fit`` other than
    ``strict`` and no such bucket: those of the closest aspect ratio), the one with the most frames
    not above ``frames``; when all need more, the one with the fewest (frames repeat). Ties go to
    the closer aspect ratio, then to the order given.
    """
    if fit not in FITS:
        raise InputError(f"--fit {fit!r}: use one of {', '.join(FITS)}")
    if min(frames, height, width) < 1:
        raise InputError(f"a video needs at least one frame and a positive size, got {frames} frames of {height}x{width}")
    if not buckets:
        return None
    aspect = width / height
    distance = {b.name: _distance(b, aspect) for b in buckets}
    candidates = [b for b in buckets if distance[b.name] <= math.log(ASPECT_TOLERANCE) + 1e-12]
    if not candidates:
        if fit == "strict":
            return None
        closest = min(distance.values())
        candidates = [b for b in buckets if distance[b.name] <= closest + 1e-12]
    order = {b.name: i for i, b in enumerate(buckets)}
    fitting = [b for b in candidates if b.frames <= frames]
    if fitting:
        return min(fitting, key=lambda b: (-b.frames, distance[b.name], order[b.name]))
    return min(candidates, key=lambda b: (b.frames, distance[b.name], order[b.name]))


def suggest_bucket(like: Bucket | None, height: int, width: int, *, factor: int) -> str:
    """A bucket name of the video's aspect ratio: ``like``'s frames and shorter side, the longer side
    scaled to the video's aspect ratio and rounded to a multiple of ``factor`` (patch x merge size)."""
    frames, side = (like.frames, min(like.resized)) if like is not None else (8, 4 * factor)
    longer = max(factor, int(round(side * max(height, width) / min(height, width) / factor)) * factor)
    h, w = (side, longer) if width >= height else (longer, side)
    return f"{frames}x{h}x{w}"


def fit_frames(frames: np.ndarray, aspect: float, fit: str) -> tuple[np.ndarray, str]:
    """Make uint8 frames ``[T, H, W, 3]`` of aspect ratio ``aspect`` (width / height) as ``fit`` says.

    Returns the frames and what was done, in words. ``resize`` and ``strict`` return the frames as
    they are (the processor resizes them to the bucket's size).
    """
    t, height, width = frames.shape[:3]
    if fit in ("resize", "strict"):
        if abs(math.log(width / height / aspect)) < 1e-3:
            return frames, f"{height}x{width} resized (same aspect ratio)"
        return frames, f"{height}x{width} stretched to the bucket's aspect ratio {aspect:.2f} (--fit resize)"
    wide = width / height > aspect
    if fit == "crop":
        h, w = (height, max(1, int(round(height * aspect)))) if wide else (max(1, int(round(width / aspect))), width)
        if (h, w) == (height, width):
            return frames, f"{height}x{width} kept whole (the bucket's aspect ratio)"
        top, left = (height - h) // 2, (width - w) // 2
        return (np.ascontiguousarray(frames[:, top:top + h, left:left + w]),
                f"centre-cropped {height}x{width} to {h}x{w} (the bucket's aspect ratio {aspect:.2f}; --fit pad keeps "
                "the whole frame)")
    if fit == "pad":
        h, w = (max(height, int(round(width / aspect))), width) if wide else (height, max(width, int(round(height * aspect))))
        if (h, w) == (height, width):
            return frames, f"{height}x{width} kept whole (the bucket's aspect ratio)"
        out = np.zeros((t, h, w, 3), dtype=frames.dtype)
        top, left = (h - height) // 2, (w - width) // 2
        out[:, top:top + height, left:left + width] = frames
        return out, f"padded {height}x{width} to {h}x{w} with black bars (the bucket's aspect ratio {aspect:.2f})"
    raise InputError(f"--fit {fit!r}: use one of {', '.join(FITS)}")


def describe_sampling(total: int, wanted: int) -> str:
    """``sampled 8 of 61 frames: 0 7 15 22 30 38 45 53`` (repeats said when the video is short)."""
    indices = sample_frame_indices(total, wanted)
    shown = " ".join(str(int(i)) for i in indices[:32]) + (" ..." if indices.size > 32 else "")
    if total < wanted:
        return f"the video has {total} frames, the bucket takes {wanted}: frames repeated: {shown}"
    if total == wanted:
        return f"all {total} frames"
    return f"sampled {wanted} of {total} frames: {shown}"


def reduction(manifest: Manifest, bucket: Bucket) -> str:
    """``64 -> 15 visual tokens`` from the bucket's schedule in the manifest (``64 visual tokens`` without one)."""
    for raw in manifest.raw.get("buckets", []):
        if isinstance(raw, dict) and raw.get("name") == bucket.name:
            stages = (raw.get("schedule") or {}).get("stages")
            if isinstance(stages, list) and stages and all(isinstance(s, dict) for s in stages):
                removed = sum(int(s.get("remove", 0)) for s in stages)
                return f"{bucket.visual_tokens} -> {bucket.visual_tokens - removed} visual tokens"
    return f"{bucket.visual_tokens} visual tokens"


@dataclass(frozen=True)
class FittedVideo:
    """A video file's frames made ready for one bucket (``frames`` has the bucket's count)."""

    frames: np.ndarray
    bucket: Bucket
    info: VideoInfo


class FitVideo:
    """``FitVideo(manifest, fit="crop")(path)``: decode only the frames a bucket needs and fit them to it.

    ``bucket`` forces a bucket by name (with ``fit="strict"`` it must then be within 25% of the
    video's aspect ratio). Logs one line each: the bucket and its reduction, the frames sampled, the
    fit; and the bucket to build when the video is far from the bucket's shape.
    """

    def __init__(self, manifest: Manifest, *, fit: str = "crop", bucket: str | None = None) -> None:
        if fit not in FITS:
            raise InputError(f"--fit {fit!r}: use one of {', '.join(FITS)}")
        self.manifest, self.fit, self.bucket = manifest, fit, bucket

    def __call__(self, path: str | os.PathLike[str]) -> FittedVideo:
        info = probe_video(path)
        m = self.manifest.model
        factor = m.patch_size * m.spatial_merge_size
        usable = self.manifest.buckets
        if self.bucket is not None:
            b = self.manifest.bucket(self.bucket)
            if self.fit == "strict" and _distance(b, info.width / info.height) > math.log(ASPECT_TOLERANCE) + 1e-12:
                b = None
        else:
            b = choose_bucket(usable, info.frames, info.height, info.width, fit=self.fit)
        suggestion = suggest_bucket(b or (usable[0] if usable else None), info.height, info.width, factor=factor)
        if b is None:
            which = (f"bucket {self.bucket} does not fit" if self.bucket is not None
                     else f"no bucket of {self.manifest.root} fits")
            raise InputError(
                f"{which} a video of {info.frames} frames at {info.height}x{info.width} with --fit strict "
                f"(aspect {info.width / info.height:.2f}; a bucket's must be within 25%); buckets: "
                f"{self.manifest.describe_buckets()}; build one: ffexport build --bucket {suggestion}, or use --fit "
                "crop, pad or resize")
        log.info("%s: %d frames of %dx%d -> bucket %s, %s", path, info.frames, info.height, info.width, b.name,
                 reduction(self.manifest, b))
        log.info("frames: %s", describe_sampling(info.frames, b.frames))
        frames = read_video(path, wanted=b.frames)
        fitted, said = fit_frames(frames, b.aspect, self.fit)
        log.info("fit %s: %s", self.fit, said)
        if _distance(b, info.width / info.height) > math.log(ASPECT_TOLERANCE) + 1e-12:
            log.info("a bucket of this video's shape: ffexport build --bucket %s", suggestion)
        return FittedVideo(fitted, b, info)


def answer_video(runtime, path: str | os.PathLike[str], prompt: str, *, fit: str = FITS[0], bucket: str | None = None,
                 max_new_tokens: int | None = None):
    """What ``ffexport run --video`` does: :class:`FitVideo`, then the runtime's prepare and generate steps.

    ``runtime`` is an :class:`ffexport.runtime.Runtime`; returns its :class:`~ffexport.runtime.Result`.
    (``Runtime.run_video`` resizes to the bucket, as ``fit="resize"``.)
    """
    from ffexport.runtime.defaults import DEFAULT_MAX_NEW_TOKENS

    fitted = FitVideo(runtime.manifest, fit=fit, bucket=bucket)(path)
    case = runtime.prepare_video(fitted.frames, prompt, fitted.bucket)
    budget = DEFAULT_MAX_NEW_TOKENS if max_new_tokens is None else max_new_tokens
    return runtime.generate(case, budget, bucket=fitted.bucket)
