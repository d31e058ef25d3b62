"""Run a build's TensorRT engines (``ffexport build --backend tensorrt``) in place of its ONNX graphs.

An engine runs only on the TensorRT version that built it and on GPUs of the architecture it was
built for. ``ffexport build`` records both next to every engine (``engines.*`` in the manifest:
``{"file", "tensorrt", "gpu": {"name", "compute_capability"}, "plugins"}``, or for engines TensorRT-RTX
built ahead of time ``{"file", "runtime": "tensorrt-rtx", "tensorrt_rtx", "compute_capabilities", "run": false}``);
:func:`engine_mismatch`
compares such a record with this machine, and :class:`EngineGraph` refuses, with one line, to load
an engine that does not match, before TensorRT is asked to deserialize it (a mismatched engine
otherwise fails deep inside TensorRT, or on some versions loads and computes garbage).

Torch-free, like the rest of :mod:`ffexport.runtime`: engines run through Polygraphy's ``TrtRunner``
(TensorRT's Python bindings and Polygraphy's own CUDA wrapper), and the GPU is identified with
``nvidia-smi``. Plugin libraries (``libffexport_plugins.so`` for ``--ops plugin`` builds) are loaded
into the process before any engine is deserialized: their creators register themselves.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ffexport.errors import InputError, RunError
from ffexport.runtime.manifest import REBUILD, Manifest

log = logging.getLogger(__name__)

INSTALL_HINT = ("TensorRT is not installed: the tensorrt backend needs TensorRT 10 or 11 and Polygraphy "
                "(pip install 'ffexport[tensorrt]' on a machine with an NVIDIA GPU); or run the ONNX graphs "
                "with --backend onnxruntime")


@dataclass(frozen=True)
class Machine:
    """What decides whether an engine can run here."""

    tensorrt: str | None  # TensorRT version, None when not installed
    gpu_name: str | None
    compute_capability: str | None  # "9.0"; None when no GPU is visible
    tensorrt_rtx: str | None = None  # TensorRT-RTX version, None when not installed


def _module_version(name: str) -> str | None:
    try:
        module = importlib.import_module(name)
    except ImportError:
        return None
    return getattr(module, "__version__", None)


def this_machine() -> Machine:
    """TensorRT's and TensorRT-RTX's versions and GPU 0's name and compute capability on this machine."""
    version = _module_version("tensorrt")
    name = capability = None
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=20, check=True).stdout.strip().splitlines()
            if out:
                name, capability = (part.strip() for part in out[0].rsplit(",", 1))
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            log.debug("nvidia-smi gave no GPU information: %s", e)
    return Machine(version, name, capability, _module_version("tensorrt_rtx"))


def engine_mismatch(record: dict[str, Any], machine: Machine) -> str | None:
    """Why the engine described by ``record`` cannot run on ``machine``; None when it can.

    TensorRT versions must be equal (engines are not portable across versions); GPUs must share the
    compute capability (the architecture the kernels were chosen for); the GPU's name may differ.
    """
    name = record.get("file", "engine")
    if record.get("runtime") == "tensorrt-rtx":
        return _rtx_engine_mismatch(name, record, machine)
    built_with = record.get("tensorrt")
    if machine.tensorrt is None:
        return INSTALL_HINT
    if built_with != machine.tensorrt:
        return (f"{name} was built by TensorRT {built_with}; this machine has TensorRT {machine.tensorrt}: rebuild "
                "the engines here with `ffexport build --backend tensorrt`")
    gpu = record.get("gpu") or {}
    if machine.compute_capability is None:
        return f"{name} needs an NVIDIA GPU (built for {gpu.get('name')}); none is visible here"
    if gpu.get("compute_capability") != machine.compute_capability:
        return (f"{name} was built for {gpu.get('name')} (compute capability {gpu.get('compute_capability')}); "
                f"this GPU is {machine.gpu_name} (compute capability {machine.compute_capability}): rebuild the "
                "engines here with `ffexport build --backend tensorrt`")
    return None


