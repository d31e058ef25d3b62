"""Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``): the adapter and its presets.

What differs from Qwen2-VL (:mod:`ffexport.models.qwen2_vl`), and nothing else:

* the vision tower (window attention, RMSNorm, SwiGLU MLP): the reference calls it through
  ``get_video_features`` like Qwen2-VL's; the exporter takes its sizes and windows as data
  (``vision_tower``: :class:`~ffexport.models.vision_tower.VisionTower`, ``ffexport/export/vision.py``);
* video positions: the temporal M-RoPE index of grid step ``t`` is
  ``int(t * seconds_per_grid * tokens_per_second)`` (absolute time, not the step), the text after
  the video starts at the largest video position plus one (the released rule, as for Qwen2-VL:
  transformers 5.3+ advances by ``max(h, w) // merge`` instead; see :mod:`ffexport.mrope`);
  ``seconds_per_grid`` is ``temporal_patch_size / fps`` (the processor's ``second_per_grid_ts``;
  fps 2, transformers' default, gives 1.0). The adapter declares ``temporal_step``; the numpy rule
  is :func:`ffexport.mrope.mrope_position_ids` (the runtime reads the step from the manifest).

The decoder is Qwen2's (q/k/v biases, GQA, M-RoPE with ``mrope_section``), so the video is one
contiguous frame block and the FrameFusion math is shared unchanged. Preprocessing is Qwen2-VL's
(same ``Qwen2VLVideoProcessor``, same defaults).
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from ffexport.models.qwen2_vl import _QWEN_TOKENS, _RELEASED_PIXELS, Qwen2VLAdapter, _text
from ffexport.models.registry import FAMILIES, PRESETS, Preset
from ffexport.models.vision_tower import VisionTower


@dataclass(frozen=True)
class Qwen2_5_VLAdapter(Qwen2VLAdapter):
    """How ffexport drives a Qwen2.5-VL model (Qwen2-VL's adapter with time-scaled positions and a
    windowed vision tower)."""

    family: str = "qwen2_5_vl"
    model_class: type = Qwen2_5_VLForConditionalGeneration
    #: seconds one temporal grid step covers (the processor's second_per_grid_ts: 2 frames at fps 2)
    seconds_per_grid: float = 1.0
    #: pipeline stages that work for this family (docs/families.md, tests/export/test_build_families.py):
    #: all of them; the vision graph takes the tower's windows as data (``vision_tower``) and the
    #: runtime the temporal step from the manifest (``positions_record``)
    stages: frozenset = frozenset({"case", "reference", "build", "run", "calibrate", "explain", "bench"})

    vision_tower = staticmethod(VisionTower.qwen2_5_vl)

    def temporal_step(self, config: Qwen2_5_VLConfig) -> float:
        """Temporal M-RoPE index per grid step: ``seconds_per_grid * tokens_per_second``."""
        return float(self.seconds_per_grid * config.vision_config.tokens_per_second)


ADAPTER = FAMILIES.register("qwen2_5_vl", Qwen2_5_VLAdapter())


# ------------------------------------------------------------------ presets
def _vision(out_hidden_size: int, **overrides) -> dict:
    vision = dict(
        depth=32, hidden_size=1280, intermediate_size=3420, hidden_act="silu", num_heads=16, in_channels=3,
        patch_size=14, spatial_merge_size=2, temporal_patch_size=2, tokens_per_second=2, window_size=112,
        out_hidden_size=out_hidden_size, fullatt_block_indexes=[7, 15, 23, 31],
    )
    vision.update(overrides)
    return vision


def qwen2_5_vl_7b_config() -> Qwen2_5_VLConfig:
    """Qwen2.5-VL-7B-Instruct's architecture."""
    text = _text(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000)
    return Qwen2_5_VLConfig(text_config=text, vision_config=_vision(3584), tie_word_embeddings=False,
                            **_QWEN_TOKENS)


def qwen2_5_vl_tiny_config() -> Qwen2_5_VLConfig:
    """A few-layer Qwen2.5-VL with the real layout (GQA, M-RoPE, window + full attention blocks)."""
    from ffexport.models.tiny_tokenizer import TINY_VOCAB_SIZE, tiny_special_token_ids

    ids = tiny_special_token_ids()
    text = _text(vocab_size=TINY_VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, sliding_window=4096,
                 max_window_layers=4, initializer_range=0.1, bos_token_id=ids["eos_token_id"],
                 eos_token_id=ids["eos_token_id"], pad_token_id=ids["pad_token_id"],
                 rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]})
    # window 56 px = 2x2 merged tokens: a 112x112 frame has 4 windows, so window attention really acts
    vision = _vision(64, depth=2, hidden_size=32, intermediate_size=64, num_heads=2, window_size=56,
                     fullatt_block_indexes=[1], initializer_range=0.1)
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, tie_word_embeddings=False,
        image_token_id=ids["image_token_id"], video_token_id=ids["video_token_id"],
        vision_start_token_id=ids["vision_start_token_id"], vision_end_token_id=ids["vision_end_token_id"],
    )


PRESETS.register("qwen2.5vl-tiny", Preset(
    "qwen2.5vl-tiny", "qwen2_5_vl",
    "4-layer Qwen2.5-VL, deterministic random weights, built-in tokenizer (tests, demos)",
    qwen2_5_vl_tiny_config, tiny=True, video_pixels=(56 * 56, 224 * 224)))
PRESETS.register("qwen2.5vl-7b", Preset(
    "qwen2.5vl-7b", "qwen2_5_vl", "Qwen2.5-VL-7B-Instruct", qwen2_5_vl_7b_config,
    hub_id="Qwen/Qwen2.5-VL-7B-Instruct", video_pixels=_RELEASED_PIXELS))
