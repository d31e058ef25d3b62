"""Qwen2-VL (``Qwen2VLForConditionalGeneration``): the adapter and its presets.

Mostly declarative: where the decoder's pieces are, how many patches a frame has, how positions
are built (the released M-RoPE rule, :mod:`ffexport.mrope`), and the architectures of the presets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

from ffexport.fusion.decoder import DecoderParts
from ffexport.models.registry import FAMILIES, PRESETS, Preset
from ffexport.models.vision_tower import VisionTower
from ffexport.mrope import mrope_position_ids

# Token ids of the released Qwen2-VL tokenizer.
_QWEN_TOKENS = dict(
    image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653
)


@dataclass(frozen=True)
class Qwen2VLAdapter:
    """How ffexport drives a Qwen2-VL model."""

    family: str = "qwen2_vl"
    model_class: type = Qwen2VLForConditionalGeneration
    #: max |logits - reference| for fp32 parity checks (static vs dynamic, graph vs PyTorch)
    logits_atol_fp32: float = 1e-5

    # ---------------------------------------------------------------- config
    @staticmethod
    def num_layers(config: Qwen2VLConfig) -> int:
        return config.text_config.num_hidden_layers

    @staticmethod
    def video_token_id(config: Qwen2VLConfig) -> int:
        return config.video_token_id

    @staticmethod
    def spatial_merge_size(config: Qwen2VLConfig) -> int:
        return config.vision_config.spatial_merge_size

    def patches_per_frame(self, config: Qwen2VLConfig, grid_thw: tuple[int, int, int]) -> int:
        """Visual tokens per temporal group (a "frame": ``temporal_patch_size`` input frames)."""
        merge = self.spatial_merge_size(config)
        return (grid_thw[1] // merge) * (grid_thw[2] // merge)

    #: the vision tower as the exporter sees it (ffexport/export/vision.py)
    vision_tower = staticmethod(VisionTower.qwen2_vl)

    def temporal_step(self, config: Qwen2VLConfig) -> float:
        """Temporal M-RoPE index per grid step of a video (1: the step itself)."""
        return 1.0

    def positions_record(self, config: Qwen2VLConfig) -> dict:
        """How the runtime builds position ids (the manifest's ``model.positions``, numpy only)."""
        return {"rule": "mrope", "temporal_step": self.temporal_step(config)}

    def position_ids(self, config: Qwen2VLConfig, input_ids: np.ndarray, video_grid_thw: np.ndarray):
        """M-RoPE positions [3, L] and the delta for generated tokens (released rule)."""
        return mrope_position_ids(
            input_ids,
            video_grid_thw,
            video_token_id=self.video_token_id(config),
            spatial_merge_size=self.spatial_merge_size(config),
            temporal_step=self.temporal_step(config),
        )

    # ----------------------------------------------------------------- model
    @staticmethod
    def decoder_parts(model: Qwen2VLForConditionalGeneration) -> DecoderParts:
        text = model.model.language_model
        cfg = text.config
        rope = text.rotary_emb
        return DecoderParts(
            layers=text.layers,
            norm=text.norm,
            lm_head=model.lm_head,
            inv_freq=rope.inv_freq,
            mrope_section=tuple(rope.mrope_section),
            num_heads=cfg.num_attention_heads,
            num_kv_heads=cfg.num_key_value_heads,
            head_dim=cfg.hidden_size // cfg.num_attention_heads,
        )

    @staticmethod
    def embed_tokens(model: Qwen2VLForConditionalGeneration, input_ids: torch.Tensor) -> torch.Tensor:
        return model.model.language_model.embed_tokens(input_ids)

    @staticmethod
    def video_features(
        model: Qwen2VLForConditionalGeneration, pixel_values_videos: torch.Tensor, video_grid_thw: torch.Tensor
    ) -> torch.Tensor:
        """Vision encoder + patch merger: [N, hidden] features for the video tokens."""
        out = model.model.get_video_features(pixel_values_videos, video_grid_thw, return_dict=True)
        return torch.cat(list(out.pooler_output), dim=0)


ADAPTER = FAMILIES.register("qwen2_vl", Qwen2VLAdapter())


# ------------------------------------------------------------------ presets
def _vision(hidden_size: int, **overrides) -> dict:
    vision = dict(
        depth=32, embed_dim=1280, hidden_size=hidden_size, hidden_act="quick_gelu", mlp_ratio=4, num_heads=16,
        in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
    )
    vision.update(overrides)
    return vision


def _text(**fields) -> dict:
    text = dict(
        hidden_act="silu", max_position_embeddings=32768, rms_norm_eps=1e-6, use_sliding_window=False,
        sliding_window=32768, max_window_layers=28, rope_parameters={"rope_type": "default", "rope_theta": 1e6,
        "mrope_section": [16, 24, 24]}, bos_token_id=151643, eos_token_id=151645,
    )
    text.update(fields)
    return text


def qwen2vl_7b_config() -> Qwen2VLConfig:
    """Qwen2-VL-7B-Instruct's architecture."""
    text = _text(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4)
    return Qwen2VLConfig(text_config=text, vision_config=_vision(3584), tie_word_embeddings=False, **_QWEN_TOKENS)


def qwen2vl_2b_config() -> Qwen2VLConfig:
    """Qwen2-VL-2B-Instruct's architecture."""
    text = _text(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                 num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True)
    return Qwen2VLConfig(text_config=text, vision_config=_vision(1536), tie_word_embeddings=True, **_QWEN_TOKENS)


def qwen2vl_tiny_config() -> Qwen2VLConfig:
    """A few-layer Qwen2-VL with the real layout (GQA, M-RoPE, 2x2 patch merging) for tests."""
    from ffexport.models.tiny_tokenizer import TINY_VOCAB_SIZE, tiny_special_token_ids

    ids = tiny_special_token_ids()
    text = _text(vocab_size=TINY_VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, sliding_window=4096,
                 max_window_layers=4, initializer_range=0.1, bos_token_id=ids["eos_token_id"],
                 eos_token_id=ids["eos_token_id"], pad_token_id=ids["pad_token_id"],
                 rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]})
    vision = _vision(64, depth=2, embed_dim=32, num_heads=2, mlp_ratio=2, initializer_range=0.1)
    return Qwen2VLConfig(
        text_config=text, vision_config=vision, tie_word_embeddings=False,
        image_token_id=ids["image_token_id"], video_token_id=ids["video_token_id"],
        vision_start_token_id=ids["vision_start_token_id"], vision_end_token_id=ids["vision_end_token_id"],
    )


#: min/max pixels of the released checkpoints' preprocessor_config.json (used for video frames too)
_RELEASED_PIXELS = (56 * 56, 28 * 28 * 16384)

PRESETS.register("qwen2vl-tiny", Preset(
    "qwen2vl-tiny", "qwen2_vl", "4-layer Qwen2-VL, deterministic random weights, built-in tokenizer (tests, demos)",
    qwen2vl_tiny_config, tiny=True, video_pixels=(56 * 56, 224 * 224)))
PRESETS.register("qwen2vl-2b", Preset(
    "qwen2vl-2b", "qwen2_vl", "Qwen2-VL-2B-Instruct", qwen2vl_2b_config, hub_id="Qwen/Qwen2-VL-2B-Instruct",
    video_pixels=_RELEASED_PIXELS))
PRESETS.register("qwen2vl-7b", Preset(
    "qwen2vl-7b", "qwen2_vl", "Qwen2-VL-7B-Instruct", qwen2vl_7b_config, hub_id="Qwen/Qwen2-VL-7B-Instruct",
    video_pixels=_RELEASED_PIXELS))
