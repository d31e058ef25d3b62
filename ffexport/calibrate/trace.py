"""Which of a video's original visual tokens each FrameFusion step merged, pruned or kept.

:class:`Trace` wraps any reducer (dynamic or static) and follows the original tokens through its
steps: a merge folds each removed token into the kept token before it in its patch chain (the run
start, :func:`ffexport.fusion.ops.merge`), a prune drops a token with everything merged into it.
With frame blocks the reducer sees the whole region, text between blocks included: text rows carry
no original id (-1) and are never removed, so only the visual rows are followed.
:class:`TracedReference` is :class:`~ffexport.reference.Reference` with a trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ffexport.case import Case
from ffexport.fusion.reducers import Reduction, VisualSpan
from ffexport.reference import Reference, ReferenceResult

KEPT, MERGED, PRUNED = 0, 1, 2


@dataclass
class TraceStep:
    layer: int
    where: str
    op: str  # "merge" or "prune"
    removed: np.ndarray  # original token ids (representatives) the step removed


@dataclass
class Trace:
    """A reducer that records, per step, which original visual tokens left the sequence."""

    inner: object
    visual_tokens: int
    ids: np.ndarray = field(init=False)  # original id of each current span token
    members: dict[int, list[int]] = field(init=False)  # representative -> original tokens it holds
    fate: np.ndarray = field(init=False)  # per original token: KEPT, MERGED or PRUNED
    steps: list[TraceStep] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.begin_trace()

    def begin_trace(self) -> None:
        self.ids = np.arange(self.visual_tokens)
        self.members = {i: [i] for i in range(self.visual_tokens)}
        self.fate = np.full(self.visual_tokens, KEPT, dtype=np.int8)
        self.steps = []

    # ---------------------------------------------------------------- the reducer protocol
    def begin(self) -> None:
        self.inner.begin()
        self.begin_trace()

    def needs_importance(self, layer: int) -> bool:
        return self.inner.needs_importance(layer)

    def acts(self, layer: int, where: str) -> bool:
        return self.inner.acts(layer, where)

    def step(self, layer: int, where: str, visual: torch.Tensor, span: VisualSpan,
             importance: torch.Tensor | None) -> Reduction | None:
        reduction = self.inner.step(layer, where, visual, span, importance)
        if reduction is None:
            return None
        text = np.zeros(span.length, dtype=bool) if span.text is None else span.text.cpu().numpy()
        if self.ids.shape[0] != span.length:  # the first step on a region with text between frame blocks
            self.ids = np.full(span.length, -1)
            self.ids[~text] = np.arange(self.visual_tokens)
        kept = reduction.kept.cpu().numpy()
        removed = np.setdiff1d(np.arange(span.length), kept)
        op = "prune" if reduction.values is None else "merge"
        if op == "merge":
            patch = span.patch_ids.cpu().numpy()
            for i in removed:  # the run start: the last kept visual token before i in the same patch chain
                before = kept[(kept < i) & (patch[kept] == patch[i]) & ~text[kept]]
                target = int(self.ids[before[-1]])
                self.members[target] += self.members.pop(int(self.ids[i]))
        else:
            for i in removed:
                for original in self.members.pop(int(self.ids[i])):
                    self.fate[original] = PRUNED
        self.steps.append(TraceStep(layer, where, op, self.ids[removed].copy()))
        self.ids = self.ids[kept]
        return reduction

    # ---------------------------------------------------------------- results
    @property
    def survivors(self) -> np.ndarray:
        """Original ids of the visual tokens left after the last step (each holds its merged tokens)."""
        return np.sort(self.ids[self.ids >= 0])

    def fates(self) -> np.ndarray:
        """Per original token: KEPT (survives as itself), MERGED (folded into a survivor) or PRUNED."""
        fate = self.fate.copy()
        for rep, held in self.members.items():
            for original in held:
                if original != rep:
                    fate[original] = MERGED
        return fate


def kept_overlap(a: Trace, b: Trace) -> float:
    """Jaccard overlap of two runs' surviving original tokens (1: the same tokens survive)."""
    x, y = set(a.survivors.tolist()), set(b.survivors.tolist())
    union = x | y
    return len(x & y) / len(union) if union else 1.0


class TracedReference(Reference):
    """``TracedReference(...).traced(case) -> (ReferenceResult, Trace | None)``."""

    def traced(self, case: Case) -> tuple[ReferenceResult, Trace | None]:
        traces: list[Trace] = []

        def observe(reducer, visual_tokens: int):
            if reducer is None:
                return None
            traces.append(Trace(reducer, visual_tokens))
            return traces[-1]

        result = self(case, observe=observe)
        return result, (traces[0] if traces else None)
