"""TensorRT engines from the build's ONNX graphs: ``ffexport build --backend tensorrt|tensorrt-rtx``.

Both backends take one path (:class:`EngineFromGraph`, on :mod:`ffexport.export.trt_toolkit`):

- the graph is parsed strongly typed by NVIDIA's ONNX parser: the graph carries its precision (fp32,
  or fp16/bf16 with fp32 kept where numerics need it); TensorRT 11 has no FP16/BF16 builder flags and
  TensorRT 10 and TensorRT-RTX accept strongly typed networks too;
- one optimization profile per graph (:class:`~ffexport.export.trt_toolkit.EngineProfiles`: prefill text
  length 1 to ``max_text`` around the bucket's video; decode: each layer's cache length; embed: prompt
  length);
- the engine is written atomically (a temporary file, then a rename) and recorded with what decides
  where it can run.

``--backend tensorrt`` (TensorRT 10/11 with Polygraphy, on the GPU the engine is for): one timing cache
per build, plugin libraries loaded before parsing, each engine run with Polygraphy's ``TrtRunner`` on
the calibration clip and gated against PyTorch; the record names the TensorRT version and the GPU.

``--backend tensorrt-rtx --compute-capability SM89[,SM120]`` (TensorRT for RTX): engines built *ahead of
time* for those GPU generations on a machine that needs no GPU; one engine holds all the chosen
compute capabilities. They are built, not run: the record says so (``"run": false``) and names the
TensorRT-RTX version and compute capabilities; numeric parity needs a GPU of that generation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ffexport.errors import BuildError
from ffexport.export.trt_toolkit import (
    BuildFailure,
    DimRange,
    ParseOnnx,
    ProfileShape,
    Rejection,
    SerializeEngine,
    Toolkit,
    compute_capability_value,
    find_toolkit,
    write_engine,
)

log = logging.getLogger(__name__)

__all__ = ["EngineFromGraph", "ProfileShape", "check_engine_record", "gpu_record", "require_tensorrt", "run_engine",
           "tensorrt_version"]

INSTALL_HINT = ("TensorRT is not installed: install TensorRT 10 or 11 for your CUDA version "
                "(pip install 'ffexport[tensorrt]' on a machine with an NVIDIA GPU); the ONNX graphs do not need it; "
                "engines for RTX GPUs build without a GPU with --backend tensorrt-rtx")
#: what an ahead-of-time engine's record says about itself
NOT_RUN_NOTE = ("built ahead of time by TensorRT-RTX on a machine without that GPU; not run: numeric parity needs a GPU "
                "of one of these compute capabilities")


def tensorrt_version() -> str | None:
    """The installed TensorRT's version, or None."""
    toolkit = find_toolkit(("tensorrt",))
    return None if toolkit is None else toolkit.version


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
    raise BuildError("no CUDA GPU is visible; TensorRT engines are built on the GPU they will run on (engines for RTX "
                     "GPUs build without one: --backend tensorrt-rtx --compute-capability SM89)")


class EngineFromGraph:
    """``EngineFromGraph(toolkit=..., ...)(onnx_path, engine_path, dims) -> record``.

    ``toolkit``: TensorRT (default: the installed ``tensorrt``) or TensorRT-RTX with ``compute_capabilities``.
    ``dims``: the min/opt/max of the graph's dynamic dims (None for a static graph). Raises :class:`BuildError`
    naming the node the parser rejected, or the builder's own error; leaves no engine file behind then."""

    def __init__(self, *, toolkit: Toolkit | None = None, compute_capabilities: Sequence[str] = (),
                 timing_cache: Path | None = None, plugins: tuple[str, ...] = (),
                 workspace_bytes: int | None = None) -> None:
        if toolkit is None:
            require_tensorrt()
            toolkit = find_toolkit(("tensorrt",))
        self.toolkit = toolkit
        self.compute_capabilities = tuple(compute_capabilities)
        if toolkit.ahead_of_time and not self.compute_capabilities:
            raise BuildError("TensorRT-RTX builds engines for named GPU generations: give --compute-capability SM89 "
                             "(or several, comma-separated)")
        if plugins and toolkit.ahead_of_time:
            raise BuildError("plugin libraries are not supported by the TensorRT-RTX backend (docs/tensorrt.md)")
        self.plugins = plugins
        self.parse = ParseOnnx(toolkit=toolkit)
        self.serialize = SerializeEngine(compute_capabilities=self.compute_capabilities,
                                         timing_cache=None if toolkit.ahead_of_time else timing_cache,
                                         workspace_bytes=workspace_bytes)

    @property
    def runs_here(self) -> bool:
        """Whether the engines it builds can run on this machine (standard TensorRT: its own GPU)."""
        return not self.toolkit.ahead_of_time

    def __call__(self, onnx_path: Path, engine_path: Path, dims: DimRange | None) -> dict[str, Any]:
        if self.plugins:
            from ffexport.runtime.engines import PluginLibraries

            PluginLibraries()(self.plugins)
        parsed = self.parse(onnx_path)
        if isinstance(parsed, Rejection):
            raise BuildError(f"{self.toolkit.label} cannot parse {onnx_path.name}: {parsed}")
        engine = self.serialize(parsed, dims)
        if isinstance(engine, BuildFailure):
            raise BuildError(f"{self.toolkit.label} could not build {onnx_path.name}: {engine.message}")
        write_engine(engine_path, engine)
        record: dict[str, Any] = {
            "file": engine_path.name, "bytes": engine.nbytes, "build_seconds": round(engine.seconds, 2),
            "profile": {s.name: s.to_json() for s in engine.profile}, "plugins": list(self.plugins),
        }
        if self.toolkit.ahead_of_time:
            record.update({"runtime": "tensorrt-rtx", "tensorrt_rtx": self.toolkit.version,
                           "compute_capabilities": [compute_capability_value(c) for c in self.compute_capabilities],
                           "run": False, "note": NOT_RUN_NOTE})
        else:
            record.update({"runtime": "tensorrt", "tensorrt": self.toolkit.version, "gpu": gpu_record()})
        log.info("%s: %d bytes in %.1f s (%s)", engine_path.name, engine.nbytes, engine.seconds, self.toolkit.label)
        return record


def run_engine(engine_path: Path, feeds: dict[str, Any]) -> dict[str, Any]:
    """Run a saved engine once with Polygraphy's TrtRunner (for the parity gate)."""
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    with TrtRunner(EngineFromBytes(BytesFromPath(str(engine_path)))) as runner:
        return dict(runner.infer(feeds))


def check_engine_record(record: dict[str, Any]) -> None:
    """Refuse an engine this machine cannot run (another TensorRT version, another GPU architecture, no GPU):
    the runtime's check (:func:`ffexport.runtime.engines.engine_mismatch`) as a :class:`BuildError`."""
    from ffexport.runtime.engines import engine_mismatch, this_machine

    problem = engine_mismatch(record, this_machine())
    if problem is not None:
        raise BuildError(problem)
