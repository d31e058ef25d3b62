"""LLaVA-OneVision / LLaVA-Video (``LlavaOnevisionForConditionalGeneration``): the adapter and its presets.

Each frame goes through SigLIP at a fixed size (384: a 27x27 patch grid), is projected, then
bilinearly pooled to ``ceil(27 / 2)`` = 14 per side (196 tokens); the frames' tokens are contiguous
and one learned newline token follows the last frame. FrameFusion's visual span is the
``frames x 196`` frame tokens (partner of ``i``: ``i - 196``); the newline is text after the span,
never merged or pruned. The LLM is a Qwen2 with 1D RoPE. See :mod:`ffexport.models.llava_style`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, Qwen2Config, SiglipVisionConfig

from ffexport.models.llava_style import LlavaStyleAdapter, PromptTemplate
from ffexport.models.registry import FAMILIES, PRESETS, Preset
from ffexport.video.fixed import HALF_MEAN_STD


@dataclass(frozen=True)
class LlavaOnevisionAdapter(LlavaStyleAdapter):
    """How ffexport drives a LLaVA-OneVision / LLaVA-Video model."""

    def tokens_per_frame(self, config) -> int:
        side = math.ceil(config.vision_config.image_size // config.vision_config.patch_size / 2)
        return side * side


ADAPTER = FAMILIES.register("llava_onevision", LlavaOnevisionAdapter(
    family="llava_onevision",
    model_class=LlavaOnevisionForConditionalGeneration,
    # the checkpoints' Qwen2 chat template around one video
    prompt=PromptTemplate("<|im_start|>user\n", "\n{prompt}<|im_end|>\n<|im_start|>assistant\n"),
    trailing_video_tokens=1,  # image_newline after the last frame
    resize_mode="square",
    # the released checkpoints' video_preprocessor_config (SigLIP normalisation), not the class default
    image_mean=HALF_MEAN_STD,
    image_std=HALF_MEAN_STD,
    # every stage: build and run as LLaVA-NeXT-Video (its newline token after the frames: trailing_video_tokens);
    # calibrate, explain, bench: buckets and cases from the adapter (tests/calibrate/test_fixed_tower_stages.py)
    stages=("case", "reference", "build", "run", "calibrate", "explain", "bench"),
    missing={},
))


# ------------------------------------------------------------------ presets
def llava_video_7b_config() -> LlavaOnevisionConfig:
    """llava-hf/LLaVA-Video-7B-Qwen2-hf's architecture: SigLIP-so400m/14-384 (26 blocks) + Qwen2-7B."""
    vision = SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=26,
                                num_attention_heads=16, image_size=384, patch_size=14,
                                vision_use_head=False)
    text = Qwen2Config(vocab_size=152128, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
                       rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                       use_sliding_window=False, sliding_window=32768, bos_token_id=151643, eos_token_id=151645)
    return LlavaOnevisionConfig(vision_config=vision, text_config=text, image_token_index=151646,
                                video_token_index=151647, vision_feature_layer=-1,
                                vision_feature_select_strategy="full", tie_word_embeddings=False)


def llava_onevision_tiny_config() -> LlavaOnevisionConfig:
    """A few-layer LLaVA-OneVision with the real layout (SigLIP at a fixed size with an odd patch grid,
    bilinear 2x pooling with ceil, trailing newline, Qwen2 decoder with GQA and q/k/v biases):
    98x98 frames -> 7x7 patches -> 4x4 = 16 tokens per frame (+1 newline after the last)."""
    from ffexport.models.tiny_tokenizer import TINY_VOCAB_SIZE, tiny_special_token_ids

    ids = tiny_special_token_ids()
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=98, patch_size=14, vision_use_head=False)
    text = Qwen2Config(vocab_size=TINY_VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                       rms_norm_eps=1e-6, initializer_range=0.1, use_sliding_window=False, sliding_window=4096,
                       rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                       bos_token_id=ids["eos_token_id"], eos_token_id=ids["eos_token_id"],
                       pad_token_id=ids["pad_token_id"])
    return LlavaOnevisionConfig(vision_config=vision, text_config=text, image_token_index=ids["image_token_id"],
                                video_token_index=ids["video_token_id"], vision_feature_layer=-1,
                                vision_feature_select_strategy="full", tie_word_embeddings=False)


PRESETS.register("llava-onevision-tiny", Preset(
    "llava-onevision-tiny", "llava_onevision",
    "4-layer LLaVA-OneVision (SigLIP 98, 16 tokens/frame + newline), deterministic random weights, built-in tokenizer",
    llava_onevision_tiny_config, tiny=True))
PRESETS.register("llava-video-7b", Preset(
    "llava-video-7b", "llava_onevision", "LLaVA-Video-7B-Qwen2 (SigLIP-384 + Qwen2-7B, 196 tokens/frame)",
    llava_video_7b_config, hub_id="llava-hf/LLaVA-Video-7B-Qwen2-hf"))
