"""TensorRT engines from the build's ONNX graphs, with Polygraphy's loaders.

Written against the documented TensorRT 10/11 and Polygraphy APIs; no machine of this project has
a TensorRT builder, so this path runs only where TensorRT is installed (its tests skip with the
reason "TensorRT not installed" elsewhere). What it does:

- networks are parsed strongly typed (``NetworkFromOnnxPath(..., strongly_typed=True)``): the graph
  carries its precision (fp32, or fp16 with fp32 kept where numerics need it). TensorRT 11 has no
  FP16/BF16 builder flags; TensorRT 10 accepts strongly typed networks too, so both take one path;
- one optimization profile per graph, from the graph's varying sizes (prefill: text length 1 to
  ``max_text``; decode: each layer's cache length; embed: prompt length);
- one timing cache for the whole build (loaded and saved around every engine);
- plugin libraries (``--plugins lib.so``) loaded before parsing;
- each engine recorded with the TensorRT version and the GPU (name, compute capability) it was built
  for: an engine runs only on the same TensorRT version and GPU architecture.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ffexport.errors import BuildError

log = logging.getLogger(__name__)

INSTALL_HINT = ("TensorRT is not installed: install TensorRT 10 or 11 for your CUDA version "
                "(pip install 'ffexport[tensorrt]' on a machine with an NVIDIA GPU); the ONNX graphs do not need it")


def tensorrt_version() -> str | None:
    """The installed TensorRT's version, or None."""
    try:
        import tensorrt
    except ImportError:
        return None
    return getattr(tensorrt, "__version__", None)


def require_tensorrt() -> str:
    version = tensorrt_version()
    if version is None:
        raise BuildError(INSTALL_HINT)
    try:
        import polygraphy.backend.trt  # noqa: F401
    except ImportError as e:
        raise BuildError("Polygraphy is not installed: pip install polygraphy") from e
    return version


def gpu_record() -> dict[str, Any]:
    """Name and compute capability of the GPU engines are built for (CUDA device 0)."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return {"name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}
    except Exception as e:  # a broken CUDA install: the engine build below will say more
        log.debug("no GPU information: %s", e)
    raise BuildError("no CUDA GPU is visible; TensorRT engines are built on the GPU they will run on")


@dataclass(frozen=True)
class ProfileShape:
    """min / opt / max shape of one input."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


class EngineFromGraph:
    """``EngineFromGraph(timing_cache=..., plugins=...)(onnx_path, engine_path, profile) -> record``."""

    def __init__(self, *, timing_cache: Path, plugins: tuple[str, ...] = (), workspace_bytes: int | None = None) -> None:
        self.version = require_tensorrt()
        self.timing_cache = Path(timing_cache)
        self.plugins = plugins
        self.workspace_bytes = workspace_bytes

    def __call__(self, onnx_path: Path, engine_path: Path, profile: list[ProfileShape]) -> dict[str, Any]:
        import tensorrt as trt
        from polygraphy.backend.trt import (
            CreateConfig, EngineFromNetwork, LoadPlugins, NetworkFromOnnxPath, Profile, SaveEngine,
        )

        network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)
        if self.plugins:
            network = LoadPlugins(plugins=list(self.plugins), obj=network)
        trt_profile = Profile()
        for shape in profile:
            trt_profile.add(shape.name, min=shape.min, opt=shape.opt, max=shape.max)
        config_kwargs: dict[str, Any] = {"profiles": [trt_profile]}
        if self.timing_cache.exists():
            config_kwargs["load_timing_cache"] = str(self.timing_cache)
        if self.workspace_bytes:
            config_kwargs["memory_pool_limits"] = {trt.MemoryPoolType.WORKSPACE: self.workspace_bytes}
        engine = EngineFromNetwork(network, config=CreateConfig(**config_kwargs),
                                   save_timing_cache=str(self.timing_cache))
        tmp = engine_path.with_name(f".{engine_path.name}.partial")
        try:
            SaveEngine(engine, str(tmp))()
        except Exception as e:  # TensorRT and Polygraphy raise many types; all mean "no engine"
            tmp.unlink(missing_ok=True)
            raise BuildError(f"TensorRT could not build {onnx_path.name}: {type(e).__name__}: {e}") from e
        tmp.replace(engine_path)
        return {"file": engine_path.name, "tensorrt": self.version, "gpu": gpu_record(),
                "plugins": list(self.plugins)}


def run_engine(engine_path: Path, feeds: dict[str, Any]) -> dict[str, Any]:
    """Run a saved engine once with Polygraphy's TrtRunner (for the parity gate)."""
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    with TrtRunner(EngineFromBytes(BytesFromPath(str(engine_path)))) as runner:
        return dict(runner.infer(feeds))


def check_engine_record(record: dict[str, Any]) -> None:
    """Refuse an engine built by another TensorRT version or for another GPU architecture."""
    version = tensorrt_version()
    if version is None:
        raise BuildError(INSTALL_HINT)
    if record.get("tensorrt") != version:
        raise BuildError(f"{record.get('file')} was built by TensorRT {record.get('tensorrt')}; this machine has "
                         f"{version}: rebuild the engines here (ffexport build --backend tensorrt)")
    here = gpu_record()
    if record.get("gpu", {}).get("compute_capability") != here["compute_capability"]:
        raise BuildError(f"{record.get('file')} was built for {record.get('gpu')}; this GPU is {here}: rebuild the "
                         "engines here")
