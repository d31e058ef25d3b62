"""A case as a folder of ``.npy`` files, for runtimes without a zip reader (the C++ runtime, ``cpp/``).

::

    DIR/input_ids.npy             int64   [1, L]
    DIR/pixel_values_videos.npy   float32 [t*h*w, C*temporal_patch*patch*patch]
    DIR/video_grid_thw.npy        int64   [1, 3]

A fixed-size tower's case (LLaVA-NeXT-Video, LLaVA-OneVision) holds its processor's names instead::

    DIR/input_ids.npy             int64   [1, L]
    DIR/attention_mask.npy        int64   [1, L]
    DIR/pixel_values_videos.npy   float32 [1, frames, 3, S, S]

and InternVL's (frames through the image path) its processor's ``pixel_values``::

    DIR/input_ids.npy             int64   [1, L]: frame blocks of video tokens, text between them
    DIR/attention_mask.npy        int64   [1, L]
    DIR/pixel_values.npy          float32 [frames, 3, S, S]

The same arrays, names, dtypes and checks as ``case.npz`` (:mod:`ffexport.case`); positions are not
stored (every runtime computes them: M-RoPE from ``input_ids`` and ``video_grid_thw``, or 1D).
``ffexport case --format npy --out DIR`` writes one; :func:`ffexport.case.load_case` reads either form.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ffexport.case import (
    CASE_KEYS,
    FIXED_TOWER_CASE_KEYS,
    FRAMES_AS_IMAGES_CASE_KEYS,
    Case,
    case_from_arrays,
    fixed_tower_case_from_arrays,
)
from ffexport.errors import InputError
from ffexport.io import check_writable, write_atomic


def case_dir_files(path: str | os.PathLike[str], keys: tuple[str, ...] = CASE_KEYS) -> dict[str, Path]:
    """``{array name: DIR/name.npy}`` for the arrays of a case (``keys``: a Qwen-grid case's by default)."""
    return {key: Path(path) / f"{key}.npy" for key in keys}


def save_case_dir(case: Case, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``case`` as ``path/<array>.npy``; refuses to replace existing files unless ``overwrite``.

    A new folder appears complete or not at all (written beside it, then renamed); in an existing
    folder each file is replaced atomically.
    """
    if case.keys not in (CASE_KEYS, FIXED_TOWER_CASE_KEYS, FRAMES_AS_IMAGES_CASE_KEYS):
        raise InputError("a case folder of .npy files holds Qwen-grid, LLaVA-style and InternVL cases (for the C++ "
                         "runtime); save this family's case as case.npz")
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise InputError(f"{target} exists and is not a directory; a case folder needs a directory")
    files = case_dir_files(target, case.keys)
    for file in files.values():
        check_writable(file, overwrite=overwrite)
    arrays = {key: np.ascontiguousarray(getattr(case, key)) for key in case.keys}
    if target.is_dir():
        for key, file in files.items():
            write_atomic(file, lambda f, a=arrays[key]: np.save(f, a, allow_pickle=False), overwrite=overwrite)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        for key, array in arrays.items():
            np.save(tmp / f"{key}.npy", array, allow_pickle=False)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the usual permissions
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_case_dir(path: str | os.PathLike[str]) -> Case:
    """Read a case folder; a missing or malformed array is one :class:`InputError` line. A folder without
    ``video_grid_thw.npy`` but with ``attention_mask.npy`` is a fixed-size tower's case (InternVL's when it
    holds ``pixel_values.npy`` and no ``pixel_values_videos.npy``)."""
    folder = Path(path)
    fixed = not (folder / "video_grid_thw.npy").is_file() and (folder / "attention_mask.npy").is_file()
    images = fixed and not (folder / "pixel_values_videos.npy").is_file() and (folder / "pixel_values.npy").is_file()
    keys = FRAMES_AS_IMAGES_CASE_KEYS if images else FIXED_TOWER_CASE_KEYS if fixed else CASE_KEYS
    files = case_dir_files(path, keys)
    missing = [f.name for f in files.values() if not f.is_file()]
    if missing:
        raise InputError(f"{path} lacks {', '.join(missing)} (a case folder holds "
                         f"{', '.join(f.name for f in files.values())})")
    arrays = {}
    for key, file in files.items():
        try:
            arrays[key] = np.load(file, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise InputError(f"{file} is not a readable .npy file ({e})") from e
    if fixed:
        return fixed_tower_case_from_arrays(arrays, source=str(path))
    return case_from_arrays(arrays, source=str(path))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
