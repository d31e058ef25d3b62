"""FrameFusionMerge / FrameFusionPrune for ONNX Runtime on CPU: numpy kernels run through
onnxruntime-extensions' PyOp (no torch).

The kernels follow :mod:`ffexport.fusion.ops` step by step (interface: :mod:`ffexport.plugins`):
the same keys (``chain_closeness``, log2 importances), the same 40-step float32 bisection for the
cut with the same tie windows (taken lowest position first), the same Hillis-Steele running sums
for the run averages. Element-wise float32 arithmetic is therefore identical; only the row
reductions (norms, squared distances) may round differently, as any backend's do, which is what the
tie windows absorb. Sorting and compaction use numpy directly (stable argsort, flatnonzero): their
results are exact.

ONNX Runtime runs a plugin graph in a session from :func:`session_options` (it registers the
kernels with PyOp once per process, then the extensions library with the session options). PyOp
takes float32 only (float16 inputs abort the process), so fp16 plugin graphs run in TensorRT alone.
"""

from __future__ import annotations

import logging

import numpy as np

from ffexport.errors import RunError
from ffexport.plugins import MERGE, PRUNE

log = logging.getLogger(__name__)

#: the same constants as ffexport.fusion.ops (kept in step by tests/runtime/test_plugins.py)
NO_PREDECESSOR = np.float32(-2.0)
SIMILARITY_EPS = np.float32(1e-9)
IMPORTANCE_EPS = np.float32(1e-5)
BISECT_STEPS = 40
_F32 = np.float32


# ---------------------------------------------------------------- the math (numpy, float32)
def patch_order(patch_ids: np.ndarray) -> np.ndarray:
    """Permutation sorting tokens by patch id, then position (a stable sort)."""
    return np.argsort(patch_ids, kind="stable").astype(np.int64)


