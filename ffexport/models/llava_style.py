"""What the LLaVA-style families share: a fixed-size vision tower, a projector, a plain LLM with 1D RoPE.

LLaVA-NeXT-Video and LLaVA-OneVision (LLaVA-Video) feed every frame at one fixed size to a
CLIP/SigLIP tower, pool its patch grid, and place ``tokens_per_frame`` tokens per frame contiguously
in the prompt (OneVision adds one learned newline token after the last frame: text after the span
as far as FrameFusion is concerned). The partner of visual token ``i`` is ``i - tokens_per_frame``:
today's contiguous visual span.

Positions are 1D RoPE. ``ReducedDecoder`` builds M-RoPE tables from ``[3, L]`` position ids and
``mrope_section``; with three identical rows any section split gives the same table, so the adapter
declares one section covering every frequency (``(head_dim // 2,)``: all bands read row 0). Llama's
and Qwen2's rotary embeddings compute ``cat(freqs, freqs)`` with ``rotate_half`` exactly like
``ffexport.fusion.decoder.mrope_cos_sin``; a rotary type that rescales cos/sin
(``attention_scaling != 1``, e.g. YaRN) is refused rather than silently mis-rotated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ffexport.errors import InputError, ModelError
from ffexport.fusion.decoder import DecoderParts
from ffexport.fusion.layout import FrameLayout
from ffexport.video_text import VideoText

#: the names a LLaVA-style transformers processor returns for a video prompt (case.npz holds these)
LLAVA_CASE_KEYS = ("input_ids", "attention_mask", "pixel_values_videos")




def one_d_position_ids(length: int) -> np.ndarray:
    """1D RoPE positions as M-RoPE rows: ``[3, L]`` int64, three identical ``arange(L)`` rows."""
    return np.broadcast_to(np.arange(length, dtype=np.int64), (3, length)).copy()


def rotary_parts(text_model) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``inv_freq`` and the one-section ``mrope_section`` of a 1D-RoPE decoder's rotary embedding."""
    rope = text_model.rotary_emb
    scaling = float(getattr(rope, "attention_scaling", 1.0))
    if scaling != 1.0:
        raise ModelError(
            f"rotary type {getattr(rope, 'rope_type', '?')!r} scales cos/sin by {scaling}; ffexport's decoder "
            "supports unscaled RoPE tables only (default, linear, dynamic-free)"
        )
    return rope.inv_freq, (int(rope.inv_freq.shape[0]),)


def tokenize_like_the_processor(tokenizer, text: str) -> np.ndarray:
    """``[1, L]`` int64 ids of ``text`` tokenized in one piece with the tokenizer's own special tokens
    (BOS for Llama), as transformers' processors tokenize the prompt after expanding the video."""
    return np.asarray(tokenizer(text).input_ids, dtype=np.int64).reshape(1, -1)


@dataclass(frozen=True)
class PromptTemplate:
    """A one-video chat prompt: ``before`` + the video's text + ``after``. The video's placeholder
    tokens are written as the token's string and the whole text is tokenized at once, like the
    family's processor does after it expands ``<video>``."""

    before: str
    after: str

    def text(self, video_text: str, prompt: str) -> str:
        return self.before + video_text + self.after.format(prompt=prompt)

    def ids(self, tokenizer, *, video_token_id: int, num_video_tokens: int, prompt: str) -> np.ndarray:
        token = tokenizer.convert_ids_to_tokens(video_token_id)
        ids = tokenize_like_the_processor(tokenizer, self.text(token * num_video_tokens, prompt))
        if int(np.count_nonzero(ids == video_token_id)) != num_video_tokens:
            raise InputError(f"the tokenizer does not keep {token!r} (id {video_token_id}) as one token; "
                             "it is not this model's tokenizer")
        return ids


