"""The native build (top-level CMakeLists.txt) for the plugin tests, once per session.

``native_build`` configures the project with cmake into a temporary folder (or into
``$FFEXPORT_NATIVE_BUILD_DIR`` when set, to reuse a build between runs) and builds only the targets a
test asks for. ``reference`` loads the CPU reference (libffexport_reference.so) with ctypes.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


class NativeBuild:
    """A configured build folder; ``build(*targets)`` builds each target once (fails with cmake's output)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._built: set[str] = set()
        self.configure_output = self._run(
            ["cmake", "-S", str(REPO), "-B", str(folder), f"-DPython3_EXECUTABLE={sys.executable}"],
            "configuring the native build",
        )
        self.cache = self._read_cache()

    def _read_cache(self) -> dict[str, str]:
        cache = {}
        for line in (self.folder / "CMakeCache.txt").read_text().splitlines():
            if line and not line.startswith(("#", "//")) and "=" in line:
                key, value = line.split("=", 1)
                cache[key.split(":", 1)[0]] = value
        return cache

    def _run(self, command: list[str], what: str) -> str:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"{what} failed ({' '.join(command)}):\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}")
        return result.stdout

    def has_cuda(self) -> bool:
        return self.cache.get("FFEXPORT_CUDA") == "ON"

    def tensorrt_include(self) -> str | None:
        value = self.cache.get("FFEXPORT_TENSORRT_INCLUDE_DIR", "")
        return None if not value or value.endswith("NOTFOUND") else value

    def tensorrt_lib(self) -> str | None:
        value = self.cache.get("FFEXPORT_TENSORRT_LIB", "")
        return None if not value or value.endswith("NOTFOUND") else value

    def build(self, *targets: str) -> None:
        wanted = [t for t in targets if t not in self._built]
        if wanted:
            self._run(["cmake", "--build", str(self.folder), "-j2", "--target", *wanted], f"building {wanted}")
            self._built.update(wanted)


@pytest.fixture(scope="session")
def native_build(tmp_path_factory) -> NativeBuild:
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    folder = os.environ.get("FFEXPORT_NATIVE_BUILD_DIR")
    return NativeBuild(Path(folder) if folder else tmp_path_factory.mktemp("native-build"))


def _pointer(array: np.ndarray) -> ctypes.c_void_p:
    assert array.flags["C_CONTIGUOUS"]
    return ctypes.c_void_p(array.ctypes.data)


def _bits(x: torch.Tensor) -> np.ndarray:
    """A tensor's raw elements as numpy (bf16 as its int16 bit pattern)."""
    x = x.contiguous()
    return x.view(torch.int16).numpy() if x.dtype == torch.bfloat16 else x.numpy()


class Reference:
    """ctypes binding of the C ABI in plugins/common/frameFusionReferenceApi.h."""

    def __init__(self, path: Path) -> None:
        self.lib = ctypes.CDLL(str(path))
        i64, i32, ptr, size = ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p, ctypes.c_size_t
        signatures = {
            "ffe_validate_merge": [i64, i64, i32, i64, i64, i64, ptr, size],
            "ffe_validate_prune": [i64, i32, i64, ptr, size],
            "ffe_merge": [ptr, i32, i64, i64, ptr, i64, i64, i64, ptr, ptr, ptr, size],
            "ffe_prune": [ptr, i64, i64, ptr, ptr, size],
            "ffe_patch_order": [ptr, i64, i64, ptr, ptr, size],
            "ffe_chain_closeness": [ptr, i32, i64, i64, ptr, i64, ptr, ptr, size],
            "ffe_top_flags": [ptr, i64, i64, i32, ptr, ptr, size],
        }
        for name, args in signatures.items():
            function = getattr(self.lib, name)
            function.argtypes = args
            function.restype = ctypes.c_int

    @staticmethod
    def _message() -> ctypes.Array:
        return ctypes.create_string_buffer(512)

    def _call(self, name: str, *args) -> tuple[int, str]:
        message = self._message()
        code = getattr(self.lib, name)(*args, message, len(message))
        return code, message.value.decode()

    def validate_merge(self, n: int, d: int, dtype_code: int, remove: int, patches: int, max_run: int):
        return self._call("ffe_validate_merge", n, d, dtype_code, remove, patches, max_run)

    def validate_prune(self, n: int, dtype_code: int, keep: int):
        return self._call("ffe_validate_prune", n, dtype_code, keep)

    def merge_raw(self, visual: torch.Tensor, patch_ids: torch.Tensor, remove: int, patches: int, max_run: int,
                  *, dtype_code: int | None = None):
        """Returns (code, message, kept, values) without checking the code."""
        n, d = visual.shape
        raw = _bits(visual)
        ids = np.ascontiguousarray(patch_ids.numpy(), dtype=np.int64)
        survivors = max(n - remove, 1)
        kept = np.zeros(survivors, dtype=np.int64)
        out = torch.zeros(survivors, d, dtype=visual.dtype)
        out_raw = _bits(out)  # shares memory with `out`
        code, message = self._call(
            "ffe_merge", _pointer(raw), DTYPE_CODES[visual.dtype] if dtype_code is None else dtype_code, n, d,
            _pointer(ids), remove, patches, max_run, _pointer(kept), _pointer(out_raw),
        )
        return code, message, torch.from_numpy(kept), out

    def merge(self, visual, patch_ids, remove, patches, max_run):
        code, message, kept, values = self.merge_raw(visual, patch_ids, remove, patches, max_run)
        assert code == 0, message
        return kept, values

    def prune_raw(self, importance: torch.Tensor, keep: int):
        values = np.ascontiguousarray(importance.numpy(), dtype=np.float32)
        kept = np.zeros(max(keep, 1), dtype=np.int64)
        code, message = self._call("ffe_prune", _pointer(values), values.shape[0], keep, _pointer(kept))
        return code, message, torch.from_numpy(kept)

    def prune(self, importance, keep):
        code, message, kept = self.prune_raw(importance, keep)
        assert code == 0, message
        return kept

    def patch_order(self, patch_ids: torch.Tensor, patches: int) -> torch.Tensor:
        ids = np.ascontiguousarray(patch_ids.numpy(), dtype=np.int64)
        order = np.zeros(ids.shape[0], dtype=np.int64)
        code, message = self._call("ffe_patch_order", _pointer(ids), ids.shape[0], patches, _pointer(order))
        assert code == 0, message
        return torch.from_numpy(order)

    def chain_closeness(self, visual: torch.Tensor, patch_ids: torch.Tensor, patches: int) -> torch.Tensor:
        n, d = visual.shape
        raw = _bits(visual)
        ids = np.ascontiguousarray(patch_ids.numpy(), dtype=np.int64)
        key = np.zeros(n, dtype=np.float32)
        code, message = self._call(
            "ffe_chain_closeness", _pointer(raw), DTYPE_CODES[visual.dtype], n, d, _pointer(ids), patches, _pointer(key)
        )
        assert code == 0, message
        return torch.from_numpy(key)

    def top_flags(self, scores: torch.Tensor, count: int, *, relative: bool) -> torch.Tensor:
        values = np.ascontiguousarray(scores.numpy(), dtype=np.float32)
        flags = np.zeros(values.shape[0], dtype=np.uint8)
        code, message = self._call("ffe_top_flags", _pointer(values), values.shape[0], count, int(relative), _pointer(flags))
        assert code == 0, message
        return torch.from_numpy(flags).to(torch.float32)


@pytest.fixture(scope="session")
def reference(native_build) -> Reference:
    native_build.build("ffexport_reference")
    return Reference(native_build.folder / "libffexport_reference.so")
