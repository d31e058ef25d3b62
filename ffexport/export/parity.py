"""The parity gate: run a graph in ONNX Runtime and compare every output with PyTorch's.

Results are per output (max absolute and relative error against the tolerance). The inputs and
the PyTorch outputs are saved in Polygraphy's JSON format, so anyone can repeat the check:

    polygraphy run GRAPH.onnx --onnxrt --load-inputs IN.json --load-outputs OUT.json --atol A --rtol 0
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ffexport.plugins import plugins_in_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float = 0.0


#: fp32 graphs: what the issue promises (prefill logits within 1e-4) for every output
FP32 = Tolerance(atol=1e-4)
#: fp16 graphs against the same module run in fp16 by PyTorch (different kernels, fp16 rounding)
FP16 = Tolerance(atol=2e-2, rtol=2e-2)
#: bf16 graphs (validated by TensorRT only: ONNX Runtime's CPU provider has no bfloat16 kernels):
#: bf16 keeps 8 mantissa bits against fp16's 11, so 8x fp16's bound. Not yet measured on an engine.
BF16 = Tolerance(atol=1.6e-1, rtol=1.6e-1)


@dataclass
class OutputReport:
    name: str
    shape: list[int]
    max_abs: float
    max_rel: float
    atol: float
    rtol: float
    passed: bool


@dataclass
class GraphReport:
    graph: str
    file: str
    runtime: str
    outputs: list[OutputReport] = field(default_factory=list)
    validated: bool = True
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.validated and all(o.passed for o in self.outputs)

    def to_json(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        return d


def compare(name: str, got: np.ndarray, expected: np.ndarray, tol: Tolerance) -> OutputReport:
    """Elementwise like Polygraphy: an element passes if abs error <= atol or rel error <= rtol."""
    got64, exp64 = _float64(got), _float64(expected)
    if got64.shape != exp64.shape:
        return OutputReport(name, list(got64.shape), float("inf"), float("inf"), tol.atol, tol.rtol, False)
    abs_err = np.abs(got64 - exp64)
    rel_err = abs_err / np.maximum(np.abs(exp64), 1e-12)
    ok = (abs_err <= tol.atol) | (rel_err <= tol.rtol)
    finite = np.isfinite(got64).all()
    max_abs = float(abs_err.max()) if abs_err.size else 0.0
    max_rel = float(rel_err.max()) if rel_err.size else 0.0
    return OutputReport(name, list(exp64.shape), max_abs, max_rel, tol.atol, tol.rtol, bool(ok.all() and finite))


def _float64(x) -> np.ndarray:
    """numpy or torch (bf16 has no numpy dtype: TensorRT runners and PyTorch hand it over as a torch
    tensor) -> float64 numpy."""
    if hasattr(x, "detach"):
        x = x.detach().to("cpu").double().numpy()
    return np.asarray(x, dtype=np.float64)


class OrtRunner:
    """A cached ONNX Runtime CPU session per graph file."""

    def __init__(self) -> None:
        self._sessions: dict[str, object] = {}

    def session(self, path: str | Path):
        import onnxruntime as ort

        key = str(path)
        if key not in self._sessions:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            if plugins_in_file(key):  # FrameFusion plugin nodes: numpy kernels via onnxruntime-extensions
                from ffexport.export.plugin_mode import plugin_session

                self._sessions[key] = plugin_session(key, options)
            else:
                self._sessions[key] = ort.InferenceSession(key, options, providers=["CPUExecutionProvider"])
        return self._sessions[key]

    def forget(self, path: str | Path) -> None:
        """Drop the cached session of ``path`` (a graph about to be deleted)."""
        self._sessions.pop(str(path), None)

    def run(self, path: str | Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sess = self.session(path)
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, feeds)))


class ParityGate:
    """``ParityGate(tolerance)(graph, path, feeds, expected, save_dir) -> GraphReport``."""

    def __init__(self, tolerance: Tolerance, *, runner: OrtRunner | None = None) -> None:
        self.tolerance = tolerance
        self.runner = runner or OrtRunner()

    def __call__(
        self,
        graph: str,
        path: Path,
        feeds: dict[str, np.ndarray],
        expected: dict[str, np.ndarray],
        save_dir: Path | None = None,
    ) -> tuple[GraphReport, dict[str, np.ndarray]]:
        got = self.runner.run(path, feeds)
        report = GraphReport(graph, path.name, "onnxruntime-cpu")
        for name, value in expected.items():
            report.outputs.append(compare(name, got[name], value, self.tolerance))
        if save_dir is not None:
            save_polygraphy(save_dir, graph, feeds, expected)
        return report, got


def save_polygraphy(save_dir: Path, graph: str, feeds: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    """Inputs and PyTorch outputs in Polygraphy's JSON format (skipped with a note if absent)."""
    try:
        from polygraphy.comparator import RunResults
        from polygraphy.json import save_json
    except ImportError:
        log.warning("polygraphy is not installed; %s's parity data is not saved for replay", graph)
        return
    from polygraphy.logger import G_LOGGER

    save_dir.mkdir(parents=True, exist_ok=True)
    G_LOGGER.module_severity = G_LOGGER.WARNING  # no "[I] Saving ..." lines on the console
    save_json([feeds], str(save_dir / f"{graph}.inputs.json"), description=f"{graph} inputs")
    results = RunResults()
    results.add([expected], runner_name="torch")
    results.save(str(save_dir / f"{graph}.outputs.json"))