def _rtx_engine_mismatch(name: str, record: dict[str, Any], machine: Machine) -> str | None:
    """Why an engine TensorRT-RTX built ahead of time cannot run here; None when it can."""
    version, wanted = record.get("tensorrt_rtx"), list(record.get("compute_capabilities") or [])
    built = (f"{name} was built ahead of time by TensorRT-RTX {version} for GPUs of compute capability "
             f"{' or '.join(wanted)} and never run")
    if machine.tensorrt_rtx is None:
        return f"{built}; TensorRT-RTX is not installed here (pip install 'ffexport[tensorrt-rtx]' on that GPU's machine)"
    if machine.tensorrt_rtx != version:
        return f"{built}; this machine has TensorRT-RTX {machine.tensorrt_rtx}: rebuild with `ffexport build --backend tensorrt-rtx`"
    if machine.compute_capability is None:
        return f"{built}; no NVIDIA GPU is visible here"
    if machine.compute_capability not in wanted:
        return (f"{built}; this GPU is {machine.gpu_name} (compute capability {machine.compute_capability}): rebuild "
                "with `ffexport build --backend tensorrt-rtx --compute-capability SM...` for it")
    try:
        from polygraphy import config
    except ImportError:
        return f"{name} runs through Polygraphy: pip install polygraphy"
    if not config.USE_TENSORRT_RTX:
        return (f"{name} is a TensorRT-RTX engine: set POLYGRAPHY_USE_TENSORRT_RTX=1 so that Polygraphy runs it with "
                "TensorRT-RTX")
    return None


def engine_record(manifest: Manifest, kind: str, bucket: str | None) -> dict[str, Any]:
    """The manifest's record of the engine for graph ``kind`` (of ``bucket``, for vision/prefill)."""
    raw = manifest.raw
    if bucket is None:
        engines = raw.get("engines")
        where = "the build"
    else:
        entry = next((b for b in raw.get("buckets", []) if b.get("name") == bucket), {})
        engines = entry.get("engines")
        where = f"bucket {bucket}"
    record = engines.get(kind) if isinstance(engines, dict) else None
    if not isinstance(record, dict) or not isinstance(record.get("file"), str):
        raise InputError(f"{manifest.root}: {where} has no TensorRT engine for its {kind} graph (it was built with "
                         "--backend onnxruntime?); rebuild with `ffexport build --backend tensorrt` or run with "
                         "--backend onnxruntime")
    return record


class PluginLibraries:
    """Loads plugin libraries once per process (their creators register themselves on load)."""

    _loaded: dict[str, ctypes.CDLL] = {}

    def __call__(self, paths: Sequence[str | Path]) -> None:
        for path in paths:
            key = str(Path(path).resolve())
            if key in self._loaded:
                continue
            if not Path(key).is_file():
                raise InputError(f"plugin library {path} does not exist")
            try:
                self._loaded[key] = ctypes.CDLL(key, mode=ctypes.RTLD_GLOBAL)
            except OSError as e:
                raise RunError(f"cannot load plugin library {path}: {e}") from e


class EngineGraph:
    """One TensorRT engine of a build, with the same ``run(**feeds) -> dict`` as the ONNX graphs."""

    def __init__(self, manifest: Manifest, record: dict[str, Any], *, plugins: Sequence[str | Path] = (),
                 machine: Machine | None = None) -> None:
        machine = machine or this_machine()
        problem = engine_mismatch(record, machine)
        if problem is not None:
            raise RunError(problem)
        needed = record.get("plugins") or []
        if needed and not plugins:
            raise InputError(f"{record['file']} was built with the plugin libraries {', '.join(map(str, needed))}; "
                             "pass them with --plugins")
        PluginLibraries()(plugins)
        self.path = manifest.path(record["file"])
        if not self.path.is_file():
            raise RunError(f"{self.path} is missing: {REBUILD}")
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        try:
            self.runner = TrtRunner(EngineFromBytes(BytesFromPath(str(self.path))))
            self.runner.activate()
        except Exception as e:  # TensorRT and Polygraphy raise many types; all mean "no engine"
            raise RunError(f"TensorRT cannot load {self.path} ({' '.join(str(e).split())[:300]}): {REBUILD}") from e
        from polygraphy.datatype import DataType

        self.inputs = {name: np.dtype(DataType.to_dtype(DataType.from_dtype(meta.dtype), "numpy"))
                       for name, meta in self.runner.get_input_metadata().items()}

    def run(self, **feeds: np.ndarray) -> dict[str, np.ndarray]:
        missing = sorted(set(self.inputs) - set(feeds))
        if missing:
            raise RunError(f"{self.path} takes inputs {', '.join(self.inputs)}; the runtime has "
                           f"{', '.join(feeds)}: {REBUILD}")
        typed = {name: np.ascontiguousarray(feeds[name], dtype=dtype) for name, dtype in self.inputs.items()}
        try:
            return {name: np.array(value) for name, value in self.runner.infer(typed).items()}
        except Exception as e:
            raise RunError(f"TensorRT failed running {self.path} ({' '.join(str(e).split())[:300]})") from e

    def close(self) -> None:
        self.runner.deactivate()
