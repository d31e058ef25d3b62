"""InternVL 2.5 / 3 (``InternVLForConditionalGeneration``, the -hf checkpoints): the adapter and its presets.

Each frame goes through InternViT at a fixed size (448: a 32x32 patch grid, CLS dropped), a 0.5
pixel shuffle (16x16 = 256 tokens) and the projector. The transformers processor writes a video as
frame blocks joined by text::

    Frame1: <img> 256 x <IMG_CONTEXT> </img>\\nFrame2: <img> ... </img> ...

and returns the frames as ``pixel_values`` ``[frames, 3, 448, 448]`` (the model takes videos through
its image path). The adapter declares that layout as one frame block per ``<IMG_CONTEXT>`` run
(:meth:`InternVLAdapter.layout`, :mod:`ffexport.fusion.layout`): FrameFusion merges a token with the
same patch of the previous frame's block and ranks visual tokens only; the text between blocks
(``</img>\\nFrame2: <img>``) is never merged or pruned and keeps its positions. The LLM is a Qwen2
(InternVL3) with 1D RoPE. See :mod:`ffexport.models.llava_style`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig, Qwen2Config

from ffexport.errors import InputError, ScheduleError
from ffexport.fusion.layout import FrameBlock, FrameLayout
from ffexport.models.llava_style import LlavaStyleAdapter, PromptTemplate
from ffexport.models.registry import FAMILIES, PRESETS, Preset
from ffexport.video.fixed import IMAGENET_MEAN, IMAGENET_STD
from ffexport.video_text import VideoText

#: what transformers' InternVL processor returns for a video prompt (frames go into pixel_values)
INTERNVL_CASE_KEYS = ("input_ids", "attention_mask", "pixel_values")


@dataclass(frozen=True)
class InternVLAdapter(LlavaStyleAdapter):
    """How ffexport drives an InternVL model: one frame block per frame, text between blocks."""

    @staticmethod
    def video_token_id(config) -> int:
        return config.image_token_id  # <IMG_CONTEXT>: videos use the image placeholder

    @staticmethod
    def frame_size(config) -> int:
        size = config.vision_config.image_size
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    def tokens_per_frame(self, config) -> int:
        patch = config.vision_config.patch_size
        side = int(self.frame_size(config) // int(patch[0] if isinstance(patch, (list, tuple)) else patch)
                   * config.downsample_ratio)
        return side * side

    def pixel_shape(self, config, frames: int) -> tuple[int, ...]:
        """The processor's ``pixel_values`` ``[T, C, S, S]`` (frames through the image path)."""
        size = self.frame_size(config)
        return (int(frames), int(config.vision_config.num_channels), size, size)

    def bucket_layout(self, config, frames: int, tokenizer=None) -> FrameLayout:
        """The frame blocks of a ``frames``-frame prompt: from the tokenized video text with ``tokenizer``;
        without one (graph-only builds of a preset whose tokenizer is not here) the gaps Qwen2's tokenizer
        gives (``</img>``, ``\\n``, ``Frame``, one token per digit, ``:``, `` ``, ``<img>``): structure only."""
        per_frame = self.tokens_per_frame(config)
        if tokenizer is not None:
            return self.layout(config, self.video_prompt_ids(config, tokenizer, frames, ""))[1]
        blocks, start = [], 0
        for index in range(1, frames + 1):
            if index > 1:
                start += 6 + len(str(index))
            blocks.append(FrameBlock(start, per_frame, per_frame))
            start += per_frame
        return FrameLayout(tuple(blocks))

    @staticmethod
    def video_features(model, pixel_values: torch.Tensor, video_grid_thw=None) -> torch.Tensor:
        config = model.config
        out = model.model.get_image_features(
            pixel_values, vision_feature_layer=config.vision_feature_layer,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
        )
        return out.pooler_output.reshape(-1, out.pooler_output.shape[-1])

    # ------------------------------------------------------------------ cases
    def check_case(self, config, case) -> None:
        self.check_ids(config, case)
        pixels = case.pixel_values_videos
        size, channels = self.frame_size(config), config.vision_config.num_channels
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (channels, size, size):
            raise InputError(
                f"pixel_values must have shape [frames, {channels}, {size}, {size}] for this model, "
                f"got {list(pixels.shape)}"
            )
        found = int(np.count_nonzero(case.input_ids == self.video_token_id(config)))
        expected = pixels.shape[0] * self.tokens_per_frame(config)
        if found != expected:
            raise InputError(f"input_ids hold {found} frame tokens but {pixels.shape[0]} frames give {expected}")

    def layout(self, config, input_ids: np.ndarray) -> tuple[int, FrameLayout]:
        """``(video_start, layout)``: one frame block per ``<IMG_CONTEXT>`` run, each exactly one frame,
        the ``</img>\\nFrameN: <img>`` text between them outside every block."""
        per_frame = self.tokens_per_frame(config)
        try:
            start, layout = FrameLayout.from_token_ids(input_ids, self.video_token_id(config), per_frame)
        except ScheduleError as e:
            raise InputError(str(e)) from e
        lengths = [b.length for b in layout.blocks]
        if any(n != per_frame for n in lengths):
            raise InputError(f"each frame block must hold {per_frame} <IMG_CONTEXT> tokens, input_ids hold runs of "
                             f"{lengths}")
        return start, layout

    def prepare_inputs(self, model, case) -> dict:
        config = model.config
        self.check_case(config, case)
        start, layout = self.layout(config, case.input_ids)
        where = np.flatnonzero(case.input_ids[0] == self.video_token_id(config))
        positions, delta = self.position_ids(config, case.input_ids)
        dtype = next(model.parameters()).dtype
        with torch.no_grad():
            features = self.video_features(model, torch.from_numpy(case.pixel_values_videos).to(dtype))
            embeds = self.embed_tokens(model, torch.from_numpy(case.input_ids)).clone()
            embeds[0, torch.from_numpy(where)] = features.to(embeds.dtype)
        return dict(
            inputs_embeds=embeds, position_ids=torch.from_numpy(positions),
            video_start=torch.tensor(start, dtype=torch.int64), visual_tokens=layout.visual_tokens,
            patches_per_frame=layout.patches_per_frame, rope_delta=delta, layout=layout,
        )

    def video_prompt_ids(self, config, tokenizer, frames: int, prompt: str) -> np.ndarray:
        """The processor's video text (``FrameN: <img>`` + frame tokens + ``</img>``, joined by newlines)
        inside the chat template, tokenized in one piece as the processor does."""
        from ffexport.models.llava_style import tokenize_like_the_processor

        per_frame, token_id = self.tokens_per_frame(config), self.video_token_id(config)
        token = tokenizer.convert_ids_to_tokens(token_id)
        video = self.video_text.text(token, [per_frame] * frames)
        ids = tokenize_like_the_processor(tokenizer, self.prompt.text(video, prompt))
        if int(np.count_nonzero(ids == token_id)) != frames * per_frame:
            raise InputError(f"the tokenizer does not keep {token!r} (id {token_id}) as one token; "
                             "it is not this model's tokenizer")
        return ids

    def case_from_video(self, config, frames: np.ndarray, prompt: str, *, tokenizer):
        from ffexport.case import Case

        pixels = self.preprocessor(config)(frames)[0]  # [T, 3, S, S]: the processor's pixel_values
        ids = self.video_prompt_ids(config, tokenizer, pixels.shape[0], prompt)
        return Case(ids, pixels, None, attention_mask=np.ones_like(ids))


