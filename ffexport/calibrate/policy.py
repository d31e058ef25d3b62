"""The calibration policy: one static schedule from the schedules the dynamic reference realized.

Vocabulary: step slot 0 is layer 0 before attention, slot ``k >= 1`` is layer ``k - 1`` after attention
(where the dynamic reference merges while merging lasts, then prunes once). A realized schedule merges
``m_v[k]`` tokens at slots ``k < E_v`` and prunes at slot ``E_v`` (or ends in the top-k branch, with no
prune; ``E_v`` is then the slot after its last merge).

Rule (``QuantilePolicy(quantile=q)``):

1. The prune slot ``E`` is the median of ``E_v`` over the calibration videos (at least 1, at most the
   model's depth and the budget's).
2. The merge at slot ``k < E`` removes the ``q``-quantile (default the median) of ``m_v[k]`` over the
   videos (0 for a video whose merging had ended), capped so that every patch position keeps a token.
3. The prune keeps ``K`` tokens so that the schedule's realized cost
   (:func:`~ffexport.calibrate.cost.schedule_cost`) equals the requested ``cost``:
   ``K = round((B * cost * N - sum_{i<E} n_i) / (B - E))`` with ``n_i`` the tokens at layer ``i``'s
   attention and ``B`` the budget layers (the same arithmetic as the dynamic reference's prune).
   When the merges alone already undercut the budget (``K`` above the tokens left), the last merges
   shrink until it is met; when they leave no room (``K < 1``: the budget is spent before the prune),
   the prune moves one slot earlier, and the policy fails with "cost too small" at slot 1.

The result is validated (never removes all visual tokens, never more than the bucket holds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ffexport.calibrate.cost import schedule_cost
from ffexport.errors import FusionError, InputError
from ffexport.fusion.config import FusionConfig
from ffexport.fusion.schedule import Schedule, Stage


def slot_of(stage: Stage) -> int:
    """Slot index of a step: 0 before layer 0's attention, ``layer + 1`` after a layer's attention."""
    return 0 if stage.where == "before_attention" else stage.layer + 1


def stage_at(slot: int, op: str, remove: int) -> Stage:
    if slot == 0:
        return Stage(0, "before_attention", op, remove)
    return Stage(slot - 1, "after_attention", op, remove)


@dataclass(frozen=True)
class Realized:
    """A realized schedule seen as merges per slot and the prune slot."""

    merges: tuple[int, ...]  # remove count at slots 0..E-1
    end: int  # the prune slot E
    prune: int | None  # the prune's remove count (None: ended in the top-k branch)

    @classmethod
    def of(cls, schedule: Schedule) -> "Realized":
        merges: list[int] = []
        prune = None
        end = None
        for stage in schedule.stages:
            slot = slot_of(stage)
            if stage.op == "merge":
                merges += [0] * (slot - len(merges)) + [stage.remove]
            else:
                prune, end = stage.remove, slot
                break
        if end is None:
            end = len(merges)
        merges += [0] * (end - len(merges))
        return cls(tuple(merges), end, prune)


@dataclass(frozen=True)
class PolicyChoice:
    schedule: Schedule
    cost: float  # realized cost of the static schedule
    requested: float
    prune_slot: int
    merges: tuple[int, ...]
    notes: tuple[str, ...] = ()

    @property
    def cost_error(self) -> float:
        """Relative difference of the realized and requested cost."""
        return (self.cost - self.requested) / self.requested


class QuantilePolicy:
    """``QuantilePolicy(fusion, quantile=0.5)(schedules, num_layers) -> PolicyChoice``."""

    def __init__(self, fusion: FusionConfig, *, quantile: float = 0.5) -> None:
        if not 0.0 <= quantile <= 1.0:
            raise InputError(f"--quantile must be in [0, 1], got {quantile}")
        self.fusion = fusion
        self.quantile = quantile

    def describe(self) -> str:
        return (f"per-slot {self.quantile:g}-quantile of the realized merges, median prune slot, prune sized "
                f"so the cost equals {self.fusion.cost}")

    def __call__(self, schedules: Sequence[Schedule], num_layers: int) -> PolicyChoice:
        if not schedules:
            raise InputError("no realized schedule to calibrate from")
        n, p = schedules[0].visual_tokens, schedules[0].patches_per_frame
        if any((s.visual_tokens, s.patches_per_frame) != (n, p) for s in schedules):
            raise InputError("the realized schedules are for different buckets")
        layout = schedules[0].layout  # frame blocks (text between frames): the static schedule carries them
        if any(s.layout != layout for s in schedules):
            raise InputError("the calibration prompts lay their frame blocks out differently "
                             f"({schedules[0].frame_layout.to_json()} vs another); calibrate one layout per bucket")
        budget_layers = self.fusion.layers_for(num_layers)
        realized = [Realized.of(s) for s in schedules]
        end = int(round(float(np.median([r.end for r in realized]))))
        end = max(1, min(end, num_layers, budget_layers - 1 if budget_layers > 1 else 1))
        merges = []
        for k in range(end):
            amounts = [r.merges[k] if k < len(r.merges) else 0 for r in realized]
            merges.append(int(round(float(np.quantile(amounts, self.quantile)))))
        notes: list[str] = []
        while True:
            merges = _capped(merges[:end], n, p)
            found = self._prune(merges, end, n, p, num_layers, budget_layers, notes, layout)
            if found is not None:
                schedule = found
                break
            if end == 1:
                raise FusionError(
                    f"the cost is too small: cost {self.fusion.cost} over {budget_layers} budget layers allows "
                    f"{budget_layers * self.fusion.cost:.3f} layer-equivalents, and even a prune after the first "
                    f"attention (with the calibrated merge of {merges[0]} tokens before it) needs more; raise --cost")
            notes.append(f"the budget was spent before slot {end}: prune moved to slot {end - 1}")
            end -= 1
        cost = schedule_cost(schedule, num_layers, budget_layers)
        return PolicyChoice(schedule, cost, self.fusion.cost, end, tuple(merges), tuple(notes))

    def _prune(self, merges: list[int], end: int, n: int, p: int, num_layers: int, budget_layers: int,
               notes: list[str], layout=None) -> Schedule | None:
        """The schedule with merges at slots < end and the prune at slot ``end`` sized to the budget; None
        when the merges leave no room for it. ``layout``: the bucket's frame blocks (None: one block)."""
        target = budget_layers * self.fusion.cost * n
        while True:
            counts, left = [], n
            for m in merges:  # tokens at layer i's attention = after slots 0..i
                left -= m
                counts.append(left)
            spent = sum(counts[:end])
            keep = round((target - spent) / (budget_layers - end))
            if keep < 1:
                return None
            if keep <= left:
                break
            if not any(merges):
                notes.append(f"no prune: the model's {n} tokens already cost less than the budget")
                break
            # the merges alone undercut the budget: merge less (from the last merge back) until it is met
            last = max(i for i, m in enumerate(merges) if m)
            merges[last] -= 1
            if not notes or not notes[-1].startswith("merges reduced"):
                notes.append("merges reduced so that the budget is met (they alone undercut it)")
        keep = min(keep, left)
        # zero-token merges stay (they do nothing) so that a one-video calibration reproduces the
        # schedule the dynamic reference realized on it, stage for stage
        stages = [stage_at(k, "merge", m) for k, m in enumerate(merges)]
        if left - keep > 0:
            stages.append(stage_at(end, "prune", left - keep))
        return Schedule(n, p, tuple(stages), layout).validate(num_layers)


def _capped(merges: list[int], n: int, p: int) -> list[int]:
    """Merges capped so that every patch position keeps its first-frame token (at most N - P in all)."""
    out, left = [], n
    for m in merges:
        m = max(0, min(m, left - p))
        out.append(m)
        left -= m
    return out
