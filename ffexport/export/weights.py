"""One weight file for a whole build: every graph's parameters stored once, by content.

Graphs are captured with their weights inline; :class:`SharedWeights` moves every initializer of
at least ``MIN_EXTERNAL_BYTES`` into ``weights.bin`` (ONNX external data), keyed by content, so the
same tensor in another graph reuses the stored bytes (every prefill and the decode step share the
decoder; every vision graph shares the encoder). Keying by content rather than by name matters: the
exporter's optimizer folds a weight's transpose into a new, renamed constant, identical in every
graph that uses that weight. Small constants stay inline.

The file only grows by appending; its index (content hash -> offset, length) is saved beside it,
so a resumed build reuses what an earlier run stored. The build's manifest is the commit record:
it holds the committed length of ``weights.bin`` (and the SHA-256 of those bytes). Opening the store
with ``committed=`` drops what lies past it (index entries and bytes appended by a run that never
committed them), so the bytes a valid manifest points at are never rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import onnx

WEIGHTS_FILE = "weights.bin"
INDEX_FILE = "weights.index.json"
#: parameters smaller than this stay inline (norm weights, biases of tiny models)
MIN_EXTERNAL_BYTES = 1024
_ALIGN = 64


class SharedWeights:
    """Content-addressed external data for the graphs of one build directory."""

    def __init__(self, directory: str | os.PathLike[str], *, committed: int = 0) -> None:
        """``committed``: the length of ``weights.bin`` the manifest records (0 without a manifest)."""
        self.directory = Path(directory)
        self.path = self.directory / WEIGHTS_FILE
        self.index_path = self.directory / INDEX_FILE
        self.index: dict[str, list[int]] = {}
        if self.index_path.exists() and committed > 0:
            try:
                stored = json.loads(self.index_path.read_text())["tensors"]
            except (OSError, ValueError, KeyError):
                stored = {}
            self.index = {k: v for k, v in stored.items() if v[0] + v[1] <= committed}
        self.size = committed
        if self.path.exists() and self.path.stat().st_size > committed:
            # bytes appended by a run that never committed them: drop them
            with open(self.path, "r+b") as f:
                f.truncate(committed)
        elif not self.path.exists():
            self.path.touch()
        self._save_index()

    def externalize(self, model: onnx.ModelProto) -> int:
        """Move ``model``'s large initializers to the shared file; return bytes newly stored."""
        added = 0
        with open(self.path, "ab") as f:
            for tensor in model.graph.initializer:
                if tensor.data_location == onnx.TensorProto.EXTERNAL:
                    continue
                data = tensor.raw_data or onnx.numpy_helper.to_array(tensor).tobytes()
                if len(data) < MIN_EXTERNAL_BYTES:
                    continue
                key = f"{tensor.data_type}:{hashlib.sha256(data).hexdigest()}"
                if key not in self.index:
                    offset, self.size = append_aligned(f, data, self.size)
                    self.index[key] = [offset, len(data)]
                    added += len(data)
                offset, length = self.index[key]
                _point_to(tensor, WEIGHTS_FILE, offset, length)
        self._save_index()
        return added

    def _save_index(self) -> None:
        save_index(self.directory, self.index)


def append_aligned(f, data, size: int, hasher=None) -> tuple[int, int]:
    """Append ``data`` to ``f`` (now ``size`` bytes long) at the next 64-byte boundary; feed the
    padding and the data to ``hasher`` when given. Returns (offset of the data, new size)."""
    pad = (-size) % _ALIGN
    for chunk in (b"\0" * pad, data):
        f.write(chunk)
        if hasher is not None:
            hasher.update(chunk)
    return size + pad, size + pad + len(data)


def save_index(directory: Path, index: dict[str, list[int]]) -> None:
    """Write ``weights.index.json`` (tensor key -> [offset, length]) atomically."""
    tmp = directory / (INDEX_FILE + ".partial")
    tmp.write_text(json.dumps({"file": WEIGHTS_FILE, "tensors": index}))
    os.replace(tmp, directory / INDEX_FILE)


def _point_to(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
        tensor.ClearField(field)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
