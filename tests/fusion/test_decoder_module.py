"""The decoder is an ``nn.Module``: the module API (``.to``, ``.half``, ``.float``) must work on it.

A method named ``_apply`` once shadowed ``nn.Module._apply``, so ``.to(dtype)`` on any module holding
the decoder raised TypeError.
"""

import torch

from ffexport.fusion.decoder import ReducedDecoder


def test_dtype_moves_reach_the_decoder_weights(tiny):
    decoder = ReducedDecoder(tiny.adapter.decoder_parts(tiny.model))
    holder = torch.nn.ModuleDict({"decoder": decoder})
    try:
        holder.to(torch.float64)
        assert all(p.dtype == torch.float64 for p in decoder.parameters())
    finally:
        holder.to(torch.float32)
    assert all(p.dtype == torch.float32 for p in decoder.parameters())
