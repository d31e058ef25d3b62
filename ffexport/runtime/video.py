"""Decode video files into uint8 RGB frames with PyAV, and sample them to a bucket's frame count.

Any container and codec FFmpeg reads works (mp4, webm, mkv, mov, avi, gif, ...). Only the first
video stream is read; rotation metadata and non-square pixel aspect ratios are ignored (frames come
out as stored). PyAV is imported inside the functions, so importing this module does not need it.

Reading with ``wanted=N`` keeps only the N frames the sampler picks, so a long high-resolution
video never sits in memory whole: the frames are counted first (demuxing only, no decoding), then
decoded once, keeping the picked ones.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ffexport.errors import InputError
from ffexport.video import sample_frame_indices

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds, from its container (no decoding): frame count and coded frame size."""

    frames: int
    height: int
    width: int


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Count the frames of ``path``'s first video stream (by demuxing) and read its frame size."""
    p = _existing(path)
    with _open(p) as (container, stream):
        count = _count_packets(p, container, stream)
        height, width = stream.codec_context.height, stream.codec_context.width
    if count == 0 or not height or not width:
        raise InputError(f"{p} is not a readable video (no frames)")
    return VideoInfo(frames=count, height=height, width=width)


def read_video(path: str | os.PathLike[str], *, wanted: int | None = None) -> np.ndarray:
    """Decode ``path`` into uint8 RGB frames ``[T, H, W, 3]``.

    With ``wanted``, return exactly ``wanted`` frames spread uniformly over the video
    (:func:`ffexport.video.sample_frame_indices`; frames repeat when the video has fewer), decoding
    everything but keeping only those. A missing file, a file FFmpeg cannot read, or one without a
    video stream raises :class:`InputError` ("X is not a readable video").
    """
    p = _existing(path)
    if wanted is not None and wanted < 1:
        raise ValueError(f"wanted must be a positive frame count, got {wanted}")
    if wanted is None:
        frames, _ = _decode(p, None)
    else:
        with _open(p) as (container, stream):
            total = _count_packets(p, container, stream)
        frames, decoded = _decode(p, sample_frame_indices(total, wanted) if total else np.zeros(0, np.int64))
        if decoded != total and decoded:  # the packet count was not the frame count: sample what decoded
            frames, _ = _decode(p, sample_frame_indices(decoded, wanted))
    if not frames:
        raise InputError(f"{p} is not a readable video (no frames could be decoded)")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise InputError(f"{p}: the frame size changes within the video ({', '.join(map(str, sorted(shapes)))}); "
                         "re-encode it at one size")
    video = np.stack(frames)
    log.debug("read %s: %d frames of %dx%d", p, *video.shape[:3])
    return video


def sample_frames(frames: np.ndarray, wanted: int) -> tuple[np.ndarray, bool]:
    """Pick ``wanted`` frames spread uniformly over ``frames`` [T, ...]; also say whether any repeat.

    Frames repeat (in order) when ``T < wanted``; the caller should warn that the video is short.
    """
    total = int(np.asarray(frames).shape[0])
    if total < 1:
        raise InputError("the video has no frames")
    if total == wanted:
        return frames, False
    return frames[sample_frame_indices(total, wanted)], total < wanted


# ---------------------------------------------------------------- PyAV
def _av() -> Any:
    try:
        import av
    except ImportError as e:
        raise InputError("reading video files needs PyAV: pip install av") from e
    return av


def _existing(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if not p.is_file():
        raise InputError(f"{p} is not a readable video (not a file)")
    return p


class _open:
    """``with _open(path) as (container, stream)``: the first video stream, FFmpeg errors as InputError."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.container = None

    def __enter__(self):
        av = _av()
        try:
            self.container = av.open(str(self.path), mode="r")
        except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
            raise InputError(f"{self.path} is not a readable video ({_reason(e)})") from e
        streams = [s for s in self.container.streams if s.type == "video"]
        if not streams:
            self.container.close()
            raise InputError(f"{self.path} is not a readable video (it has no video stream)")
        stream = streams[0]
        stream.thread_type = "AUTO"
        return self.container, stream

    def __exit__(self, *exc) -> None:
        if self.container is not None:
            self.container.close()


def _count_packets(path: Path, container: Any, stream: Any) -> int:
    av = _av()
    try:
        return sum(1 for packet in container.demux(stream) if packet.size)
    except av.FFmpegError as e:
        raise InputError(f"{path} is not a readable video ({_reason(e)})") from e


def _frames(path: Path):
    """Yield the decoded frames of the first video stream as PyAV VideoFrames."""
    av = _av()
    with _open(path) as (container, stream):
        try:
            yield from container.decode(stream)
        except av.FFmpegError as e:
            raise InputError(f"{path} is not a readable video ({_reason(e)})") from e


def _decode(path: Path, indices: np.ndarray | None) -> tuple[list[np.ndarray], int]:
    """RGB arrays of all frames, or of those at ``indices`` (sorted, may repeat) in that order; and
    how many frames the stream decoded to."""
    counts = None if indices is None else np.bincount(indices)
    out: list[np.ndarray] = []
    decoded = 0
    for i, frame in enumerate(_frames(path)):
        decoded += 1
        repeat = 1 if counts is None else int(counts[i]) if i < counts.size else 0
        if repeat:
            out.extend([frame.to_ndarray(format="rgb24")] * repeat)
    return out, decoded


def _reason(e: BaseException) -> str:
    text = " ".join(str(getattr(e, "strerror", None) or e).split())
    return text[:200] or type(e).__name__
