"""Deterministic synthetic videos for tests and demos, plus a small PyAV writer.

FrameFusion merges and prunes visual tokens that are similar across frames, so its behaviour
depends on how much of a video changes from frame to frame. Each kind here stresses one regime:

* ``moving_object``: a static textured background with one coloured object moving across it
  (most tokens identical between frames, a few change).
* ``pan``: a large textured image sliding a few pixels per frame (every token changes a little).
* ``scene_cut``: two unrelated static scenes, cut at the middle (high similarity except at one
  boundary).
* ``static``: every frame identical (a slideshow: maximal redundancy).
* ``noise``: i.i.d. uniform noise per frame (no redundancy at all).
* ``zoom``: a camera zooming into a textured scene (every token changes, smoothly, more at the borders).
* ``slideshow``: flat presentation-like slides (solid shapes on a plain background), each held for eight
  frames, hard cuts between them (almost everything merges).

Textures are built from smooth gradients, low-frequency waves and random filled shapes so that
patches have structure (as in real video) rather than being pure noise. Everything is numpy only;
the same ``(kind, frames, height, width, seed)`` always gives the same bytes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ffexport.video.preprocess import check_video

logger = logging.getLogger(__name__)

SYNTHETIC_KINDS: tuple[str, ...] = ("moving_object", "pan", "scene_cut", "static", "noise", "zoom", "slideshow")

# Offsets mixed into the seed so that the kinds do not share random streams by accident.
_KIND_SALT = {kind: index for index, kind in enumerate(SYNTHETIC_KINDS)}


def synthetic_video(
    kind: str,
    *,
    frames: int = 8,
    height: int = 112,
    width: int = 112,
    seed: int = 0,
) -> np.ndarray:
    """Return a synthetic RGB video as uint8 ``[frames, height, width, 3]``.

    ``kind`` is one of :data:`SYNTHETIC_KINDS`. The output depends only on the arguments, so tests
    can rely on exact values. Raises ``ValueError`` for an unknown kind or non-positive sizes.
    """
    if kind not in SYNTHETIC_KINDS:
        raise ValueError(f"unknown synthetic video kind {kind!r}; valid kinds: {', '.join(SYNTHETIC_KINDS)}")
    _check_positive(frames=frames, height=height, width=width)
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    rng = np.random.default_rng([seed, _KIND_SALT[kind]])
    builder = {
        "moving_object": _moving_object,
        "pan": _pan,
        "scene_cut": _scene_cut,
        "static": _static,
        "noise": _noise,
        "zoom": _zoom,
        "slideshow": _slideshow,
    }[kind]
    video = builder(rng, frames, height, width)
    logger.debug("synthetic video %s seed=%d -> shape %s", kind, seed, video.shape)
    return video


def write_video(frames: np.ndarray, path: str | Path, fps: int = 4) -> Path:
    """Write uint8 ``[T, H, W, 3]`` frames to ``path`` with PyAV; the suffix picks the format.

    ``.mp4`` is encoded with libx264 when PyAV has it, else mpeg4, ``.webm`` with VP9 (libvpx-vp9), else
    VP8 (all as yuv420p, so height and width must be even; the encoding is lossy); ``.gif`` is encoded as a 256-colour palette GIF
    (Pillow computes the palette). Returns the path written. PyAV is imported here so that this
    module imports without it.
    """
    frames = check_video(frames)
    if fps <= 0:
        raise ValueError(f"fps must be a positive integer, got {fps}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".webm", ".gif"):
        raise ValueError(f"cannot write video {str(path)!r}: suffix must be .mp4, .webm or .gif, got {suffix!r}")
    try:
        import av
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("write_video needs PyAV: pip install av") from e

    if suffix in (".mp4", ".webm"):
        height, width = frames.shape[1:3]
        if height % 2 or width % 2:
            raise ValueError(
                f"{suffix[1:]} (yuv420p) needs even height and width, got {height}x{width}; use .gif or crop"
            )
        codec, pix_fmt = _mp4_codec(av) if suffix == ".mp4" else _webm_codec(av), "yuv420p"
        av_frames = [av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24") for f in frames]
    else:
        codec, pix_fmt = "gif", "pal8"
        indices, palette = _shared_palette(frames)
        av_frames = [av.VideoFrame.from_ndarray((idx, palette), format="pal8") for idx in indices]

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = frames.shape[2]
        stream.height = frames.shape[1]
        stream.pix_fmt = pix_fmt
        for video_frame in av_frames:
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder
            container.mux(packet)
    logger.debug("wrote %d frames (%s, %d fps) to %s", len(frames), codec, fps, path)
    return path


# --------------------------------------------------------------------------------------------
# Kinds


def _moving_object(rng: np.random.Generator, frames: int, height: int, width: int) -> np.ndarray:
    """Static background plus a coloured object travelling left to right (with a vertical drift)."""
    background = _texture(rng, height, width)
    side = max(2, min(height, width) // 4)
    color = _saturated_color(rng)
    is_disc = bool(rng.integers(0, 2))
    start_y = int(rng.integers(0, max(1, height - side)))
    end_y = int(rng.integers(0, max(1, height - side)))
    video = np.repeat(background[None], frames, axis=0)
    for t in range(frames):
        progress = t / (frames - 1) if frames > 1 else 0.0
        x0 = round(progress * (width - side))
        y0 = round(start_y + progress * (end_y - start_y))
        _paint_object(video[t], y0, x0, side, color, is_disc)
    return video


def _pan(rng: np.random.Generator, frames: int, height: int, width: int) -> np.ndarray:
    """A window sliding over a larger texture, ``step`` pixels right and half that down per frame."""
    step = max(1, round(width / 28))  # 4 px per frame at 112 px wide
    step_y = max(0, step // 2)
    canvas = _texture(rng, height + step_y * (frames - 1), width + step * (frames - 1))
    video = np.empty((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        y, x = t * step_y, t * step
        video[t] = canvas[y : y + height, x : x + width]
    return video


def _scene_cut(rng: np.random.Generator, frames: int, height: int, width: int) -> np.ndarray:
    """Scene A for the first ``ceil(frames / 2)`` frames, then an unrelated scene B."""
    scene_a = _texture(rng, height, width)
    scene_b = _texture(rng, height, width)
    cut = (frames + 1) // 2
    video = np.empty((frames, height, width, 3), dtype=np.uint8)
    video[:cut] = scene_a
    video[cut:] = scene_b
    return video


def _static(rng: np.random.Generator, frames: int, height: int, width: int) -> np.ndarray:
    """The same textured image in every frame."""
    return np.repeat(_texture(rng, height, width)[None], frames, axis=0)


def _noise(rng: np.random.Generator, frames: int, height: int, width: int) -> np.ndarray:
    """Independent uniform noise in every pixel of every frame."""
    return rng.integers(0, 256, size=(frames, height, width, 3), dtype=np.uint8)


def _zoom(rng: np.random.Generator, frames: int, height: int, width: int) -> np.ndarray:
    """A window shrinking around a random centre of a larger texture, resized back to full size: a
    zoom in by ``1.06x`` per frame (bilinear, like a camera's optical zoom)."""
    from PIL import Image

    canvas = _texture(rng, 2 * height, 2 * width)
    cy, cx = rng.uniform(0.4, 0.6, size=2)
    image = Image.fromarray(canvas)
    video = np.empty((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        scale = 1.06**t
        h, w = 2 * height / scale, 2 * width / scale
        top = min(max(cy * 2 * height - h / 2, 0.0), 2 * height - h)
        left = min(max(cx * 2 * width - w / 2, 0.0), 2 * width - w)
        box = (left, top, left + w, top + h)
        video[t] = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR, box=box))
    return video


def _slideshow(rng: np.random.Generator, frames: int, height: int, width: int) -> np.ndarray:
    """Slides held for eight frames each: a plain background with a few solid shapes (flat colour areas,
    like presentation slides), hard cuts between slides."""
    video = np.empty((frames, height, width, 3), dtype=np.uint8)
    hold = 8
    for first in range(0, frames, hold):
        slide = np.empty((height, width, 3), dtype=np.float64)
        slide[:] = rng.uniform(180.0, 255.0, size=3)
        for _ in range(int(rng.integers(2, 5))):
            _paint_random_shape(rng, slide)
        video[first : first + hold] = np.clip(np.rint(slide), 0, 255).astype(np.uint8)
    return video


# --------------------------------------------------------------------------------------------
# Texture helpers


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A structured uint8 ``[H, W, 3]`` image: gradient + waves + random shapes + faint grain."""
    yy, xx = np.meshgrid(np.linspace(0.0, 1.0, height), np.linspace(0.0, 1.0, width), indexing="ij")
    image = np.empty((height, width, 3), dtype=np.float64)
    for c in range(3):
        angle = rng.uniform(0.0, 2.0 * np.pi)
        ramp = np.cos(angle) * xx + np.sin(angle) * yy
        low, high = np.sort(rng.uniform(20.0, 235.0, size=2))
        image[..., c] = low + (high - low) * (ramp - ramp.min()) / max(np.ptp(ramp), 1e-9)
    for _ in range(2):  # low-frequency waves, a few periods across the image
        fy, fx = rng.uniform(1.0, 4.0, size=2)
        phase = rng.uniform(0.0, 2.0 * np.pi)
        wave = np.sin(2.0 * np.pi * (fy * yy + fx * xx) + phase)
        image += 25.0 * wave[..., None] * rng.uniform(-1.0, 1.0, size=3)
    for _ in range(int(rng.integers(4, 9))):
        _paint_random_shape(rng, image)
    image += rng.normal(0.0, 3.0, size=image.shape)  # sensor-like grain, small next to the structure
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _paint_random_shape(rng: np.random.Generator, image: np.ndarray) -> None:
    """Fill a random rectangle or disc (up to half the image size) with a random colour, in place."""
    height, width = image.shape[:2]
    size_h = int(rng.integers(max(1, height // 10), max(2, height // 2)))
    size_w = int(rng.integers(max(1, width // 10), max(2, width // 2)))
    y0 = int(rng.integers(0, max(1, height - size_h)))
    x0 = int(rng.integers(0, max(1, width - size_w)))
    color = rng.uniform(0.0, 255.0, size=3)
    if rng.integers(0, 2):
        image[y0 : y0 + size_h, x0 : x0 + size_w] = color
    else:
        mask = _disc_mask(size_h, size_w)
        image[y0 : y0 + size_h, x0 : x0 + size_w][mask] = color


def _paint_object(frame: np.ndarray, y0: int, x0: int, side: int, color: np.ndarray, is_disc: bool) -> None:
    """Paint the moving object into ``frame`` in place: a square or disc with a darker rim.

    The rim gives the object internal structure, so its patches are not flat colour.
    """
    region = frame[y0 : y0 + side, x0 : x0 + side]
    h, w = region.shape[:2]
    rim = max(1, side // 8)
    if is_disc:
        outer = _disc_mask(h, w)
        inner = _disc_mask(h, w, scale=max(0.0, 1.0 - 2.0 * rim / max(h, w)))
    else:
        outer = np.ones((h, w), dtype=bool)
        inner = np.zeros((h, w), dtype=bool)
        inner[rim : h - rim, rim : w - rim] = True
    region[outer] = color // 2
    region[inner & outer] = color


def _disc_mask(height: int, width: int, scale: float = 1.0) -> np.ndarray:
    """Boolean ellipse inscribed in a ``height x width`` box (optionally shrunk by ``scale``)."""
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    ry, rx = max(height / 2.0 * scale, 0.5), max(width / 2.0 * scale, 0.5)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _saturated_color(rng: np.random.Generator) -> np.ndarray:
    """A vivid colour (one channel high, one low) so the object stands out from the background."""
    color = rng.uniform(0.0, 80.0, size=3)
    high, mid = rng.permutation(3)[:2]
    color[high] = rng.uniform(200.0, 255.0)
    color[mid] = rng.uniform(0.0, 255.0)
    return np.rint(color).astype(np.uint8)


def _shared_palette(frames: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Quantize all frames to one 256-colour palette (median cut, no dithering) for GIF.

    FFmpeg's scaler cannot convert rgb24 to pal8, so the palette is computed with Pillow over all
    frames at once (one palette keeps colours stable across frames). Returns per-frame index
    images and the palette as ``[256, 4]`` uint8 ARGB rows, the layout PyAV expects for pal8.
    """
    from PIL import Image

    count, height, width = frames.shape[:3]
    mosaic = Image.fromarray(np.ascontiguousarray(frames.reshape(count * height, width, 3)))
    quantized = mosaic.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    rgb = np.array(quantized.getpalette()[: 256 * 3], dtype=np.uint8).reshape(-1, 3)
    palette = np.zeros((256, 4), dtype=np.uint8)
    palette[: len(rgb), 0] = 255
    palette[: len(rgb), 1:] = rgb
    indices = np.asarray(quantized, dtype=np.uint8).reshape(count, height, width)
    return [np.ascontiguousarray(index) for index in indices], palette


# --------------------------------------------------------------------------------------------
# Validation


def _check_positive(**sizes: int) -> None:
    """Raise ``ValueError`` naming the first argument that is not a positive integer."""
    for name, value in sizes.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _webm_codec(av_module: object) -> str:
    """VP9 (libvpx-vp9) when PyAV's FFmpeg has it, else VP8 (libvpx); neither: say so."""
    available = getattr(av_module, "codecs_available", set())
    for codec in ("libvpx-vp9", "libvpx"):
        if codec in available:
            return codec
    raise ValueError("this PyAV's FFmpeg has no VP9 or VP8 encoder to write .webm; use .mp4 or .gif")


def _mp4_codec(av_module: object) -> str:
    """The best H.264-compatible encoder PyAV offers: libx264, else mpeg4."""
    available = getattr(av_module, "codecs_available", set())
    for codec in ("libx264", "mpeg4"):
        if codec in available:
            return codec
    raise RuntimeError("PyAV has neither libx264 nor mpeg4 encoders; cannot write .mp4 (try .gif)")
