"""Realized cost of a schedule, in the units of FrameFusion's budget (:mod:`ffexport.fusion.budget`).

The budget counts layer-equivalents: a layer whose attention sees a share ``s`` of the visual tokens
costs ``s``; ``cost`` is the average over the ``budget_layers`` the formula assumes. The realized cost of
a schedule is therefore::

    cost = (sum of share_i over layers i < budget_layers) / budget_layers

where ``share_i`` is the share of the bucket's visual tokens left at layer ``i``'s attention (after its
before-attention step). Layers the formula assumes beyond the model's depth (``--budget-layers 28`` on a
4-layer model) see the final share. With ``budget_layers`` equal to the model's depth (the default) this
is the mean share over the model's layers, and the dynamic reference's own runs meet ``cost`` up to the
rounding of its prune. Torch-free.
"""

from __future__ import annotations

from ffexport.fusion.schedule import Schedule


def layer_shares(schedule: Schedule, num_layers: int) -> list[float]:
    """Share of the visual tokens each of the model's ``num_layers`` layers' attention sees."""
    n = schedule.visual_tokens
    shares = []
    for layer in range(num_layers):
        before = schedule.at(layer, "before_attention")
        if before is not None:
            n -= before.remove
        shares.append(n / schedule.visual_tokens)
        after = schedule.at(layer, "after_attention")
        if after is not None:
            n -= after.remove
    return shares


def schedule_cost(schedule: Schedule, num_layers: int, budget_layers: int) -> float:
    """Realized cost (layer-equivalents per budget layer) of ``schedule`` on a model of ``num_layers``."""
    shares = layer_shares(schedule, num_layers)[:budget_layers]
    final = schedule.final_visual_tokens / schedule.visual_tokens
    shares += [final] * max(budget_layers - num_layers, 0)
    return sum(shares) / budget_layers


def model_cost(schedule: Schedule, num_layers: int) -> float:
    """Mean share of the visual tokens over the model's own layers (what the hardware computes)."""
    return sum(layer_shares(schedule, num_layers)) / num_layers
