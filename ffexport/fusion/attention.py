"""Attention, once, for every path that runs the decoder: PyTorch references and exported graphs.

Two formulations:

* ``fused``: :func:`torch.nn.functional.scaled_dot_product_attention` in every dtype. In PyTorch this
  is the fused kernel (CPU flash attention accumulates and takes the softmax in float32 for
  float16/bfloat16 inputs). Captured at ONNX opset 23 it becomes one ``Attention`` node (causal via
  ``is_causal``); :mod:`ffexport.export.attention_rewrite` then marks its softmax float32
  (``softmax_precision``) in half-precision graphs and, for ONNX Runtime, turns the causal prefill
  node into ``com.microsoft.GroupQueryAttention`` (ONNX Runtime's CPU kernel for it skips the masked
  half and never holds the L x L matrix). Memory grows linearly with the sequence.
* ``explicit``: ``q k^T``, a causal mask, a float32 softmax and ``p v``: the formulation for
  backends without the op (TensorRT-RTX 1.7 parses ``Attention`` but cannot build it in float32).
  float32 modules keep SDPA, which the exporter decomposes at opset 18 into the same MatMul/Softmax.
  Memory grows with L^2 per head.

PyTorch references always run ``fused`` (SDPA); the formulation of a graph is chosen only while it
is captured (:func:`capturing`), so the parity gate compares every graph with the same reference.
The prune's importance (softmax of the last 4 queries) is not part of this: it is computed beside
the attention on 4 rows only (:func:`ffexport.fusion.ops.last_query_importance`).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch

FUSED = "fused"
EXPLICIT = "explicit"
MODES = (FUSED, EXPLICIT)
#: the ONNX opset each formulation is captured at (``Attention`` is opset 23)
OPSETS = {FUSED: 23, EXPLICIT: 18}

_capture_mode: contextvars.ContextVar[str | None] = contextvars.ContextVar("ffexport_attention_capture", default=None)


@contextlib.contextmanager
def capturing(mode: str) -> Iterator[None]:
    """While a graph is captured: attention in ``mode`` (scoped to this context, this thread)."""
    if mode not in MODES:
        raise ValueError(f"attention mode {mode!r}: use one of {', '.join(MODES)}")
    token = _capture_mode.set(mode)
    try:
        yield
    finally:
        _capture_mode.reset(token)


def capture_mode() -> str | None:
    """The formulation of the graph being captured, or None outside a capture."""
    return _capture_mode.get()


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, scale: float) -> torch.Tensor:
    """``softmax(q k^T * scale [+ causal mask]) v``; q [B, H, Lq, d], k/v [B, H, Lk, d] (heads repeated).

    ``causal`` with ``Lq == Lk`` is the prefill's mask; the one-token decode passes ``causal=False``."""
    if capture_mode() == EXPLICIT and q.dtype != torch.float32:
        return explicit(q, k, v, causal=causal, scale=scale)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)


def explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, scale: float) -> torch.Tensor:
    """The explicit L x L formulation with a float32 softmax (any dtype)."""
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale
    if causal:
        rows, cols = q.shape[-2], k.shape[-2]
        qpos = torch.arange(rows, device=q.device).unsqueeze(1) + (cols - rows)
        kpos = torch.arange(cols, device=q.device).unsqueeze(0)
        scores = scores.masked_fill(kpos > qpos, float("-inf"))
    probs = torch.softmax(scores.to(torch.float32), dim=-1).to(v.dtype)
    return torch.matmul(probs, v)
