"""The two ways to decide FrameFusion steps: the dynamic reference and a static schedule.

Both answer the decoder's two questions at every step slot (layer, before/after attention):
does this layer need the last queries' attention (``needs_importance``), and which visual tokens
survive this step (``step``). The tensor math is shared (:mod:`ffexport.fusion.ops`); only the
decisions differ: :class:`DynamicReducer` decides from the data exactly as the authors' code does
and records the schedule it realized; :class:`StaticReducer` follows a schedule fixed in advance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from ffexport.fusion import ops
from ffexport.fusion.budget import budget
from ffexport.fusion.config import FusionConfig
from ffexport.fusion.layout import FrameLayout
from ffexport.fusion.schedule import Schedule, Stage


@dataclass
class VisualSpan:
    """The video's tokens as the decoder currently holds them.

    ``start`` is where the span begins in the sequence (a 0-dim int64 tensor, so it can be a graph
    input); ``length`` is how many rows it has left (a Python int: fixed by the schedule);
    ``patch_ids`` [length] int64 says which patch position each row came from.

    With frame blocks (:mod:`ffexport.fusion.layout`) the span is the whole region, and ``text``
    [length] bool marks the ``text_tokens`` text rows between blocks (patch id 0, never reduced);
    ``text`` None means every row is visual (the contiguous span, the code path of Qwen2-VL).
    """

    start: torch.Tensor
    length: int
    patch_ids: torch.Tensor
    patches_per_frame: int
    frames: int
    text: torch.Tensor | None = None
    text_tokens: int = 0
    #: features carried with the rows and reduced with the same indices ([length, F]; Qwen3-VL's
    #: DeepStack features, added to the hidden states of the first layers); None: nothing carried
    extra: torch.Tensor | None = None

    def positions(self) -> torch.Tensor:
        """Sequence positions of the span's rows, [length] int64."""
        return self.start + torch.arange(self.length, dtype=torch.int64, device=self.patch_ids.device)

    @property
    def visual_count(self) -> int:
        return self.length - self.text_tokens

    def visual_index(self) -> torch.Tensor | None:
        """Span rows of the visual tokens, ascending [visual_count]; None when every row is visual."""
        if self.text is None:
            return None
        return ops.compact_index((~self.text).to(torch.float32), self.visual_count)

    def visual_only(self, index: torch.Tensor | None) -> "VisualSpan":
        """The visual tokens alone, as a contiguous span (``index`` from :meth:`visual_index`)."""
        if index is None:
            return self
        return VisualSpan(self.start, self.visual_count, self.patch_ids.index_select(0, index),
                          self.patches_per_frame, self.frames)

    def lift(self, index: torch.Tensor | None, reduction: "Reduction", rows: torch.Tensor) -> "Reduction":
        """A reduction of the visual tokens as a reduction of the span's rows: text rows all stay,
        unchanged. ``rows`` [length, D] are the span's current rows (a merge's pool for text rows)."""
        if index is None:
            return reduction
        text = self.text.to(torch.float32)
        kept_visual = reduction.kept.shape[0]
        flags = torch.zeros(self.visual_count, dtype=torch.float32, device=text.device).scatter(
            0, reduction.kept, torch.ones(kept_visual, dtype=torch.float32, device=text.device))
        keep = text.scatter(0, index, flags)
        kept = ops.compact_index(keep, self.text_tokens + kept_visual)
        if reduction.values is None:
            return Reduction(kept)
        # a kept visual row takes its merged value: row (its rank among kept visual rows) of the values
        rank = (torch.cumsum(keep - text, dim=0) - 1.0).to(torch.int64)
        source = torch.where(self.text.index_select(0, kept), kept, self.length + rank.index_select(0, kept))
        pool = torch.cat([rows, reduction.values.to(rows.dtype)], dim=0)
        return Reduction(kept, pool.index_select(0, source))