ADAPTER = FAMILIES.register("internvl", InternVLAdapter(
    family="internvl",
    model_class=InternVLForConditionalGeneration,
    # the -hf checkpoints' Qwen2 chat template around one video
    prompt=PromptTemplate("<|im_start|>user\n", "\n{prompt}<|im_end|>\n<|im_start|>assistant\n"),
    resize_mode="square",
    image_mean=IMAGENET_MEAN,
    image_std=IMAGENET_STD,
    case_keys=INTERNVL_CASE_KEYS,
    # what the processor writes around frame i (1-based) and between frames
    video_text=VideoText(prefix="Frame{index}: <img>", suffix="</img>", separator="\n"),
    # build: frame blocks through the build (the schedule's blocks in the prefill graph, the oracle), the
    # tower + pixel shuffle + projector captured per frame count; run: the manifest's video text between
    # frames (tests/export/test_build_families.py)
    stages=("case", "reference", "build", "run", "calibrate", "explain", "bench"),
    missing={},
))


# ------------------------------------------------------------------ presets
def internvl3_8b_config() -> InternVLConfig:
    """OpenGVLab/InternVL3-8B-hf's architecture: InternViT-300M-448px + Qwen2.5-7B."""
    vision = InternVLVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                  num_attention_heads=16, image_size=[448, 448], patch_size=[14, 14],
                                  norm_type="layer_norm", layer_norm_eps=1e-6, use_mean_pooling=True)
    text = Qwen2Config(vocab_size=151674, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
                       rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                       use_sliding_window=False, sliding_window=32768, bos_token_id=151643, eos_token_id=151645)
    return InternVLConfig(vision_config=vision, text_config=text, image_token_id=151667, image_seq_length=256,
                          downsample_ratio=0.5, vision_feature_layer=-1, vision_feature_select_strategy="default",
                          tie_word_embeddings=False)


def internvl_tiny_config() -> InternVLConfig:
    """A few-layer InternVL with the real layout (InternViT at a fixed size with CLS, 0.5 pixel shuffle,
    Qwen2 decoder with GQA): 112x112 frames -> 8x8 patches -> 4x4 = 16 tokens per frame block."""
    from ffexport.models.tiny_tokenizer import TINY_VOCAB_SIZE, tiny_special_token_ids

    ids = tiny_special_token_ids()
    vision = InternVLVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=[112, 112], patch_size=[14, 14], initializer_range=0.1)
    text = Qwen2Config(vocab_size=TINY_VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                       rms_norm_eps=1e-6, initializer_range=0.1, use_sliding_window=False, sliding_window=4096,
                       rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                       bos_token_id=ids["eos_token_id"], eos_token_id=ids["eos_token_id"],
                       pad_token_id=ids["pad_token_id"])
    return InternVLConfig(vision_config=vision, text_config=text, image_token_id=ids["image_token_id"],
                          image_seq_length=16, downsample_ratio=0.5, vision_feature_layer=-1,
                          vision_feature_select_strategy="default", tie_word_embeddings=False)


PRESETS.register("internvl-tiny", Preset(
    "internvl-tiny", "internvl",
    "4-layer InternVL (InternViT 112, 16 tokens per frame block), deterministic random weights, built-in tokenizer",
    internvl_tiny_config, tiny=True))
PRESETS.register("internvl3-8b", Preset(
    "internvl3-8b", "internvl", "InternVL3-8B (InternViT-300M-448 + Qwen2.5-7B, 256 tokens per frame block)",
    internvl3_8b_config, hub_id="OpenGVLab/InternVL3-8B-hf"))
