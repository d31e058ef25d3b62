"""Run the dynamic reference over calibration videos at a bucket's size and keep what it realizes.

``Collect(loaded, bucket, fusion)(videos) -> Collection``. Each video is resized to the bucket (frames
sampled to its count, pixels resized to its size, as the runtime does) and run through the dynamic
FrameFusion reference. A file that cannot be read is skipped with a warning naming it; a video on
which FrameFusion cannot meet the budget ("cost too small", e.g. many small merges on a shallow model)
is skipped with a warning naming it and counted. When no video calibrates, one error says why.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from ffexport.calibrate.cost import schedule_cost
from ffexport.calibrate.trace import Trace, TracedReference
from ffexport.calibrate.videos import VideoSource
from ffexport.case import Case
from ffexport.errors import FusionError, InputError
from ffexport.export.buckets import Bucket
from ffexport.fusion.config import FusionConfig
from ffexport.fusion.schedule import Schedule
from ffexport.models.loading import LoadedModel
from ffexport.progress import Steps
from ffexport.reference import ReferenceResult
from ffexport.runtime.defaults import DEFAULT_PROMPT

log = logging.getLogger(__name__)


@dataclass
class VideoRun:
    """One video through the dynamic reference (``error`` set when it could not calibrate)."""

    name: str
    schedule: Schedule | None = None
    cost: float | None = None  # realized cost of the dynamic run (budget units)
    redundancy: float | None = None  # share of tokens at or above the similarity threshold at layer 0
    result: ReferenceResult | None = None
    trace: Trace | None = None
    error: str | None = None

    def summary(self) -> dict:
        out = {"video": self.name}
        if self.error is not None:
            return {**out, "skipped": self.error}
        return {**out, "cost": self.cost, "layer0_redundancy": self.redundancy,
                "final_visual_tokens": self.schedule.final_visual_tokens,
                "stages": [s.to_json() for s in self.schedule.stages]}


@dataclass
class Collection:
    runs: list[VideoRun] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def calibrated(self) -> list[VideoRun]:
        return [r for r in self.runs if r.error is None]

    @property
    def failed(self) -> list[VideoRun]:
        return [r for r in self.runs if r.error is not None]


def bucket_case(loaded: LoadedModel, frames, bucket: Bucket, prompt: str = DEFAULT_PROMPT) -> Case:
    """Frames sampled to the bucket's count (and, for a patch-grid bucket, resized to its pixels; a
    fixed-size tower's preprocessing brings any frame to its size), with the prompt around them, through
    the family's own case builder (``loaded.case_from_video``: its processor, prompt and video layout,
    e.g. Qwen3-VL's timestamped frame blocks), as the build's policy case
    (:func:`ffexport.export.policy.video_case`); a model without its tokenizer here takes a stand-in
    prompt. The case must hold the bucket's tokens."""
    import numpy as np

    from ffexport.export.buckets import fixed_size_tower
    from ffexport.runtime.video import sample_frames
    from ffexport.video.resize import resize_frames

    sampled, _ = sample_frames(np.asarray(frames), bucket.frames)
    if not fixed_size_tower(loaded.adapter):
        sampled = resize_frames(sampled, bucket.resized)
    if loaded.tokenizer is not None:
        case = loaded.case_from_video(sampled, prompt)
    elif fixed_size_tower(loaded.adapter):
        if in_frame_blocks(loaded, bucket):
            raise InputError(without_tokenizer(loaded))
        case = _stand_in_fixed_tower_case(loaded, sampled, prompt)
    elif in_frame_blocks(loaded, bucket):
        case = _stand_in_block_case(loaded, sampled, prompt)
    else:
        case = _stand_in_grid_case(loaded, sampled, bucket, prompt)
    return _fits_bucket(loaded, case, bucket)


