"""``manifest.json`` (``ffexport.manifest/1``): what a build holds. See docs/build-format.md."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import onnx

from ffexport.errors import InputError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "ffexport.manifest/1"
_ONNX_TYPES = {v: k for k, v in onnx.TensorProto.DataType.items()}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def file_record(directory: Path, name: str) -> dict[str, Any]:
    path = directory / name
    return {"bytes": path.stat().st_size, "sha256": sha256(path)}


def file_intact(directory: Path, name: str, record: dict[str, Any]) -> bool:
    path = directory / name
    return path.is_file() and path.stat().st_size == record["bytes"] and sha256(path) == record["sha256"]


def graph_io(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Inputs and outputs of a saved graph: name, dtype, shape (int or the name of a varying size)."""
    model = onnx.load(str(path), load_external_data=False)

    def describe(values) -> list[dict[str, Any]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
            out.append({"name": v.name, "dtype": _ONNX_TYPES[t.elem_type].lower().replace("float", "float32")
                        if t.elem_type == onnx.TensorProto.FLOAT else _ONNX_TYPES[t.elem_type].lower(),
                        "shape": shape})
        return out

    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}


def now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def load_manifest(directory: Path) -> dict[str, Any] | None:
    path = directory / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path} is not readable JSON ({e}); remove it or build into a new --out") from e
    if data.get("format") != MANIFEST_FORMAT:
        raise InputError(f"{path} is not an {MANIFEST_FORMAT} manifest; build into a new --out")
    return data


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Commit: readers see the old manifest or the new one, never a partial file, and the new one
    only lists files that are on disk. The files it lists are flushed to disk first (``fsync``), then
    the manifest is written beside its final name, flushed, renamed into place and the directory
    flushed, so after a power cut the manifest found is one whose files are complete."""
    directory = Path(directory)
    for name in manifest.get("files", {}):
        _fsync(directory / name)
    for folder in {(directory / name).parent for name in manifest.get("files", {})} | {directory}:
        _fsync(folder)  # the files' names (renamed into place) before the manifest that lists them
    tmp = directory / f".{MANIFEST}.{os.getpid()}.partial"
    try:
        with open(tmp, "wb") as f:
            f.write((json.dumps(manifest, indent=2) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / MANIFEST)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(directory)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
