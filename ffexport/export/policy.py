"""The default schedule policy: what ``ffexport build`` uses when no ``--schedule`` is given and no
calibrated schedule ships for the model, weights, bucket and settings (:mod:`ffexport.calibrate`).

Policy (documented, deliberately simple; ``ffexport calibrate`` chooses from many videos): run the dynamic
FrameFusion reference with the requested settings (``--cost``, ``--similarity``,
``--ratio-lower-bound``, ``--budget-layers``) on the built-in calibration clip (a synthetic video
with a static textured background and a moving object, seed 0) at the bucket's size, with the
default prompt, and take the schedule it realizes.

What the build's gate then proves (:mod:`ffexport.export.contract`): on every parity video, the
static graph with the schedule the dynamic reference realizes on that video equals the dynamic
reference (fp32: logits within 1e-5, same greedy tokens); with this policy the deployed graph is
that graph on the calibration clip (the gate fails the bucket if it is not). A shipped or given
schedule is measured against the dynamic reference (fidelity), not proven equal to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ffexport.case import Case
from ffexport.export.buckets import Bucket
from ffexport.fusion.config import FusionConfig
from ffexport.fusion.layout import FrameLayout
from ffexport.fusion.schedule import Schedule
from ffexport.models.loading import LoadedModel
from ffexport.reference import Reference
from ffexport.runtime.defaults import DEFAULT_PROMPT
from ffexport.video import synthetic_video

CALIBRATION_KIND = "moving_object"
CALIBRATION_SEED = 0


@dataclass(frozen=True)
class PolicyResult:
    schedule: Schedule
    source: str


def calibration_case(loaded: LoadedModel, bucket: Bucket, *, kind: str = CALIBRATION_KIND, seed: int = CALIBRATION_SEED):
    """The calibration clip at the bucket's size, preprocessed for the model."""
    h, w = bucket.resized
    clip = synthetic_video(kind, frames=bucket.frames, height=h, width=w, seed=seed)
    return video_case(loaded, clip, DEFAULT_PROMPT)


#: text ids before and after the video span when the model has no tokenizer (as ``ffexport bench``)
SYNTHETIC_TEXT = (20, 14)
#: what the manifest's ``prompt_ids`` says about a build made without a tokenizer
SYNTHETIC_PROMPT_IDS = (f"synthetic: no tokenizer; {SYNTHETIC_TEXT[0]} + {SYNTHETIC_TEXT[1]} random text ids (seed 0) "
                        "around the video span stood in for the prompts of the schedule and the parity gate")


def video_case(loaded: LoadedModel, frames: np.ndarray, prompt: str) -> Case:
    """A case from uint8 frames [T, H, W, 3]: ``prompt`` through the model's tokenizer or, for a model
    without one (random weights of a preset whose tokenizer is not cached here: sizing a deployment
    before the weights arrive), fixed random text ids below the special ids around the video span
    (:data:`SYNTHETIC_TEXT`), the prompt ignored."""
    if loaded.tokenizer is not None:
        return loaded.case_from_video(frames, prompt)
    from ffexport.video import preprocess_video

    cfg, vision = loaded.config, loaded.config.vision_config
    low, high = loaded.video_pixels or (None, None)
    pixels, grid = preprocess_video(frames, patch_size=vision.patch_size, temporal_patch_size=vision.temporal_patch_size,
                                    merge_size=vision.spatial_merge_size, min_pixels=low, max_pixels=high)
    visual = int(np.prod(grid)) // vision.spatial_merge_size**2
    special = [cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id, cfg.image_token_id]
    rng = np.random.default_rng(0)
    before, after = (rng.integers(0, min(special), size=k) for k in SYNTHETIC_TEXT)
    ids = np.concatenate([before, [cfg.vision_start_token_id], np.full(visual, cfg.video_token_id),
                          [cfg.vision_end_token_id], after]).astype(np.int64)
    return Case(ids.reshape(1, -1), pixels, grid.reshape(1, 3).astype(np.int64))


class DefaultPolicy:
    """``DefaultPolicy(fusion)(loaded, bucket) -> PolicyResult``."""

    def __init__(self, fusion: FusionConfig) -> None:
        self.fusion = fusion

    def __call__(self, loaded: LoadedModel, bucket: Bucket) -> PolicyResult:
        case = calibration_case(loaded, bucket)
        result = Reference(loaded, fusion=self.fusion)(case)
        f = self.fusion
        source = (
            f"default policy: dynamic reference (cost {f.cost}, similarity {f.similarity}, ratio lower bound "
            f"{f.ratio_lower_bound}, budget layers {f.layers_for(loaded.num_layers)}) on "
            f"synthetic:{CALIBRATION_KIND} seed {CALIBRATION_SEED}"
        )
        return PolicyResult(result.schedule, source)


def nominal_schedule(bucket: Bucket, fusion: FusionConfig, num_layers: int,
                     layout: FrameLayout | None = None) -> PolicyResult:
    """A schedule for graph-only builds (no weights, so no reference to run): the shape of a typical
    FrameFusion run, with both kinds of step. Merge at layer 0 before attention as the authors'
    top-k branch would (``int(budget * N)`` tokens, at most N - P), then prune half of the rest after
    layer 1's attention. Only the graph's structure depends on it. ``layout``: the bucket's frame
    blocks (None: one contiguous block)."""
    from ffexport.fusion.budget import budget
    from ffexport.fusion.schedule import Stage

    n, p = bucket.visual_tokens, bucket.patches_per_frame
    upper = budget([], fusion.cost, fusion.layers_for(num_layers))
    merge = min(int(upper * n), n - p)
    prune = (n - merge) // 2
    stages = [Stage(0, "before_attention", "merge", merge)]
    if num_layers > 1 and prune > 0:
        stages.append(Stage(1, "after_attention", "prune", prune))
    schedule = Schedule(n, p, tuple(stages), layout).validate(num_layers)
    return PolicyResult(schedule, f"nominal (graph only): merge {merge} at layer 0, prune {prune} at layer 1")
