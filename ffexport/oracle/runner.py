"""The oracle as the build's gate runs it: one prefill input in, the spec's decisions and outputs out.

:class:`OracleRun` runs :class:`~ffexport.oracle.naive.NaiveFrameFusion` (written from
``shared/FRAMEFUSION.md`` only; nothing here imports ``ffexport.fusion``) on the inputs a bucket's
prefill graph takes, and says, besides the schedule it realized, its logits and per-layer caches:

* whether it could afford the input at all: the oracle is plain Python (an explicit causal mask,
  per-head loops), its time grows with ``layers * L**2``; above :data:`MAX_WORK` it is not run and
  the record says so (``ran: false`` with the estimate), never silently;
* whether one of its decisions sat on a tie the spec leaves open: the spec orders a top-k cut by
  similarity (or importance) but says nothing about equal scores, and a threshold compare within
  float rounding of the bound can go either way. The implementation takes near-ties lowest position
  first (docs/design.md); the oracle sorts stably in patch order. Where a cut or a threshold lies
  within :data:`TIE_SIMILARITY` (similarities) or :data:`TIE_IMPORTANCE` (relative, importances) of a
  competing score, the step is recorded as ``ambiguous`` with the margin, and what follows it cannot
  be compared (static content: identical frames tie exactly).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from ffexport.oracle.naive import NaiveFrameFusion, NaiveResult

#: similarities closer than this at a top-k cut or to the threshold are a tie the spec leaves open
TIE_SIMILARITY = 1e-6
#: importances within this relative distance at the prune's cut are a tie
TIE_IMPORTANCE = 1e-5
#: the oracle runs when ``layers * L**2`` stays under this; measured 2026-12-02 on the 2-core dev
#: machine (load ~6): 0.2 s for L = 159 (8x112x112), 1.0 s for L = 607 (16x224x224) on the tiny
#: model's 4 layers, i.e. about 1e-6 s per unit: 6e7 is about one minute per video
MAX_WORK = 6e7


def oracle_work(layers: int, length: int) -> int:
    """The oracle's cost estimate for one prefill of ``length`` tokens (its causal mask and attention
    loops are quadratic in ``length``, once per layer)."""
    return int(layers) * int(length) ** 2


@dataclass
class OracleOutcome:
    ran: bool
    result: NaiveResult | None = None
    #: (step index, what) for every decision that sat on a tie the spec leaves open
    ambiguous: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0
    work: int = 0
    note: str = ""

    @property
    def first_ambiguous(self) -> int | None:
        return self.ambiguous[0][0] if self.ambiguous else None


class _Watched(NaiveFrameFusion):
    """The naive oracle, unchanged, with each decision's margin noted (the spec's own scores,
    recomputed beside it; nothing it decides is altered)."""

    def prefill(self, *args, **kwargs) -> NaiveResult:
        self.ties: list[tuple[int, str]] = []
        return super().prefill(*args, **kwargs)

    def _merge(self, h, toks, layer, where, result):
        sims = _chain_similarities(h, toks)
        out = super()._merge(h, toks, layer, where, result)
        index = len(result.steps) - 1
        branch, removed = result.branches[-1], result.steps[-1][3]
        if branch == "top-k":
            ranked = sorted(sims, reverse=True)
            if 0 < removed < len(ranked) and ranked[removed - 1] - ranked[removed] <= TIE_SIMILARITY:
                self.ties.append((index, f"layer {layer} {where} merge: top-{removed} cut between similarities "
                                         f"{ranked[removed - 1]:.9f} and {ranked[removed]:.9f}"))
        else:
            near = [s for s in sims if abs(s - self.similarity) <= TIE_SIMILARITY]
            if near:
                self.ties.append((index, f"layer {layer} {where} merge: {len(near)} similarities within "
                                         f"{TIE_SIMILARITY} of the threshold {self.similarity}"))
        return out

    def _prune(self, h, toks, layer, importance, result):
        scores = sorted((importance[i] for i, t in enumerate(toks) if t.patch is not None), reverse=True)
        out = super()._prune(h, toks, layer, importance, result)
        keep = len(scores) - result.steps[-1][3]
        if 0 < keep < len(scores) and scores[keep - 1] - scores[keep] <= TIE_IMPORTANCE * abs(scores[keep - 1]):
            self.ties.append((len(result.steps) - 1, f"layer {layer} prune: keep-{keep} cut between importances "
                                                     f"{scores[keep - 1]:.9g} and {scores[keep]:.9g}"))
        return out


def _chain_similarities(h: torch.Tensor, toks) -> list[float]:
    """The spec's similarity of every current visual token (cosine with the previous token of its
    patch chain in patch-major order, -2 for a chain's first token), float64."""
    vis = sorted((i for i, t in enumerate(toks) if t.patch is not None), key=lambda i: (toks[i].patch, i))
    sims = []
    for a, i in enumerate(vis):
        prev = vis[a - 1] if a > 0 else None
        if prev is not None and toks[prev].patch == toks[i].patch:
            x, y = h[prev].to(torch.float64), h[i].to(torch.float64)
            sims.append(float((x * y).sum() / (x.norm() * y.norm())))
        else:
            sims.append(-2.0)
    return sims


class OracleRun:
    """``OracleRun(model, cost=..., similarity=..., ratio_lower_bound=..., budget_layers=...)(embeds,
    position_ids, start, visual_tokens, patches_per_frame) -> OracleOutcome``.

    ``embeds`` [L, D] (float32), ``position_ids`` [3, L]; the model's modules are used as they are
    (a float32 model: the oracle computes in float32, similarities in float64)."""

    def __init__(self, model, *, cost: float, similarity: float, ratio_lower_bound: float, budget_layers: int,
                 max_work: float = MAX_WORK, mrope_section: list[int] | tuple[int, ...] | None = None) -> None:
        self.oracle = _Watched(model, cost=cost, similarity=similarity, ratio_lower_bound=ratio_lower_bound,
                               budget_layers=budget_layers, mrope_section=mrope_section)
        self.max_work = max_work

    @property
    def layers(self) -> int:
        return len(self.oracle.layers)

    def __call__(self, embeds: torch.Tensor, position_ids: torch.Tensor, start: int, visual_tokens: int,
                 patches_per_frame: int, *, blocks: list[list[int]] | None = None,
                 deepstack: torch.Tensor | None = None) -> OracleOutcome:
        """``blocks``: the video's frame blocks ``[offset from start, tokens]`` (None: one contiguous span);
        ``deepstack`` [k, N, D]: Qwen3-VL's DeepStack levels, carried by the oracle per token."""
        work = oracle_work(self.layers, embeds.shape[0])
        if work > self.max_work:
            return OracleOutcome(False, work=work, note=(
                f"not run: layers x L^2 = {work:.3g} is above the oracle's limit {self.max_work:.3g} "
                f"(about {math.ceil(work * 1e-6 / 60)} min of pure Python per video)"))
        t0 = time.perf_counter()
        extra = {} if deepstack is None else {"deepstack": deepstack.float()}
        result = self.oracle.prefill(embeds, position_ids, int(start), visual_tokens, patches_per_frame,
                                     blocks=None if blocks is None else [tuple(b) for b in blocks], **extra)
        return OracleOutcome(True, result, list(self.oracle.ties), time.perf_counter() - t0, work)