def _fits_bucket(loaded: LoadedModel, case: Case, bucket: Bucket) -> Case:
    """``case`` when it holds the bucket's visual tokens (a patch grid: the bucket's grid), else one
    :class:`InputError` line."""
    if case.video_grid_thw is not None:
        if case.grid != tuple(bucket.grid_thw):
            raise InputError(f"the case's video grid is {'x'.join(map(str, case.grid))}; bucket {bucket.name} has "
                             f"{'x'.join(map(str, bucket.grid_thw))}")
        return case
    _, layout = loaded.adapter.layout(loaded.config, case.input_ids)
    if layout.visual_tokens != bucket.visual_tokens:
        raise InputError(f"the case holds {layout.visual_tokens} visual tokens; bucket {bucket.name} has "
                         f"{bucket.visual_tokens}")
    return case


def _stand_in_grid_case(loaded: LoadedModel, frames, bucket: Bucket, prompt: str) -> Case:
    """A patch-grid family without its tokenizer here: the grid at the bucket's size, the prompt in
    :func:`_stand_in_prompt_ids` (Qwen2-VL's one run of video tokens)."""
    import numpy as np

    from ffexport.video import preprocess_video

    vision = loaded.config.vision_config
    pixels, grid = preprocess_video(frames, patch_size=vision.patch_size,
                                    temporal_patch_size=vision.temporal_patch_size,
                                    merge_size=vision.spatial_merge_size, size=bucket.resized)
    ids = _stand_in_prompt_ids(loaded, bucket.visual_tokens, prompt)
    return Case(np.asarray(ids, dtype=np.int64).reshape(1, -1), pixels, grid.reshape(1, 3).astype(np.int64))


def in_frame_blocks(loaded: LoadedModel, bucket: Bucket) -> bool:
    """Whether the family writes the bucket's video as several frame blocks with text between them (the
    adapter's ``bucket_layout`` without a tokenizer, as a graph-only build lays the blocks out)."""
    from ffexport.export.buckets import fixed_size_tower

    adapter = loaded.adapter
    if not hasattr(adapter, "bucket_layout"):
        return False
    grid = {} if fixed_size_tower(adapter) else {"patches_per_frame": bucket.patches_per_frame}
    return not adapter.bucket_layout(loaded.config, bucket.frames, None, **grid).is_contiguous


def without_tokenizer(loaded: LoadedModel) -> str:
    """Why a fixed-size tower's frame blocks cannot be stood in for without its tokenizer (one line)."""
    return (f"{loaded.name} has no tokenizer here and writes its video in frame blocks with text between them "
            "(no stand-in prompt for a fixed-size tower's blocks yet); pass --weights DIR holding its tokenizer")


def _stand_in_block_case(loaded: LoadedModel, frames, prompt: str) -> Case:
    """A patch-grid family in frame blocks without its tokenizer here (``qwen3vl-8b --random-weights``):
    the adapter's own case builder (its preprocessing, timestamps and blocks) with the tiny byte tokenizer,
    which knows Qwen's special tokens, its video token mapped to the model's. Only ids matter to random
    weights; the text between blocks is as long as the byte tokenizer spells it (longer than Qwen's)."""
    from dataclasses import replace

    import numpy as np

    from ffexport.models.tiny_tokenizer import build_tiny_tokenizer, tiny_special_token_ids

    adapter, config = loaded.adapter, loaded.config
    case = adapter.case_from_video(config, frames, prompt, tokenizer=build_tiny_tokenizer())
    tiny_video = tiny_special_token_ids()["video_token_id"]
    ids = np.where(case.input_ids == tiny_video, adapter.video_token_id(config), case.input_ids).astype(np.int64)
    return replace(case, input_ids=ids)


def _stand_in_fixed_tower_case(loaded: LoadedModel, frames, prompt: str) -> Case:
    """A random-weight preset of a fixed-size-tower family without its tokenizer here (7B: sizing before the
    weights arrive): the adapter's preprocessing and chat template, tokenized with the tiny byte tokenizer,
    its video token mapped to the model's. Only ids matter to random weights (one run of video tokens: a
    family in frame blocks is refused before, :func:`in_frame_blocks`)."""
    import numpy as np

    from ffexport.models.tiny_tokenizer import build_tiny_tokenizer, tiny_special_token_ids

    adapter, config = loaded.adapter, loaded.config
    if not hasattr(adapter, "prompt") or not hasattr(adapter, "preprocessor"):
        raise InputError(f"{loaded.name} has no tokenizer here and its family declares no prompt template; "
                         "pass --weights DIR holding its tokenizer")
    pixels = adapter.preprocessor(config)(frames)
    tiny_video = tiny_special_token_ids()["video_token_id"]
    ids = adapter.prompt.ids(build_tiny_tokenizer(), video_token_id=tiny_video,
                             num_video_tokens=adapter.video_tokens(config, pixels.shape[1]), prompt=prompt)
    ids = np.where(ids == tiny_video, adapter.video_token_id(config), ids).astype(np.int64)
    return Case(ids, pixels, None, attention_mask=np.ones_like(ids))


