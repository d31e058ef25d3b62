"""What ffexport's vision exporter (:mod:`ffexport.export.vision`) needs to know about a Qwen-style
vision tower, as data an adapter declares (``adapter.vision_tower(vision_config)``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VisionTower:
    """What the exporter needs to know about a Qwen-style vision tower (patch embedding, blocks of
    ``norm1 -> attn.qkv/attn.proj`` and ``norm2 -> mlp``, a merger of ``merge x merge`` patches).

    ``window``: merged tokens per side of an attention window (None: every block attends to the
    whole frame); ``full_blocks``: the blocks that attend to the whole frame anyway.
    ``position_grid``: side of a learned square position-embedding table (``visual.pos_embed``)
    resampled bilinearly (corners aligned) to each frame's patch grid and added after the patch
    embedding (None: no learned positions); ``deepstack``: blocks whose output also goes through
    ``visual.deepstack_merger_list[i]`` into a DeepStack level (a second output of the graph).
    """

    embed_dim: int
    out_dim: int
    num_heads: int
    window: int | None = None
    full_blocks: tuple[int, ...] = ()
    position_grid: int | None = None
    deepstack: tuple[int, ...] = ()

    @classmethod
    def qwen2_vl(cls, config) -> VisionTower:
        """Qwen2-VL's tower: LayerNorm, GELU MLP, every block attends to the whole frame."""
        return cls(embed_dim=int(config.embed_dim), out_dim=int(config.hidden_size), num_heads=int(config.num_heads))

    @classmethod
    def qwen2_5_vl(cls, config) -> VisionTower:
        """Qwen2.5-VL's tower: window attention except in ``fullatt_block_indexes``."""
        window = int(config.window_size) // int(config.spatial_merge_size) // int(config.patch_size)
        if window < 1:
            raise ValueError(f"window_size {config.window_size} is smaller than one merged token "
                             f"({config.spatial_merge_size * config.patch_size} px)")
        return cls(embed_dim=int(config.hidden_size), out_dim=int(config.out_hidden_size),
                   num_heads=int(config.num_heads), window=window,
                   full_blocks=tuple(int(i) for i in config.fullatt_block_indexes))

    @classmethod
    def qwen3_vl(cls, config) -> VisionTower:
        """Qwen3-VL's tower: learned positions interpolated to the grid, DeepStack levels after
        ``deepstack_visual_indexes``, every block attends to the whole frame."""
        side = int(round(int(config.num_position_embeddings) ** 0.5))
        if side * side != int(config.num_position_embeddings):
            raise ValueError(f"num_position_embeddings {config.num_position_embeddings} is not a square grid")
        return cls(embed_dim=int(config.hidden_size), out_dim=int(config.out_hidden_size),
                   num_heads=int(config.num_heads), position_grid=side,
                   deepstack=tuple(int(i) for i in config.deepstack_visual_indexes))
