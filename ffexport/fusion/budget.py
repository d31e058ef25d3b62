"""FrameFusion's cost budget: how much the next step may remove.

``budget(sparsity, cost, num_layers)`` is the authors' ``_compute_pruning_ratio``: after merge steps
that removed the fractions ``sparsity`` (each of the tokens left at that step), the remaining compute
(in units of one full layer over all visual tokens) must keep the average cost per layer at
``cost``. It returns the fraction of the current tokens that the next step must remove.
"""

from __future__ import annotations

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
