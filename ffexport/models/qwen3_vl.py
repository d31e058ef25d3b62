"""Qwen3-VL (``Qwen3VLForConditionalGeneration``): the adapter and its presets.

What differs from Qwen2-VL, and how ffexport takes it:

* **frame blocks**: the processor writes every temporal group (2 input frames) as
  ``<{t:.1f} seconds><|vision_start|>`` P video tokens ``<|vision_end|>``, so the video is one
  frame block per group with text between blocks (:func:`video_prompt_ids`,
  :meth:`Qwen3VLAdapter.layout`); FrameFusion merges a token with the same patch of the previous
  block and never touches the timestamps;
* **positions**: each block is an image-like grid ``(1, h, w)`` placed after the text before it,
  and the text after a block continues at ``max(h, w) // merge`` past the block's start (the
  released rule and transformers 5.x agree here, since t = 1 per block);
* **decoder**: q/k RMSNorm per head before RoPE (found by the decoder on the attention module),
  interleaved M-RoPE (``DecoderParts.mrope_interleaved``), no attention biases, head_dim from the
  config;
* **DeepStack**: the vision tower returns k feature levels; level i is added to the visual
  tokens' hidden states after decoder layer i. ``ReducedDecoder.prefill(deepstack=...)`` carries
  the levels with their tokens, so after a merge a token's level is the mean over its merge
  group and after a prune the survivors keep theirs: the same indices as the hidden states.

Preprocessing (patch 16, mean/std 0.5, a frame budget over the whole video) is not reproduced in
numpy yet, so the CLI refuses every stage for this family (docs/families.md); the adapter is
exercised from Python (tests/models/test_qwen_families.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

from ffexport.fusion.decoder import DecoderParts
from ffexport.fusion.layout import FrameLayout
from ffexport.models.qwen2_vl import _QWEN_TOKENS, _RELEASED_PIXELS
from ffexport.models.registry import FAMILIES, PRESETS, Preset
from ffexport.mrope import mrope_position_ids


@dataclass(frozen=True)
class Qwen3VLAdapter:
    """How ffexport drives a Qwen3-VL model."""

    family: str = "qwen3_vl"
    model_class: type = Qwen3VLForConditionalGeneration
    logits_atol_fp32: float = 1e-5
    #: no CLI stage yet (no numpy preprocessing, no build path): every command refuses with one line
    stages: frozenset = frozenset()

    @staticmethod
    def num_layers(config: Qwen3VLConfig) -> int:
        return config.text_config.num_hidden_layers

    @staticmethod
    def video_token_id(config: Qwen3VLConfig) -> int:
        return config.video_token_id

    @staticmethod
    def spatial_merge_size(config: Qwen3VLConfig) -> int:
        return config.vision_config.spatial_merge_size

    def patches_per_frame(self, config: Qwen3VLConfig, grid_thw: tuple[int, int, int]) -> int:
        merge = self.spatial_merge_size(config)
        return (grid_thw[1] // merge) * (grid_thw[2] // merge)

    def layout(self, config: Qwen3VLConfig, input_ids: np.ndarray, grid_thw: tuple[int, int, int]):
        """``(video_start, FrameLayout)``: one frame block per temporal group, timestamps between."""
        start, layout = FrameLayout.from_token_ids(input_ids, self.video_token_id(config),
                                                   self.patches_per_frame(config, grid_thw))
        if len(layout.blocks) != grid_thw[0] or layout.frames != grid_thw[0]:
            raise ValueError(f"the prompt has {len(layout.blocks)} video blocks, the grid {grid_thw[0]} temporal groups")
        return start, layout

    def position_ids(self, config: Qwen3VLConfig, input_ids: np.ndarray, video_grid_thw: np.ndarray):
        """M-RoPE positions [3, L]: every block is a (1, h, w) grid (see the module docstring)."""
        grid = np.asarray(video_grid_thw, dtype=np.int64).reshape(-1, 3)
        blocks = np.repeat(grid, grid[:, 0], axis=0)
        blocks[:, 0] = 1
        return mrope_position_ids(input_ids, blocks, video_token_id=self.video_token_id(config),
                                  spatial_merge_size=self.spatial_merge_size(config))

    @staticmethod
    def decoder_parts(model: Qwen3VLForConditionalGeneration) -> DecoderParts:
        text = model.model.language_model
        cfg = text.config
        rope = text.rotary_emb
        return DecoderParts(
            layers=text.layers, norm=text.norm, lm_head=model.lm_head, inv_freq=rope.inv_freq,
            mrope_section=tuple(rope.mrope_section), num_heads=cfg.num_attention_heads,
            num_kv_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim, mrope_interleaved=True,
        )

    @staticmethod
    def embed_tokens(model: Qwen3VLForConditionalGeneration, input_ids: torch.Tensor) -> torch.Tensor:
        return model.model.language_model.embed_tokens(input_ids)

    @staticmethod
    def video_features(model: Qwen3VLForConditionalGeneration, pixel_values_videos: torch.Tensor,
                       video_grid_thw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features [N, D], deepstack [k, N, D])`` for the video tokens, in order."""
        out = model.model.get_video_features(pixel_values_videos, video_grid_thw, return_dict=True)
        features = torch.cat(list(out.pooler_output), dim=0)
        deepstack = torch.stack([torch.cat(list(level), dim=0) for level in out.deepstack_features])
        return features, deepstack