def chain_closeness(visual: np.ndarray, patch_ids: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``-|a/|a| - b/|b||^2 / 2`` for each token and its chain predecessor, in patch order;
    ``4 * NO_PREDECESSOR`` for a chain's first token."""
    xs = visual[order].astype(_F32)
    ps = patch_ids[order]
    with np.errstate(invalid="ignore", divide="ignore"):  # a zero row gives NaN: ranked last
        unit = xs / np.sqrt((xs * xs).sum(axis=-1, keepdims=True, dtype=_F32))
        gap = _F32(-0.5) * ((unit[1:] - unit[:-1]) ** 2).sum(axis=-1, dtype=_F32)
    gap = np.where(ps[1:] == ps[:-1], gap, _F32(4) * NO_PREDECESSOR).astype(_F32)
    return np.concatenate([np.array([4 * NO_PREDECESSOR], dtype=_F32), gap])


def selection_key(scores: np.ndarray, *, relative: bool = False) -> np.ndarray:
    """The float32 ranking key: the score, or log2 of it (``relative``); NaN just below the lowest."""
    x = np.asarray(scores, dtype=_F32)
    if relative:
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.log2(np.maximum(x, np.finfo(_F32).tiny)).astype(_F32)  # NaN stays NaN
    nan = np.isnan(x)
    if nan.any():
        lowest = np.where(nan, _F32(np.inf), x).min()
        x = np.where(nan, lowest - _F32(1), x).astype(_F32)
    return x


def top_flags(scores: np.ndarray, count: int, *, relative: bool = False) -> np.ndarray:
    """bool flags of the ``count`` highest scores; near-ties at the cut go lowest position first."""
    n = scores.shape[0]
    if count == 0:
        return np.zeros(n, dtype=bool)
    x = selection_key(scores, relative=relative)
    eps = IMPORTANCE_EPS if relative else SIMILARITY_EPS
    low, high = x.min(), x.max() + _F32(1)
    for _ in range(BISECT_STEPS):
        mid = (low + high) / _F32(2)
        if np.count_nonzero(x >= mid) >= count:
            low = mid
        else:
            high = mid
    distance = x - low
    above = distance > eps
    near = (distance >= -eps) & ~above
    need = count - np.count_nonzero(above)
    return above | (near & (np.cumsum(near) <= need))


def segment_sums(values: np.ndarray, group: np.ndarray, max_len: int) -> np.ndarray:
    """Inclusive running sums within contiguous segments (a Hillis-Steele scan). The graphs' standard
    ops average a merge group with one batched MatMul instead (:mod:`ffexport.fusion.ops`), so the
    additions' order, and their float32 rounding, differ: values agree within 1e-6, kept positions exactly
    (tests/runtime/test_plugins.py)."""
    acc = values
    shift = 1
    while shift < max_len:
        previous = np.zeros_like(acc)
        previous[shift:] = acc[:-shift]
        same = np.zeros(len(group), dtype=bool)
        same[shift:] = group[shift:] == group[:-shift]
        acc = acc + np.where(same[:, None], previous, _F32(0))
        shift *= 2
    return acc


def merge_step(visual: np.ndarray, patch_ids: np.ndarray, remove: int, patches_per_frame: int,
               max_run: int) -> tuple[np.ndarray, np.ndarray]:
    """FrameFusionMerge: ``(kept [n - remove] int64, values [n - remove, D])``."""
    visual = np.asarray(visual)
    patch_ids = np.asarray(patch_ids, dtype=np.int64)
    n = visual.shape[0]
    if visual.ndim != 2 or patch_ids.shape != (n,) or not 1 <= remove < n or patches_per_frame < 1 or max_run < 1:
        raise ValueError(f"{MERGE}: visual {list(visual.shape)}, patch_ids {list(patch_ids.shape)}, remove {remove}, "
                         f"patches_per_frame {patches_per_frame}, max_run {max_run} break the interface")
    order = patch_order(patch_ids)
    merged = top_flags(chain_closeness(visual, patch_ids, order), remove)
    xs = visual[order].astype(_F32)
    unmerged = ~merged
    group = np.cumsum(unmerged).astype(np.int64) - 1
    running = segment_sums(xs, group, max_run)
    is_last = np.append(group[1:] != group[:-1], True)
    last, first = np.flatnonzero(is_last), np.flatnonzero(unmerged)
    if last.shape[0] != n - remove or first.shape[0] != n - remove:
        raise ValueError(f"{MERGE}: {n - first.shape[0]} tokens flagged for remove={remove} (a chain's first "
                         "token cannot merge: remove must leave every patch its first frame)")
    sizes = (last - first + 1).astype(_F32)
    means = (running[last] / sizes[:, None]).astype(visual.dtype)
    keep = np.zeros(n, dtype=bool)
    keep[order] = unmerged
    kept = np.flatnonzero(keep).astype(np.int64)
    group_of_position = np.empty(n, dtype=np.int64)
    group_of_position[order] = group
    return kept, means[group_of_position[kept]]


def prune_step(importance: np.ndarray, keep: int) -> np.ndarray:
    """FrameFusionPrune: positions (ascending) of the ``keep`` most important tokens, [keep] int64."""
    importance = np.asarray(importance, dtype=_F32)
    if importance.ndim != 1 or not 1 <= keep < importance.shape[0]:
        raise ValueError(f"{PRUNE}: importance {list(importance.shape)} and keep {keep} break the interface")
    return np.flatnonzero(top_flags(importance, keep, relative=True)).astype(np.int64)


# ---------------------------------------------------------------- ONNX Runtime (onnxruntime-extensions)
_registered = False


def register_kernels() -> None:
    """Register both kernels with onnxruntime-extensions' PyOp (once per process; domain ai.onnx.contrib)."""
    global _registered
    if _registered:
        return
    ext = _extensions()
    d = ext.PyCustomOpDef
    strings = {"plugin_version": d.dt_string, "plugin_namespace": d.dt_string}

    def merge_kernel(visual, patch_ids, **attrs):
        return merge_step(visual, patch_ids, int(attrs["remove"]), int(attrs["patches_per_frame"]),
                          int(attrs["max_run"]))

    def prune_kernel(importance, **attrs):
        return prune_step(importance, int(attrs["keep"]))

    ext.onnx_op(op_type=MERGE, inputs=[d.dt_float, d.dt_int64], outputs=[d.dt_int64, d.dt_float],
                attrs={"remove": d.dt_int64, "patches_per_frame": d.dt_int64, "max_run": d.dt_int64,
                       **strings})(merge_kernel)
    ext.onnx_op(op_type=PRUNE, inputs=[d.dt_float], outputs=[d.dt_int64],
                attrs={"keep": d.dt_int64, **strings})(prune_kernel)
    _registered = True
    log.debug("registered the %s and %s kernels with onnxruntime-extensions", MERGE, PRUNE)


def session_options(options=None):
    """ONNX Runtime session options that run plugin graphs: the kernels registered, the extensions
    library loaded. ``options``: existing ``SessionOptions`` to extend (a new one when None)."""
    import onnxruntime as ort

    ext = _extensions()
    register_kernels()
    options = options if options is not None else ort.SessionOptions()
    options.register_custom_ops_library(ext.get_library_path())
    return options


def _extensions():
    try:
        import onnxruntime_extensions
    except ImportError as e:
        raise RunError(f"this graph holds FrameFusion plugin nodes ({MERGE}/{PRUNE}); ONNX Runtime runs them "
                       "through onnxruntime-extensions: pip install onnxruntime-extensions") from e
    return onnxruntime_extensions
