"""LLaVA-NeXT-Video (``LlavaNextVideoForConditionalGeneration``): the adapter and its presets.

Each frame goes through CLIP at a fixed size (336: a 24x24 patch grid), the feature layer's patch
tokens (CLS dropped) are average-pooled with stride 2 (12x12 = 144 tokens), projected, and placed
contiguously frame after frame, with no separators: the partner of token ``i`` is ``i - 144``. The
LLM is a Llama with 1D RoPE. See :mod:`ffexport.models.llava_style` for what LLaVA families share.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration

from ffexport.models.llava_style import LlavaStyleAdapter, PromptTemplate
from ffexport.models.registry import FAMILIES, PRESETS, Preset


@dataclass(frozen=True)
class LlavaNextVideoAdapter(LlavaStyleAdapter):
    """How ffexport drives a LLaVA-NeXT-Video model."""

    def tokens_per_frame(self, config) -> int:
        if config.spatial_pool_mode not in ("average", "max"):
            raise NotImplementedError(f"spatial_pool_mode {config.spatial_pool_mode!r} (only average and max)")
        side = config.vision_config.image_size // config.vision_config.patch_size // config.spatial_pool_stride
        return side * side


ADAPTER = FAMILIES.register("llava_next_video", LlavaNextVideoAdapter(
    family="llava_next_video",
    model_class=LlavaNextVideoForConditionalGeneration,
    # the checkpoint's chat template: "USER: <video>\n{prompt} ASSISTANT:" after BOS
    prompt=PromptTemplate("USER: ", "\n{prompt} ASSISTANT:"),
    resize_mode="shortest_edge_crop",
    # build: the tower captured per frame count (ffexport/export/vision.py FixedTowerEncoder), 1D positions,
    # the parity gate with contract and oracle; run: the runtime's fixed-size preprocessing, chat template
    # and 1D positions from the manifest (tests/export/test_build_families.py); calibrate, explain, bench: buckets
    # and cases from the adapter (ffexport/export/buckets.py model_bucket; tests/calibrate/test_fixed_tower_stages.py)
    stages=("case", "reference", "build", "run", "calibrate", "explain", "bench"),
    missing={},
))


# ------------------------------------------------------------------ presets
def llava_next_video_7b_config() -> LlavaNextVideoConfig:
    """llava-hf/LLaVA-NeXT-Video-7B-hf's architecture: CLIP ViT-L/14-336 + Vicuna-7B (Llama)."""
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
    text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                       rms_norm_eps=1e-5, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlavaNextVideoConfig(vision_config=vision, text_config=text, image_token_index=32001,
                                video_token_index=32000, vision_feature_layer=-2,
                                vision_feature_select_strategy="default", spatial_pool_mode="average",
                                spatial_pool_stride=2, tie_word_embeddings=False)


def llava_next_video_tiny_config() -> LlavaNextVideoConfig:
    """A few-layer LLaVA-NeXT-Video with the real layout (CLIP tower at a fixed size, 2x2 average pooling,
    Llama decoder with GQA): 112x112 frames -> 8x8 patches -> 16 tokens per frame."""
    from ffexport.models.tiny_tokenizer import TINY_VOCAB_SIZE, tiny_special_token_ids

    ids = tiny_special_token_ids()
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=112, patch_size=14, projection_dim=32, hidden_act="quick_gelu",
                              initializer_range=0.1)
    text = LlamaConfig(vocab_size=TINY_VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                       rms_norm_eps=1e-6, initializer_range=0.1, bos_token_id=ids["eos_token_id"],
                       eos_token_id=ids["eos_token_id"], pad_token_id=ids["pad_token_id"])
    return LlavaNextVideoConfig(vision_config=vision, text_config=text, image_token_index=ids["image_token_id"],
                                video_token_index=ids["video_token_id"], vision_feature_layer=-2,
                                vision_feature_select_strategy="default", spatial_pool_mode="average",
                                spatial_pool_stride=2, tie_word_embeddings=False)


PRESETS.register("llava-next-video-tiny", Preset(
    "llava-next-video-tiny", "llava_next_video",
    "4-layer LLaVA-NeXT-Video (CLIP 112, 16 tokens/frame), deterministic random weights, built-in tokenizer",
    llava_next_video_tiny_config, tiny=True))
PRESETS.register("llava-next-video-7b", Preset(
    "llava-next-video-7b", "llava_next_video", "LLaVA-NeXT-Video-7B (CLIP-L/336 + Vicuna-7B, 144 tokens/frame)",
    llava_next_video_7b_config, hub_id="llava-hf/LLaVA-NeXT-Video-7B-hf"))
