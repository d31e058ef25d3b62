"""Atomic file output (temp file in the same folder + rename) and refusal to overwrite silently."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from ffexport.errors import InputError


def check_writable(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Refuse to replace an existing file unless ``overwrite``; say how to proceed."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise InputError(f"{p} already exists; pass --overwrite to replace it")
    if p.is_dir():
        raise InputError(f"{p} is a directory, not a file")
    return p


def write_atomic(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None], *, overwrite: bool) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place.

    An interrupted write leaves no file at ``path`` (only the user's previous one, if any).
    """
    p = check_writable(path, overwrite=overwrite)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".partial", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_json(data: Any, path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    text = (json.dumps(data, indent=2) + "\n").encode()
    return write_atomic(path, lambda f: f.write(text), overwrite=overwrite)


def save_npz(arrays: dict[str, np.ndarray], path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    return write_atomic(path, lambda f: np.savez(f, **arrays), overwrite=overwrite)