def video_prompt_ids(tokenizer, *, grid_thw: tuple[int, int, int], merge_size: int, timestamps: list[float],
                     prompt: str) -> np.ndarray:
    """int64 [1, L]: a user turn with the video as Qwen3-VL's processor writes it (one
    ``<t seconds><|vision_start|>pads<|vision_end|>`` per temporal group), then the assistant turn."""
    t, h, w = grid_thw
    if len(timestamps) != t:
        raise ValueError(f"{len(timestamps)} timestamps for {t} temporal groups")
    per_block = (h // merge_size) * (w // merge_size)
    video = "".join(f"<{s:.1f} seconds><|vision_start|>" + "<|video_pad|>" * per_block + "<|vision_end|>"
                    for s in timestamps)
    text = f"<|im_start|>user\n{video}{prompt}<|im_end|>\n<|im_start|>assistant\n"
    return np.asarray([tokenizer(text, add_special_tokens=False)["input_ids"]], dtype=np.int64)


ADAPTER = FAMILIES.register("qwen3_vl", Qwen3VLAdapter())


# ------------------------------------------------------------------ presets
def qwen3_vl_8b_config() -> Qwen3VLConfig:
    """Qwen3-VL-8B-Instruct's architecture."""
    text = dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=262144,
                rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 5e6,
                                                    "mrope_section": [24, 20, 20], "mrope_interleaved": True})
    vision = dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096,
                  patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                  deepstack_visual_indexes=[8, 16, 24])
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **_QWEN_TOKENS)


def qwen3_vl_tiny_config() -> Qwen3VLConfig:
    """A few-layer Qwen3-VL with the real layout (q/k norms, interleaved M-RoPE, 2 DeepStack levels)."""
    from ffexport.models.tiny_tokenizer import TINY_VOCAB_SIZE, tiny_special_token_ids

    ids = tiny_special_token_ids()
    text = dict(vocab_size=TINY_VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                initializer_range=0.1, rms_norm_eps=1e-6, bos_token_id=ids["eos_token_id"],
                eos_token_id=ids["eos_token_id"], pad_token_id=ids["pad_token_id"],
                rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [2, 3, 3],
                                 "mrope_interleaved": True})
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                  deepstack_visual_indexes=[0, 1], initializer_range=0.1)
    return Qwen3VLConfig(
        text_config=text, vision_config=vision, tie_word_embeddings=False,
        image_token_id=ids["image_token_id"], video_token_id=ids["video_token_id"],
        vision_start_token_id=ids["vision_start_token_id"], vision_end_token_id=ids["vision_end_token_id"],
    )


PRESETS.register("qwen3vl-tiny", Preset(
    "qwen3vl-tiny", "qwen3_vl", "4-layer Qwen3-VL, deterministic random weights, built-in tokenizer (tests)",
    qwen3_vl_tiny_config, tiny=True, video_pixels=(64 * 64, 256 * 256)))
PRESETS.register("qwen3vl-8b", Preset(
    "qwen3vl-8b", "qwen3_vl", "Qwen3-VL-8B-Instruct", qwen3_vl_8b_config, hub_id="Qwen/Qwen3-VL-8B-Instruct",
    video_pixels=_RELEASED_PIXELS))
