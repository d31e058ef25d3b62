"""Pre-processed inputs (``case.npz``): the Hugging Face processor's names, checked on load.

``input_ids`` [1, L] int64 with one contiguous run of video tokens, ``pixel_values_videos``
[t*h*w, C*temporal_patch*patch*patch] float32, ``video_grid_thw`` [1, 3] int64. Torch-free.

Families with a fixed-size vision tower (LLaVA-NeXT-Video, LLaVA-OneVision) hold their processor's
names instead (:data:`FIXED_TOWER_CASE_KEYS`): ``input_ids`` [1, L], ``attention_mask`` [1, L] int64
and ``pixel_values_videos`` [1, frames, 3, S, S] float32; such a case has no ``video_grid_thw``.
InternVL's processor returns the frames as ``pixel_values`` [frames, 3, S, S]
(:data:`FRAMES_AS_IMAGES_CASE_KEYS`); the case keeps them in ``pixel_values_videos`` and saves them
under that name.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ffexport.errors import InputError
from ffexport.io import save_npz
from ffexport.mrope import video_spans

CASE_KEYS = ("input_ids", "pixel_values_videos", "video_grid_thw")
#: what transformers' LLaVA-NeXT-Video / LLaVA-OneVision processors return for a video prompt
FIXED_TOWER_CASE_KEYS = ("input_ids", "attention_mask", "pixel_values_videos")
#: what transformers' InternVL processor returns for a video prompt (the frames go into pixel_values)
FRAMES_AS_IMAGES_CASE_KEYS = ("input_ids", "attention_mask", "pixel_values")


@dataclass(frozen=True)
class Case:
    """One prompt with one video, ready for the model."""

    input_ids: np.ndarray
    pixel_values_videos: np.ndarray
    video_grid_thw: np.ndarray | None
    #: fixed-size-tower families only (their processor returns it); None for Qwen2-VL cases
    attention_mask: np.ndarray | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        """The arrays this case holds, under the names the family's transformers processor uses."""
        if self.video_grid_thw is not None:
            return CASE_KEYS
        return FIXED_TOWER_CASE_KEYS if self.pixel_values_videos.ndim == 5 else FRAMES_AS_IMAGES_CASE_KEYS

    @property
    def pixel_values(self) -> np.ndarray:
        """InternVL's name for the frames ``[frames, 3, S, S]``."""
        return self.pixel_values_videos

    @property
    def grid(self) -> tuple[int, int, int]:
        """(t, h, w) of ``video_grid_thw``; for a fixed-size-tower case (frames, height, width) in pixels."""
        if self.video_grid_thw is None:
            t, _, h, w = self.pixel_values_videos.shape[-4:]
            return int(t), int(h), int(w)
        t, h, w = (int(x) for x in self.video_grid_thw.reshape(-1)[:3])
        return t, h, w

    def video_span(self, video_token_id: int) -> tuple[int, int]:
        spans = video_spans(self.input_ids, video_token_id)
        if len(spans) != 1:
            raise InputError(
                f"input_ids must hold exactly one contiguous run of video tokens (id {video_token_id}); "
                f"found {len(spans)}"
            )
        return spans[0]

    def check(self, *, video_token_id: int, spatial_merge_size: int, patch_dim: int | None = None) -> "Case":
        """Raise :class:`InputError` when the case does not fit a model with these parameters."""
        t, h, w = self.grid
        merge = spatial_merge_size
        if min(t, h, w) <= 0 or h % merge or w % merge:
            raise InputError(f"video_grid_thw {t}x{h}x{w} is not a valid grid for {merge}x{merge} patch merging")
        start, end = self.video_span(video_token_id)
        expected = t * h * w // (merge * merge)
        if end - start != expected:
            raise InputError(
                f"the video span in input_ids has {end - start} tokens but video_grid_thw {t}x{h}x{w} "
                f"gives {expected}"
            )
        if self.pixel_values_videos.shape[0] != t * h * w:
            raise InputError(
                f"pixel_values_videos has {self.pixel_values_videos.shape[0]} rows; video_grid_thw {t}x{h}x{w} "
                f"needs {t * h * w}"
            )
        if patch_dim is not None and self.pixel_values_videos.shape[1] != patch_dim:
            raise InputError(
                f"pixel_values_videos rows have {self.pixel_values_videos.shape[1]} values; the model expects {patch_dim}"
            )
        return self

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        return save_npz(
            {k: getattr(self, k) for k in self.keys}, path, overwrite=overwrite
        )


