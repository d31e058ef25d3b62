"""The modules that become graphs: token embedding, reduced prefill, one-token decode.

Each takes and returns plain tensors in the order and with the names of ``docs/build-format.md``.
The vision encoder for a bucket's grid is :class:`ffexport.export.vision.VisionEncoder`.
"""

from __future__ import annotations

import torch
from torch import nn

from ffexport.fusion.decoder import ReducedDecoder, StaticPrefill
from ffexport.fusion.reducers import StepOps
from ffexport.fusion.schedule import Schedule


def present_names(num_layers: int, prefix: str = "present") -> list[str]:
    return [f"{prefix}.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


class EmbedTokens(nn.Module):
    """``input_ids`` [1, L] -> ``inputs_embeds`` [1, L, D]."""

    def __init__(self, embed_tokens: nn.Module) -> None:
        super().__init__()
        self.embed_tokens = embed_tokens

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)


class PrefillGraph(nn.Module):
    """The static-schedule prefill; logits always float32. ``steps``: how merge/prune steps compute
    (None: standard ops; ``ffexport.export.plugin_ops.PluginSteps()``: one plugin node per step)."""

    def __init__(self, decoder: ReducedDecoder, schedule: Schedule, *, steps: StepOps | None = None) -> None:
        super().__init__()
        self.prefill = StaticPrefill(decoder, schedule, steps=steps)

    def forward(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor, video_start: torch.Tensor):
        logits, *presents = self.prefill(inputs_embeds, position_ids, video_start)
        return (logits.float(), *presents)


class DecodeStep(nn.Module):
    """One generated token: ``input_ids`` [1, 1], ``position_ids`` [3, 1], then each layer's past key
    and value (its own length) -> logits (float32) and the grown caches."""

    def __init__(self, decoder: ReducedDecoder, embed_tokens: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.embed_tokens = embed_tokens

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, *past: torch.Tensor):
        pairs = list(zip(past[0::2], past[1::2]))
        result = self.decoder.decode(self.embed_tokens(input_ids), position_ids, pairs)
        flat = [t for kv in result.presents for t in kv]
        return (result.logits.float(), *flat)
