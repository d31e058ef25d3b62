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

from ffexport.export.buckets import Bucket
from ffexport.fusion.config import FusionConfig
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
    return loaded.case_from_video(clip, DEFAULT_PROMPT)


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


def nominal_schedule(bucket: Bucket, fusion: FusionConfig, num_layers: int) -> PolicyResult:
    """A schedule for graph-only builds (no weights, so no reference to run): the shape of a typical
    FrameFusion run, with both kinds of step. Merge at layer 0 before attention as the authors'
    top-k branch would (``int(budget * N)`` tokens, at most N - P), then prune half of the rest after
    layer 1's attention. Only the graph's structure depends on it."""
    from ffexport.fusion.budget import budget
    from ffexport.fusion.schedule import Stage

    n, p = bucket.visual_tokens, bucket.patches_per_frame
    upper = budget([], fusion.cost, fusion.layers_for(num_layers))
    merge = min(int(upper * n), n - p)
    prune = (n - merge) // 2
    stages = [Stage(0, "before_attention", "merge", merge)]
    if num_layers > 1 and prune > 0:
        stages.append(Stage(1, "after_attention", "prune", prune))
    schedule = Schedule(n, p, tuple(stages)).validate(num_layers)
    return PolicyResult(schedule, f"nominal (graph only): merge {merge} at layer 0, prune {prune} at layer 1")