def case_from_video(
    frames: np.ndarray,
    prompt: str,
    *,
    tokenizer,
    patch_size: int,
    temporal_patch_size: int,
    merge_size: int,
    video_pixels: tuple[int, int] | None = None,
) -> Case:
    """Preprocess uint8 frames [T, H, W, 3] like the Qwen2-VL processor and build the chat prompt."""
    from ffexport.prompt import build_video_prompt_ids
    from ffexport.video import preprocess_video

    min_pixels, max_pixels = video_pixels or (None, None)
    pixels, grid = preprocess_video(
        frames, patch_size=patch_size, temporal_patch_size=temporal_patch_size, merge_size=merge_size,
        min_pixels=min_pixels, max_pixels=max_pixels,
    )
    t, h, w = (int(x) for x in grid.reshape(-1))
    ids = build_video_prompt_ids(tokenizer, num_video_tokens=t * h * w // merge_size**2, prompt=prompt)
    return Case(np.asarray(ids, dtype=np.int64).reshape(1, -1), pixels, grid.reshape(1, 3).astype(np.int64))


def load_case(path: str | os.PathLike[str]) -> Case:
    """Read ``case.npz`` (or a case folder of ``.npy`` files, :mod:`ffexport.casedir`); any structural
    problem becomes one :class:`InputError` line."""
    p = Path(path)
    if p.is_dir():
        from ffexport.casedir import load_case_dir

        return load_case_dir(p)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        with np.load(p, allow_pickle=False) as data:
            for keys in (FIXED_TOWER_CASE_KEYS, FRAMES_AS_IMAGES_CASE_KEYS):
                if "video_grid_thw" not in data.files and set(keys) <= set(data.files):
                    return fixed_tower_case_from_arrays({k: data[k] for k in keys}, source=str(p))
            missing = [k for k in CASE_KEYS if k not in data.files]
            if missing:
                raise InputError(
                    f"{p} lacks {', '.join(missing)} (a case holds {', '.join(CASE_KEYS)}, or for fixed-size "
                    f"vision towers {', '.join(FIXED_TOWER_CASE_KEYS)} or {', '.join(FRAMES_AS_IMAGES_CASE_KEYS)})"
                )
            arrays = {k: data[k] for k in CASE_KEYS}
    except InputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"{p} is not a readable .npz file ({e})") from e
    return case_from_arrays(arrays, source=str(p))


def case_from_arrays(arrays: dict[str, np.ndarray], *, source: str = "case") -> Case:
    ids, pixels, grid = (np.asarray(arrays[k]) for k in CASE_KEYS)
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or ids.shape[0] != 1 or ids.shape[1] == 0:
        raise InputError(f"{source}: input_ids must have shape [1, L], got {list(ids.shape)}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"{source}: input_ids must be integers, got {ids.dtype}")
    if pixels.ndim != 2 or not np.issubdtype(pixels.dtype, np.floating):
        raise InputError(f"{source}: pixel_values_videos must be a 2-D float array, got {pixels.dtype} {list(pixels.shape)}")
    if not np.isfinite(pixels).all():
        raise InputError(f"{source}: pixel_values_videos contains NaN or infinite values")
    grid = grid.reshape(-1)
    if grid.size != 3 or not np.issubdtype(grid.dtype, np.integer):
        raise InputError(f"{source}: video_grid_thw must hold one (t, h, w) integer row, got {list(np.shape(arrays['video_grid_thw']))}")
    return Case(ids.astype(np.int64), pixels.astype(np.float32), grid.astype(np.int64).reshape(1, 3))


def fixed_tower_case_from_arrays(arrays: dict[str, np.ndarray], *, source: str = "case") -> Case:
    """A fixed-size-tower case (LLaVA families, InternVL) from its processor's arrays, checked for shape
    and type: ``pixel_values_videos`` [1, frames, 3, H, W] or InternVL's ``pixel_values`` [frames, 3, H, W]."""
    ids, mask = np.asarray(arrays["input_ids"]), np.asarray(arrays["attention_mask"])
    name = "pixel_values_videos" if "pixel_values_videos" in arrays else "pixel_values"
    pixels = np.asarray(arrays[name])
    if ids.ndim != 2 or ids.shape[0] != 1 or ids.shape[1] == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"{source}: input_ids must be integers of shape [1, L], got {ids.dtype} {list(ids.shape)}")
    if mask.shape != ids.shape or not (mask == 1).all():
        raise InputError(f"{source}: attention_mask must be all ones of input_ids' shape (batch 1, no padding)")
    shape_ok = pixels.ndim == 5 and pixels.shape[0] == 1 if name == "pixel_values_videos" else pixels.ndim == 4
    if not shape_ok or pixels.shape[-3] != 3 or not np.issubdtype(pixels.dtype, np.floating):
        wanted = "[1, frames, 3, H, W]" if name == "pixel_values_videos" else "[frames, 3, H, W]"
        raise InputError(f"{source}: {name} must be float {wanted}, got {pixels.dtype} {list(pixels.shape)}")
    if not np.isfinite(pixels).all():
        raise InputError(f"{source}: {name} contains NaN or infinite values")
    return Case(ids.astype(np.int64), pixels.astype(np.float32), None, attention_mask=mask.astype(np.int64))
