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

Preprocessing is numpy (:func:`ffexport.video.preprocess.video_smart_resize`, patch 16, mean/std 0.5,
the video processor's class defaults: a pixel budget over the whole clip), equal to transformers'
``Qwen3VLVideoProcessor`` (tests/video/test_transformers_processors.py); the prompt's timestamps are
what ``Qwen3VLProcessor`` writes for frames given without metadata (frame i at i / 24 s, averaged per
temporal group). Every stage works for this family: ``ffexport case``, ``reference``, ``build`` (the
vision graph with its DeepStack levels, the prefill graph taking them as an input; also ``--streamed``, its
parity copy keeping the levels of the vision blocks it keeps), ``run`` (torch-free),
``calibrate`` and ``explain`` (cases through :meth:`Qwen3VLAdapter.case_from_video`, the schedule carrying
the blocks) and ``bench`` (the blocks and DeepStack levels as the build's prefill graph takes them);
docs/families.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

from ffexport.fusion.decoder import DecoderParts
from ffexport.fusion.layout import FrameBlock, FrameLayout
from ffexport.models.qwen2_vl import _QWEN_TOKENS
from ffexport.models.registry import FAMILIES, PRESETS, Preset
from ffexport.models.vision_tower import VisionTower
from ffexport.mrope import block_position_ids
from ffexport.prompt import group_timestamps, timestamped_video_prompt_ids
from ffexport.video.fixed import HALF_MEAN_STD
from ffexport.video.processor_config import VideoProcessorConfig


#: ``Qwen3VLVideoProcessor``'s class defaults: the pixel budget of the whole clip, and the fps
#: ``Qwen3VLProcessor`` assumes for frames given without metadata
PROCESSOR_MIN_PIXELS = 128 * 32 * 32
PROCESSOR_MAX_PIXELS = 768 * 32 * 32
PROCESSOR_DEFAULT_FPS = 24.0
#: the released checkpoints' video_preprocessor_config.json (Qwen/Qwen3-VL-*-Instruct): ``size`` =
#: {"shortest_edge": 4096, "longest_edge": 25165824}, a budget over the whole clip (64 frames of 448x448 fit)
RELEASED_VIDEO_PIXELS = (4096, 25165824)
#: what a model directory without a processor config falls back to (transformers' class defaults)
PROCESSOR_DEFAULTS = VideoProcessorConfig(min_pixels=PROCESSOR_MIN_PIXELS, max_pixels=PROCESSOR_MAX_PIXELS,
                                          patch_size=16, temporal_patch_size=2, merge_size=2,
                                          image_mean=HALF_MEAN_STD, image_std=HALF_MEAN_STD)


@dataclass(frozen=True)
class Qwen3VLAdapter:
    """How ffexport drives a Qwen3-VL model."""

    family: str = "qwen3_vl"
    model_class: type = Qwen3VLForConditionalGeneration
    logits_atol_fp32: float = 1e-5
    #: the CLI stages done for this family; the others refuse with one line
    stages: frozenset = frozenset({"case", "reference", "build", "run", "calibrate", "explain", "bench"})

    #: the vision graph takes the tower's learned positions and DeepStack blocks as data (ffexport/export/vision.py)
    vision_tower = staticmethod(VisionTower.qwen3_vl)
    #: the video processor's pixel limits hold for the whole clip, not per frame (buckets and cases both)
    pixel_budget: str = "clip"
    #: a model directory without a video processor config gets transformers' Qwen3VLVideoProcessor defaults
    processor_defaults = PROCESSOR_DEFAULTS

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

    @staticmethod
    def runtime_record(config: Qwen3VLConfig) -> dict:
        """What the torch-free runtime needs to make a case as :meth:`case_from_video` does (the
        manifest's ``model.video_input``): the processor's mean/std and the timestamped prompt's fps."""
        from ffexport.video.fixed import HALF_MEAN_STD

        return {"video_input": {"prompt": "timestamped_blocks", "fps": PROCESSOR_DEFAULT_FPS,
                                "mean": list(HALF_MEAN_STD), "std": list(HALF_MEAN_STD)}}

    @staticmethod
    def positions_record(config: Qwen3VLConfig) -> dict:
        """How the runtime builds position ids (the manifest's ``model.positions``): M-RoPE with every
        frame block a ``(1, h, w)`` grid (:func:`ffexport.mrope.block_position_ids`)."""
        return {"rule": "mrope_blocks"}

    def bucket_layout(self, config: Qwen3VLConfig, frames: int, tokenizer=None, *,
                      patches_per_frame: int) -> FrameLayout:
        """The frame blocks of a bucket's prompt without running the model (graph-only builds): from the
        timestamped prompt with ``tokenizer``; without one, the gap Qwen's tokenizer gives a timestamp
        under 10 s (``<|vision_end|>``, ``<``, two digits and ``.``, `` seconds``, ``>``,
        ``<|vision_start|>``: 8 tokens): structure only."""
        temporal = config.vision_config.temporal_patch_size
        stamps = group_timestamps(np.arange(frames), PROCESSOR_DEFAULT_FPS, temporal)
        if tokenizer is not None:
            ids = timestamped_video_prompt_ids(tokenizer, tokens_per_block=patches_per_frame, timestamps=stamps,
                                               prompt="")
            return FrameLayout.from_token_ids(ids, self.video_token_id(config), patches_per_frame)[1]
        gap = 8
        return FrameLayout(tuple(FrameBlock(i * (patches_per_frame + gap), patches_per_frame, patches_per_frame)
                                 for i in range(len(stamps))))

    def position_ids(self, config: Qwen3VLConfig, input_ids: np.ndarray, video_grid_thw: np.ndarray):
        """M-RoPE positions [3, L]: every block is a (1, h, w) grid (see the module docstring)."""
        return block_position_ids(input_ids, video_grid_thw, video_token_id=self.video_token_id(config),
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


    # ------------------------------------------------------------------ case and reference
    def case_from_video(self, config: Qwen3VLConfig, frames: np.ndarray, prompt: str, *, tokenizer,
                        video_pixels: tuple[int, int] | None = None):
        """A case (``input_ids``, ``pixel_values_videos``, ``video_grid_thw``) from uint8 frames [T, H, W, 3],
        as ``Qwen3VLProcessor`` makes it from the same frames (no metadata: fps 24, frame i at i / 24 s).
        ``video_pixels``: the clip's (min, max) pixel budget (a model directory's video processor
        config, or the preset's); None: the video processor's class defaults."""
        from ffexport.case import Case
        from ffexport.video.preprocess import preprocess_video, video_smart_resize

        vision = config.vision_config
        merge, temporal = vision.spatial_merge_size, vision.temporal_patch_size
        low, high = video_pixels or (PROCESSOR_MIN_PIXELS, PROCESSOR_MAX_PIXELS)
        size = video_smart_resize(len(frames), frames.shape[1], frames.shape[2], temporal_factor=temporal,
                                  factor=vision.patch_size * merge, min_pixels=low, max_pixels=high)
        pixels, grid = preprocess_video(frames, patch_size=vision.patch_size, temporal_patch_size=temporal,
                                        merge_size=merge, size=size, image_mean=HALF_MEAN_STD, image_std=HALF_MEAN_STD)
        grid_thw = tuple(int(x) for x in grid[0])
        stamps = group_timestamps(np.arange(len(frames)), PROCESSOR_DEFAULT_FPS, temporal)
        ids = video_prompt_ids(tokenizer, grid_thw=grid_thw, merge_size=merge, timestamps=stamps, prompt=prompt)
        return Case(ids, pixels, grid.reshape(1, 3).astype(np.int64))

    def prepare_inputs(self, model: Qwen3VLForConditionalGeneration, case) -> dict:
        """Decoder inputs for a case: embeddings with the features in every block, positions, the region's
        start and layout, and the DeepStack levels [k, N, D] (added after layers 0..k-1)."""
        from ffexport.errors import InputError

        config = model.config
        grid = case.grid
        merge = self.spatial_merge_size(config)
        vision = config.vision_config
        patch_dim = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
        if min(grid) <= 0 or grid[1] % merge or grid[2] % merge:
            raise InputError(f"video_grid_thw {grid} is not a valid grid for {merge}x{merge} patch merging")
        if case.pixel_values_videos.shape != (grid[0] * grid[1] * grid[2], patch_dim):
            raise InputError(f"pixel_values_videos has shape {list(case.pixel_values_videos.shape)}; video_grid_thw "
                             f"{grid} and the model need [{grid[0] * grid[1] * grid[2]}, {patch_dim}]")
        vocab = config.text_config.vocab_size
        if int(case.input_ids.max()) >= vocab or int(case.input_ids.min()) < 0:
            raise InputError(f"input_ids hold token ids outside the model's vocabulary [0, {vocab})")
        try:
            start, layout = self.layout(config, case.input_ids, grid)
            positions, delta = self.position_ids(config, case.input_ids, case.video_grid_thw)
        except ValueError as e:  # blocks that do not match the grid
            raise InputError(f"the case's video tokens do not match video_grid_thw {grid}: {e}") from e
        if any(b.length != layout.patches_per_frame for b in layout.blocks):
            raise InputError(f"every video block must hold {layout.patches_per_frame} tokens for grid {grid}; "
                             f"the prompt's blocks hold {[b.length for b in layout.blocks]}")
        dtype = next(model.parameters()).dtype
        with torch.no_grad():
            features, deepstack = self.video_features(model, torch.from_numpy(case.pixel_values_videos).to(dtype),
                                                      torch.from_numpy(case.video_grid_thw))
            embeds = self.embed_tokens(model, torch.from_numpy(case.input_ids)).clone()
            embeds[0, torch.from_numpy(case.input_ids[0] == self.video_token_id(config))] = features.to(embeds.dtype)
        return dict(inputs_embeds=embeds, position_ids=torch.from_numpy(positions),
                    video_start=torch.tensor(start, dtype=torch.int64), visual_tokens=layout.visual_tokens,
                    patches_per_frame=layout.patches_per_frame, rope_delta=delta, layout=layout,
                    deepstack=deepstack.to(embeds.dtype))




def video_prompt_ids(tokenizer, *, grid_thw: tuple[int, int, int], merge_size: int, timestamps: list[float],
                     prompt: str) -> np.ndarray:
    """int64 [1, L]: a user turn with the video as Qwen3-VL's processor writes it (one
    ``<t seconds><|vision_start|>pads<|vision_end|>`` per temporal group), then the assistant turn
    (:func:`ffexport.prompt.timestamped_video_prompt_ids`, which the torch-free runtime calls too)."""
    t, h, w = grid_thw
    if len(timestamps) != t:
        raise ValueError(f"{len(timestamps)} timestamps for {t} temporal groups")
    return timestamped_video_prompt_ids(tokenizer, tokens_per_block=(h // merge_size) * (w // merge_size),
                                        timestamps=timestamps, prompt=prompt)


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
    qwen3_vl_tiny_config, tiny=True, video_pixels=(PROCESSOR_MIN_PIXELS, PROCESSOR_MAX_PIXELS)))
PRESETS.register("qwen3vl-8b", Preset(
    "qwen3vl-8b", "qwen3_vl", "Qwen3-VL-8B-Instruct", qwen3_vl_8b_config, hub_id="Qwen/Qwen3-VL-8B-Instruct",
    video_pixels=RELEASED_VIDEO_PIXELS))