def reduce_extra(span: VisualSpan, kept: torch.Tensor, merged: bool) -> torch.Tensor:
    """``span.extra`` reduced like the hidden states were: rows ``kept`` (span rows, ascending) survive;
    after a merge each survivor holds the equal-weight mean of its group (itself and the run of removed
    tokens after it in its patch chain, exactly the groups :func:`ops.merge` averaged). [len(kept), F]."""
    if not merged:
        return span.extra.index_select(0, kept)
    index = span.visual_index()
    only = span.visual_only(index)
    flags = torch.zeros(span.length, dtype=torch.float32, device=kept.device).scatter(
        0, kept, torch.ones(kept.shape[0], dtype=torch.float32, device=kept.device))
    rows = span.extra
    if index is not None:
        flags, rows = flags.index_select(0, index), rows.index_select(0, index)
    removed = only.length - (kept.shape[0] - span.text_tokens)
    order = ops.patch_order(only.patch_ids, only.patches_per_frame)
    kept_visual, values = ops.merge(rows, only.patch_ids, order, 1.0 - flags.index_select(0, order), removed,
                                    max_run=only.frames, num_patches=only.patches_per_frame)
    return span.lift(index, Reduction(kept_visual, values), span.extra).values


@dataclass
class Reduction:
    """Which span tokens survive a step (``kept``: span positions, ascending) and, for a merge, their
    new values (``values`` [len(kept), D]); a prune keeps the rows as they are (``values`` None)."""

    kept: torch.Tensor
    values: torch.Tensor | None = None


def _merge(visual: torch.Tensor, span: VisualSpan, flags_for: "callable") -> tuple[Reduction, int]:
    """``flags_for(key, similarity) -> (flags, m)`` decides: ``key`` (:func:`ops.chain_closeness`)
    ranks top-M cuts; ``similarity()`` computes the authors' cosine, only where a threshold needs it."""
    order = ops.patch_order(span.patch_ids, span.patches_per_frame)
    key = ops.chain_closeness(visual, span.patch_ids, order)
    flags, m = flags_for(key, lambda: ops.chain_similarity(visual, span.patch_ids, order))
    kept, values = ops.merge(visual, span.patch_ids, order, flags, m, max_run=span.frames,
                             num_patches=span.patches_per_frame)
    return Reduction(kept, values), m