@dataclass(frozen=True)
class LlavaStyleAdapter:
    """Declarative parts of a fixed-size-tower family; subclasses say how many tokens a frame gives."""

    family: str
    model_class: type
    prompt: PromptTemplate
    #: how a frame is brought to the tower's size (:class:`ffexport.video.fixed.FixedFramePreprocess`)
    resize_mode: str = "square"
    image_mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    #: video tokens the model places after the last frame (OneVision's newline: 1)
    trailing_video_tokens: int = 0
    #: text the processor writes around and between frames (None: the frames' tokens are one run)
    video_text: VideoText | None = None
    #: max |logits - reference| for fp32 parity checks (static vs dynamic, graph vs PyTorch)
    logits_atol_fp32: float = 1e-5
    case_keys: tuple[str, ...] = field(default=LLAVA_CASE_KEYS)
    #: the CLI commands done for this family; the others refuse with one line naming what is missing
    stages: tuple[str, ...] = ("case", "reference")
    missing: dict = field(default_factory=dict)

    # ---------------------------------------------------------------- config
    @staticmethod
    def num_layers(config) -> int:
        return config.text_config.num_hidden_layers

    @staticmethod
    def video_token_id(config) -> int:
        return config.video_token_id

    def tokens_per_frame(self, config) -> int:  # pragma: no cover - every family overrides it
        raise NotImplementedError

    def patches_per_frame(self, config, grid=None) -> int:
        return self.tokens_per_frame(config)

    def video_tokens(self, config, frames: int) -> int:
        """Video tokens in the prompt for ``frames`` frames (the visual span plus any trailing token)."""
        return frames * self.tokens_per_frame(config) + self.trailing_video_tokens

    @staticmethod
    def frame_size(config) -> int:
        return config.vision_config.image_size

    def pixel_shape(self, config, frames: int) -> tuple[int, ...]:
        """The shape of a case's pixels (the vision graph's input) for ``frames`` frames: the processor's
        ``pixel_values_videos`` ``[1, T, C, S, S]``."""
        size = self.frame_size(config)
        return (1, int(frames), int(config.vision_config.num_channels), size, size)

    def bucket_layout(self, config, frames: int, tokenizer=None) -> FrameLayout:
        """The frame blocks of a ``frames``-frame video (no prompt needed): one contiguous block."""
        return FrameLayout.contiguous(frames * self.tokens_per_frame(config), self.tokens_per_frame(config))

    def preprocessor(self, config):
        """The torch-free frame preprocessing for this model (numpy + Pillow)."""
        from ffexport.video.fixed import FixedFramePreprocess

        return FixedFramePreprocess(self.frame_size(config), mode=self.resize_mode, mean=self.image_mean,
                                    std=self.image_std)

    def runtime_record(self, config) -> dict:
        """What the torch-free runtime needs to prepare a video and a prompt (the manifest's ``model``):
        the frame preprocessing (:class:`ffexport.video.fixed.FixedFramePreprocess`) and the chat template."""
        pre = self.preprocessor(config)
        record = {"frame_preprocess": {"size": pre.size, "mode": pre.mode, "mean": list(pre.mean), "std": list(pre.std),
                                       "resample": pre.resample},
                  "prompt_template": {"before": self.prompt.before, "after": self.prompt.after},
                  "trailing_video_tokens": self.trailing_video_tokens}
        if self.video_text is not None:  # text between frames: the runtime writes it (ffexport/video_text.py)
            record["video_text"] = self.video_text.to_json()
        return record

    @staticmethod
    def positions_record(config) -> dict:
        """How the runtime builds position ids (the manifest's ``model.positions``): 1D, ``arange(L)``."""
        return {"rule": "1d"}

    @staticmethod
    def position_ids(config, input_ids: np.ndarray, video_grid_thw=None) -> tuple[np.ndarray, int]:
        """1D positions as ``[3, L]`` rows and the delta for generated tokens (0: they continue at L)."""
        return one_d_position_ids(np.asarray(input_ids).shape[-1]), 0

    # ----------------------------------------------------------------- model
    @staticmethod
    def decoder_parts(model) -> DecoderParts:
        text = model.model.language_model
        cfg = text.config
        inv_freq, section = rotary_parts(text)
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return DecoderParts(
            layers=text.layers, norm=text.norm, lm_head=model.lm_head, inv_freq=inv_freq, mrope_section=section,
            num_heads=cfg.num_attention_heads, num_kv_heads=cfg.num_key_value_heads, head_dim=head_dim,
        )

    @staticmethod
    def embed_tokens(model, input_ids: torch.Tensor) -> torch.Tensor:
        return model.model.language_model.embed_tokens(input_ids)

    @staticmethod
    def video_features(model, pixel_values_videos: torch.Tensor, video_grid_thw=None) -> torch.Tensor:
        """Tower + projector (+ pooling, + trailing newline): ``[video tokens, hidden]`` for one video."""
        config = model.config
        out = model.model.get_video_features(
            pixel_values_videos, vision_feature_layer=config.vision_feature_layer,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
        )
        return out.pooler_output.reshape(-1, out.pooler_output.shape[-1])

    # ------------------------------------------------------------------ cases
    @staticmethod
    def check_ids(config, case) -> None:
        vocab = config.text_config.vocab_size
        if int(case.input_ids.max()) >= vocab or int(case.input_ids.min()) < 0:
            raise InputError(f"input_ids hold token ids outside the model's vocabulary [0, {vocab})")

    def check_case(self, config, case) -> None:
        """Raise :class:`InputError` when ``case`` does not fit a model with this config."""
        self.check_ids(config, case)
        pixels = case.pixel_values_videos
        size = self.frame_size(config)
        channels = config.vision_config.num_channels
        if pixels.ndim != 5 or pixels.shape[0] != 1 or tuple(pixels.shape[2:]) != (channels, size, size):
            raise InputError(
                f"pixel_values_videos must have shape [1, frames, {channels}, {size}, {size}] for this model, "
                f"got {list(pixels.shape)}"
            )
        start, end = case.video_span(self.video_token_id(config))
        expected = self.video_tokens(config, pixels.shape[1])
        if end - start != expected:
            raise InputError(
                f"the video span in input_ids has {end - start} tokens but {pixels.shape[1]} frames give {expected}"
            )

    def layout(self, config, input_ids: np.ndarray) -> tuple[int, FrameLayout]:
        """``(video_start, layout)``: the video as frame blocks (:mod:`ffexport.fusion.layout`). Here one
        contiguous block of whole frames; a trailing newline token is text after it, in no block."""
        ids = np.asarray(input_ids).reshape(-1)
        where = np.flatnonzero(ids == self.video_token_id(config))
        per_frame = self.tokens_per_frame(config)
        visual = where.size - self.trailing_video_tokens
        if visual < per_frame:
            raise InputError(f"input_ids hold {visual} video tokens: not one frame of {per_frame}")
        return int(where[0]), FrameLayout.contiguous(visual, per_frame)

    def prepare_inputs(self, model, case) -> dict:
        """Decoder inputs for a case: embeddings with the video features in place and 1D positions."""
        config = model.config
        self.check_case(config, case)
        start, end = case.video_span(self.video_token_id(config))
        positions, delta = self.position_ids(config, case.input_ids)
        dtype = next(model.parameters()).dtype
        with torch.no_grad():
            features = self.video_features(model, torch.from_numpy(case.pixel_values_videos).to(dtype))
            embeds = self.embed_tokens(model, torch.from_numpy(case.input_ids)).clone()
            embeds[0, start:end] = features.to(embeds.dtype)
        return dict(
            inputs_embeds=embeds, position_ids=torch.from_numpy(positions),
            video_start=torch.tensor(start, dtype=torch.int64),
            visual_tokens=end - start - self.trailing_video_tokens,
            patches_per_frame=self.tokens_per_frame(config), rope_delta=delta,
        )

    def case_from_video(self, config, frames: np.ndarray, prompt: str, *, tokenizer):
        """A case (the transformers processor's names) from uint8 frames ``[T, H, W, 3]`` and a prompt."""
        from ffexport.case import Case

        pixels = self.preprocessor(config)(frames)
        ids = self.prompt.ids(tokenizer, video_token_id=self.video_token_id(config),
                              num_video_tokens=self.video_tokens(config, pixels.shape[1]), prompt=prompt)
        return Case(ids, pixels, None, attention_mask=np.ones_like(ids))
