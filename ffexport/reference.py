"""The PyTorch reference: one case through vision -> (reduced) prefill -> greedy decode.

``Reference(model, fusion=FusionConfig())`` runs the dynamic FrameFusion reference and records the
schedule it realized; ``Reference(model, schedule=...)`` runs the static-schedule decoder (the
graph that gets exported); ``Reference(model)`` with neither runs the full model (no reduction).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from ffexport.case import Case
from ffexport.errors import InputError, ScheduleError
from ffexport.fusion.config import FusionConfig
from ffexport.fusion.decoder import PrefillResult, ReducedDecoder
from ffexport.fusion.layout import FrameLayout
from ffexport.fusion.reducers import DynamicReducer, RealizedStep, StaticReducer
from ffexport.fusion.schedule import Schedule
from ffexport.models.loading import LoadedModel

log = logging.getLogger(__name__)


@dataclass
class ReferenceResult:
    logits: np.ndarray  # [1, vocab] float32, last prefill position
    kv_lengths: np.ndarray  # [num_layers] int64
    generated_ids: np.ndarray  # [1, n] int64 (n may be 0)
    schedule: Schedule | None = None  # the schedule used or realized (None: no reduction)
    realized: list[RealizedStep] = field(default_factory=list)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"logits": self.logits, "kv_lengths": self.kv_lengths}
        if self.generated_ids.size:
            out["generated_ids"] = self.generated_ids
        return out


@dataclass(frozen=True)
class PreparedInputs:
    """A case turned into decoder inputs."""

    inputs_embeds: torch.Tensor  # [1, L, D]
    position_ids: torch.Tensor  # [3, L]
    video_start: torch.Tensor  # [] int64
    visual_tokens: int
    patches_per_frame: int
    rope_delta: int
    #: the video as frame blocks with text between them (None: one contiguous block)
    layout: FrameLayout | None = None
    #: Qwen3-VL's DeepStack levels [k, N, D], added to the visual tokens after layers 0..k-1 (None: none)
    deepstack: torch.Tensor | None = None


class Reference:
    """Run a :class:`Case` through a loaded model, with the dynamic, static or no reduction."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        fusion: FusionConfig | None = None,
        schedule: Schedule | None = None,
        max_new_tokens: int = 0,
        eos_token_id: int | None = None,
    ) -> None:
        if fusion is not None and schedule is not None:
            raise InputError("give either FrameFusion settings (dynamic) or a schedule (static), not both")
        if max_new_tokens < 0:
            raise InputError(f"--max-new-tokens must be >= 0, got {max_new_tokens}")
        self.loaded = loaded
        self.fusion = fusion
        self.schedule = schedule.validate(loaded.num_layers) if schedule is not None else None
        self.max_new_tokens = max_new_tokens
        self.eos_token_id = eos_token_id
        self.decoder = ReducedDecoder(loaded.adapter.decoder_parts(loaded.model))

    # ------------------------------------------------------------------ steps
    def prepare(self, case: Case) -> PreparedInputs:
        """Check the case against the model, run the vision encoder, place features, build positions."""
        model, adapter, config = self.loaded.model, self.loaded.adapter, self.loaded.config
        if hasattr(adapter, "prepare_inputs"):  # fixed-size towers (models/llava_style.py), Qwen3-VL's blocks
            return PreparedInputs(**adapter.prepare_inputs(model, case))
        vision = config.vision_config
        patch_dim = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
        case.check(
            video_token_id=adapter.video_token_id(config),
            spatial_merge_size=adapter.spatial_merge_size(config),
            patch_dim=patch_dim,
        )
        start, end = case.video_span(adapter.video_token_id(config))
        vocab = config.text_config.vocab_size
        if int(case.input_ids.max()) >= vocab or int(case.input_ids.min()) < 0:
            raise InputError(f"input_ids hold token ids outside the model's vocabulary [0, {vocab})")
        positions, delta = adapter.position_ids(config, case.input_ids, case.video_grid_thw)
        dtype = next(model.parameters()).dtype
        with torch.no_grad():
            features = adapter.video_features(
                model, torch.from_numpy(case.pixel_values_videos).to(dtype), torch.from_numpy(case.video_grid_thw)
            )
            embeds = adapter.embed_tokens(model, torch.from_numpy(case.input_ids)).clone()
            embeds[0, start:end] = features.to(embeds.dtype)
        return PreparedInputs(
            inputs_embeds=embeds,
            position_ids=torch.from_numpy(positions),
            video_start=torch.tensor(start, dtype=torch.int64),
            visual_tokens=end - start,
            patches_per_frame=adapter.patches_per_frame(config, case.grid),
            rope_delta=delta,
        )

    def _reducer(self, inputs: PreparedInputs):
        if self.schedule is not None:
            s = self.schedule
            if (s.visual_tokens, s.patches_per_frame) != (inputs.visual_tokens, inputs.patches_per_frame):
                raise ScheduleError(
                    f"the schedule is for {s.visual_tokens} visual tokens, {s.patches_per_frame} per frame; "
                    f"this video has {inputs.visual_tokens}, {inputs.patches_per_frame} per frame"
                )
            layout = inputs.layout or FrameLayout.contiguous(inputs.visual_tokens, inputs.patches_per_frame)
            if s.frame_layout != layout:
                raise ScheduleError(
                    f"the schedule's frame blocks {s.frame_layout.to_json()} are not this prompt's {layout.to_json()}"
                )
            return StaticReducer(s)
        if self.fusion is not None:
            return DynamicReducer(self.fusion, self.fusion.layers_for(self.decoder.num_layers))
        return None

    def __call__(self, case: Case, *, observe=None) -> ReferenceResult:
        """Run ``case``. ``observe(reducer, visual_tokens)``, when given, returns the reducer the
        decoder calls instead (a wrapper that watches the steps, e.g. calibration's token trace)."""
        inputs = self.prepare(case)
        reducer = self._reducer(inputs)
        acting = observe(reducer, inputs.visual_tokens) if observe is not None else reducer
        with torch.no_grad():
            result = self.decoder.prefill(
                inputs.inputs_embeds, inputs.position_ids, inputs.video_start,
                inputs.visual_tokens, inputs.patches_per_frame, acting, inputs.layout, inputs.deepstack,
            )
            generated = self._generate(result, case.input_ids.shape[1] + inputs.rope_delta)
        schedule, realized = self.schedule, []
        if isinstance(reducer, DynamicReducer):
            schedule = reducer.schedule(inputs.visual_tokens, inputs.patches_per_frame, inputs.layout)
            realized = reducer.realized
        return ReferenceResult(
            logits=result.logits.float().numpy(),
            kv_lengths=np.array([k.shape[2] for k, _ in result.presents], dtype=np.int64),
            generated_ids=np.array([generated], dtype=np.int64).reshape(1, -1),
            schedule=schedule,
            realized=realized,
        )

    def _generate(self, prefill: PrefillResult, first_position: int) -> list[int]:
        """Greedy decoding; the k-th new token sits at position ``first_position + k`` on all axes
        (the original sequence continues, whatever the reduction removed)."""
        tokens: list[int] = []
        state = prefill
        for k in range(self.max_new_tokens):
            token = int(state.logits[0].argmax())
            tokens.append(token)
            if token == self.eos_token_id or k == self.max_new_tokens - 1:
                break
            embeds = self.loaded.adapter.embed_tokens(self.loaded.model, torch.tensor([[token]]))
            positions = torch.full((3, 1), first_position + k, dtype=torch.int64)
            state = self.decoder.decode(embeds, positions, state.presents)
        return tokens