class StepOps(Protocol):
    """How a static step computes: the standard ops (:class:`StandardSteps`) or one plugin node per
    step (``ffexport.export.plugin_ops.PluginSteps``). Same inputs, same outputs (``ffexport/plugins.py``)."""

    def merge(self, visual: torch.Tensor, patch_ids: torch.Tensor, remove: int, patches_per_frame: int,
              max_run: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def prune(self, importance: torch.Tensor, keep: int) -> torch.Tensor: ...


class StandardSteps:
    """Static steps in standard ops: what the FrameFusionMerge / FrameFusionPrune plugins compute."""

    def merge(self, visual: torch.Tensor, patch_ids: torch.Tensor, remove: int, patches_per_frame: int,
              max_run: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``remove`` merge: ``(kept, values)``, ``kept`` span positions ascending [n - remove],
        ``values`` their run averages [n - remove, D] in ``visual``'s dtype."""
        order = ops.patch_order(patch_ids, patches_per_frame)
        key = ops.chain_closeness(visual, patch_ids, order)
        return ops.merge(visual, patch_ids, order, ops.top_flags(key, remove), remove, max_run=max_run,
                         num_patches=patches_per_frame)

    def prune(self, importance: torch.Tensor, keep: int) -> torch.Tensor:
        """Span positions (ascending) of the ``keep`` most important tokens; ``importance`` [n] float32."""
        return ops.prune(importance, keep)


class StaticReducer:
    """Applies a fixed :class:`Schedule`: top-M similarities merge, top-K importances survive a prune.

    ``steps`` computes each step (default :class:`StandardSteps`; plugin-mode export injects nodes).
    """

    def __init__(self, schedule: Schedule, *, steps: StepOps | None = None) -> None:
        self.schedule = schedule
        self.steps = steps if steps is not None else StandardSteps()

    def begin(self) -> None:
        """A new prefill starts (nothing to reset: the schedule is fixed)."""

    def needs_importance(self, layer: int) -> bool:
        stage = self.schedule.at(layer, "after_attention")
        return stage is not None and stage.op == "prune"

    def acts(self, layer: int, where: str) -> bool:
        stage = self.schedule.at(layer, where)
        return stage is not None and stage.remove > 0

    def step(
        self, layer: int, where: str, visual: torch.Tensor, span: VisualSpan, importance: torch.Tensor | None
    ) -> Reduction | None:
        stage = self.schedule.at(layer, where)
        if stage is None or stage.remove == 0:
            return None
        index = span.visual_index()  # None: every span row is visual (no text between frame blocks)
        only = span.visual_only(index)
        rows = visual if index is None else visual.index_select(0, index)
        if stage.op == "merge":
            kept, values = self.steps.merge(rows, only.patch_ids, stage.remove, only.patches_per_frame, only.frames)
            return span.lift(index, Reduction(kept, values), visual)
        keep = only.length - stage.remove
        scores = importance.index_select(0, span.positions())
        scores = scores if index is None else scores.index_select(0, index)
        return span.lift(index, Reduction(self.steps.prune(scores, keep)), visual)


@dataclass
class RealizedStep:
    """What the dynamic reference did at one step, with the numbers behind the decision."""

    stage: Stage
    visual_before: int
    ratio: float
    budget: float
    branch: str  # "threshold", "top-k" or "prune"


@dataclass
class DynamicReducer:
    """FrameFusion as the authors' code runs it (batch 1, prefill), recording what it realizes.

    Merge at layer 0 before attention and after every attention while merging is not done; the
    first step after merging is done (the next attention) prunes by the last 4 queries' attention.
    """

    config: FusionConfig
    num_layers: int
    sparsity: list[float] = field(default_factory=list)
    merging_done: bool = False
    pruning_done: bool = False
    realized: list[RealizedStep] = field(default_factory=list)

    def begin(self) -> None:
        """A new prefill starts: forget the previous prompt's state (as the authors' ``prepare``)."""
        self.sparsity, self.realized = [], []
        self.merging_done = self.pruning_done = False

    def needs_importance(self, layer: int) -> bool:
        return self.merging_done and not self.pruning_done

    def acts(self, layer: int, where: str) -> bool:
        if where == "before_attention" and layer != 0:
            return False
        return not (self.merging_done and self.pruning_done)

    def schedule(self, visual_tokens: int, patches_per_frame: int, layout: FrameLayout | None = None) -> Schedule:
        return Schedule(visual_tokens, patches_per_frame, tuple(r.stage for r in self.realized), layout)

    def _budget(self) -> float:
        return budget(self.sparsity, self.config.cost, self.num_layers)

    def step(
        self, layer: int, where: str, visual: torch.Tensor, span: VisualSpan, importance: torch.Tensor | None
    ) -> Reduction | None:
        if where == "before_attention" and layer != 0:
            return None
        index = span.visual_index()  # None: every span row is visual (no text between frame blocks)
        full, span = span, span.visual_only(index)
        rows = visual if index is None else visual.index_select(0, index)
        n = span.length
        if n == 0:
            return None
        if where == "after_attention" and self.merging_done and not self.pruning_done:
            upper = self._budget()
            keep = round(n * (1 - upper))
            self.pruning_done = True
            self.realized.append(RealizedStep(Stage(layer, where, "prune", n - keep), n, upper, upper, "prune"))
            scores = importance.index_select(0, full.positions())
            scores = scores if index is None else scores.index_select(0, index)
            return full.lift(index, Reduction(ops.prune(scores, keep)), visual)
        if self.merging_done:
            return None

        upper = self._budget()
        decision: dict[str, object] = {}

        def flags_for(key: torch.Tensor, similarity) -> tuple[torch.Tensor, int]:
            sim = similarity()
            candidates = sim >= self.config.similarity
            count = int(candidates.sum())
            ratio = count / n
            decision["ratio"] = ratio
            if ratio < upper:
                decision["branch"] = "threshold"
                return candidates.to(sim.dtype), count
            decision["branch"] = "top-k"
            m = int(upper * n)
            return ops.top_flags(key, m), m

        reduction, m = _merge(rows, span, flags_for)
        ratio = float(decision["ratio"])
        if decision["branch"] == "threshold":
            self.sparsity.append(ratio)
            if ratio < self.config.ratio_lower_bound:
                self.merging_done = True
        else:
            self.merging_done = self.pruning_done = True
        self.realized.append(RealizedStep(Stage(layer, where, "merge", m), n, ratio, upper, str(decision["branch"])))
        return full.lift(index, reduction, visual) if m else None