#: Qwen2-VL's special token ids (the released tokenizer's)
QWEN2_VL_SPECIAL_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
                        "<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|vision_pad|>": 151654,
                        "<|image_pad|>": 151655, "<|video_pad|>": 151656}


def _stand_in_prompt_ids(loaded: LoadedModel, visual_tokens: int, prompt: str):
    """A random-weight preset without its tokenizer here (2B/7B): the prompt in the tiny tokenizer's byte
    ids with its special tokens mapped to Qwen2-VL's ids. Only ids matter to random weights."""
    import numpy as np

    from ffexport.models.tiny_tokenizer import NUM_BYTE_TOKENS, QWEN2_VL_SPECIAL_TOKENS, build_tiny_tokenizer
    from ffexport.prompt import build_video_prompt_ids

    if loaded.config.video_token_id != QWEN2_VL_SPECIAL_IDS["<|video_pad|>"]:
        raise InputError(f"{loaded.name} has no tokenizer here and not Qwen2-VL's token ids; add its tokenizer")
    ids = build_video_prompt_ids(build_tiny_tokenizer(), num_video_tokens=visual_tokens, prompt=prompt)
    table = np.arange(NUM_BYTE_TOKENS + len(QWEN2_VL_SPECIAL_TOKENS), dtype=np.int64)
    for i, token in enumerate(QWEN2_VL_SPECIAL_TOKENS):
        table[NUM_BYTE_TOKENS + i] = QWEN2_VL_SPECIAL_IDS[token]
    return table[np.asarray(ids)]


def load_case(loaded: LoadedModel, video: VideoSource, bucket: Bucket) -> Case:
    h, w = bucket.resized
    return bucket_case(loaded, video.load(bucket.frames, h, w), bucket)


class Collect:
    """``Collect(loaded, bucket, fusion, max_new_tokens=0)(videos) -> Collection``."""

    def __init__(self, loaded: LoadedModel, bucket: Bucket, fusion: FusionConfig, *, max_new_tokens: int = 0,
                 quiet: bool = False, title: str = "calibrating") -> None:
        self.loaded, self.bucket, self.fusion = loaded, bucket, fusion
        self.reference = TracedReference(loaded, fusion=fusion, max_new_tokens=max_new_tokens)
        self.quiet, self.title = quiet, title

    def __call__(self, videos: Sequence[VideoSource]) -> Collection:
        out = Collection()
        layers = self.loaded.num_layers
        budget_layers = self.fusion.layers_for(layers)
        with Steps(len(videos), self.title, quiet=self.quiet) as steps:
            for video in videos:
                steps.start(video.name)
                try:
                    case = load_case(self.loaded, video, self.bucket)
                except InputError as e:
                    log.warning("skipped %s: %s", video.name, _message(e))
                    out.unreadable.append(video.name)
                    steps.advance()
                    continue
                run = self.run_case(video.name, case, layers, budget_layers)
                out.runs.append(run)
                steps.advance()
        return out

    def run_case(self, name: str, case: Case, layers: int, budget_layers: int) -> VideoRun:
        try:
            result, trace = self.reference.traced(case)
        except FusionError as e:
            log.warning("skipped %s: FrameFusion cannot run it with these settings (%s)", name, _message(e))
            return VideoRun(name, error=_message(e))
        schedule = result.schedule
        redundancy = result.realized[0].ratio if result.realized else None
        return VideoRun(name, schedule, schedule_cost(schedule, layers, budget_layers), redundancy, result, trace)


def _message(e: Exception) -> str:
    return str(e).split(": ", 1)[-1] if ":" in str(e) else str(e)
