"""FrameFusion's cost budget: how much the next step may remove.

``budget(sparsity, cost, num_layers)`` is the authors' ``_compute_pruning_ratio``: after merge steps
that removed the fractions ``sparsity`` (each of the tokens left at that step), the remaining compute
(in units of one full layer over all visual tokens) must keep the average cost per layer at
``cost``. It returns the fraction of the current tokens that the next step must remove.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ffexport.errors import FusionError


def budget(sparsity: Sequence[float], cost: float, num_layers: int) -> float:
    """Fraction of the current visual tokens the next step should remove.

    ``num_layers`` is the depth the cost formula assumes: the authors hard-code 28; ffexport uses
    the model's depth unless ``--budget-layers`` says otherwise.
    """
    kept = 1.0
    total = 0.0
    for ratio in sparsity:
        kept *= 1.0 - ratio
        total += kept
    remain = num_layers * cost - total
    if remain < 0:
        raise FusionError(
            f"the cost is too small: merge steps already used {total:.3f} of the "
            f"{num_layers * cost:.3f} layer-equivalents that cost {cost} allows over {num_layers} layers"
            f"{remedy(sparsity, cost, num_layers)}"
        )
    layers_left = num_layers - len(sparsity)
    if layers_left <= 0:
        raise FusionError(
            f"merging ran through all {num_layers} budget layers; raise --budget-layers or the ratio lower bound"
        )
    quotient = remain / (layers_left * kept)
    if quotient > 1:
        return 0.0
    return 1.0 - quotient


def remedy(sparsity: Sequence[float], cost: float, num_layers: int) -> str:
    """What to change when the merges ``sparsity`` overran the budget of ``cost`` (computed, see below).

    The merge steps up to step ``k`` are the same at any cost while each merges all its candidates,
    so the realized ratios ``r_1..r_m`` hold for a larger cost too. Step ``k`` ends merging instead
    (it merges only ``budget`` of the tokens, and no step follows) when ``r_k >= budget(r_<k, c)``,
    that is when ``c >= (T_{k-1} + (L - k + 1) * s_{k-1} * (1 - r_k)) / L`` (``T``: layer-equivalents
    used, ``s``: share of tokens left); so the least such ``c`` over ``k`` is enough, and so is any
    larger cost. Merging also stops after the first step whose ratio is below ``--ratio-lower-bound``,
    and the prune that follows fits when the steps so far used at most ``L * cost``.
    """
    kept, total, needed = 1.0, 0.0, math.inf
    fits = []  # ratios of the steps after which the budget still held
    for k, ratio in enumerate(sparsity):
        needed = min(needed, (total + (num_layers - k) * kept * (1.0 - ratio)) / num_layers)
        kept *= 1.0 - ratio
        total += kept
        if total <= num_layers * cost:
            fits.append(ratio)
    parts = []
    if needed <= 1.0:
        parts.append(f"--cost {math.ceil((needed + 1e-6) * 100) / 100:.2f} or more ends merging in time")
    if fits:
        parts.append(f"--ratio-lower-bound above {min(fits):.3f} stops merging before the budget runs out")
    shown = ", ".join(f"{r:.3f}" for r in sparsity)
    return f" (merge ratios {shown}); " + (" or ".join(parts) if parts else "raise --cost")
