"""One video's FrameFusion decisions as a picture: which patches merged, which were pruned.

``Explain(loaded, bucket, fusion=...)`` runs the dynamic reference (or ``schedule=`` a static one) on
a video at the bucket's size with a :class:`~ffexport.calibrate.trace.Trace`; :func:`draw_explain`
draws one frame per token frame (Qwen2-VL groups two input frames into one; a fixed-size tower takes
each frame alone) with each visual token's area tinted (28x28 pixels for Qwen2-VL's 2x2 merged 14-pixel
patches; a fixed-size tower's frame divided by its token grid): blue when it was merged into an earlier frame's token (its
content lives on, averaged), red when it was pruned (gone, alone or with what had merged into it);
tokens in their original colours reach the LLM as themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ffexport.calibrate.collect import bucket_case
from ffexport.calibrate.trace import KEPT, MERGED, PRUNED, Trace, TracedReference
from ffexport.export.buckets import Bucket
from ffexport.fusion.config import FusionConfig
from ffexport.fusion.schedule import Schedule
from ffexport.models.loading import LoadedModel

COLORS = {MERGED: (0.20, 0.45, 0.90), PRUNED: (0.90, 0.15, 0.15)}


@dataclass
class Explained:
    name: str
    frames: np.ndarray  # uint8 [T, H, W, 3] at the bucket's size
    trace: Trace
    schedule: Schedule
    mode: str  # "dynamic" or "static"
    #: (token frames, token rows, token columns) of the visual span
    token_grid: tuple[int, int, int]
    #: input frames per token frame (Qwen2-VL's temporal patch: 2; a fixed-size tower: 1)
    frames_per_group: int


def token_grid(bucket: Bucket) -> tuple[tuple[int, int, int], int]:
    """``((token frames, rows, columns), input frames per token frame)`` of a bucket, from its counts alone:
    ``patches_per_frame`` tokens tile the resized frame in square cells (Qwen's merged patches, a fixed-size
    tower's pooled grid)."""
    per_frame = bucket.patches_per_frame
    groups = bucket.visual_tokens // per_frame
    h, w = bucket.resized
    cell = (h * w / per_frame) ** 0.5
    rows, cols = round(h / cell), round(w / cell)
    if rows * cols != per_frame or groups * per_frame != bucket.visual_tokens:
        raise ValueError(f"bucket {bucket.name}: {per_frame} tokens per frame do not tile {h}x{w} pixels")
    return (groups, rows, cols), -(-bucket.frames // groups)


class Explain:
    """``Explain(loaded, bucket, fusion=FusionConfig() | schedule=S)(frames, name) -> Explained``."""

    def __init__(self, loaded: LoadedModel, bucket: Bucket, *, fusion: FusionConfig | None = None,
                 schedule: Schedule | None = None) -> None:
        self.loaded, self.bucket = loaded, bucket
        self.mode = "static" if schedule is not None else "dynamic"
        self.reference = TracedReference(loaded, fusion=None if schedule is not None else (fusion or FusionConfig()),
                                         schedule=schedule)

    def __call__(self, frames: np.ndarray, name: str) -> Explained:
        from PIL import Image

        from ffexport.runtime.video import sample_frames

        b = self.bucket
        sampled, _ = sample_frames(np.asarray(frames), b.frames)
        h, w = b.resized
        resized = sampled if sampled.shape[1:3] == (h, w) else np.stack(
            [np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BICUBIC)) for f in sampled])
        case = bucket_case(self.loaded, resized, b)
        result, trace = self.reference.traced(case)
        grid, per_group = token_grid(b)
        return Explained(name, resized, trace, result.schedule, self.mode, grid, per_group)


def draw_explain(path: str | Path, explained: Explained) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    e = explained
    t, th, tw = e.token_grid
    per_frame = th * tw
    step = e.frames_per_group
    fates = e.trace.fates()
    cols = min(t, 8)
    rows = -(-t // cols)
    height, width = e.frames.shape[1:3]
    row_edges = np.rint(np.arange(th + 1) * height / th).astype(int)  # token cell borders in pixels
    col_edges = np.rint(np.arange(tw + 1) * width / tw).astype(int)
    scale = 2.2 / max(height, width) * 1.0
    fig, axes = plt.subplots(rows, cols, figsize=(max(cols * width * scale, 6), rows * height * scale + 1.3),
                             squeeze=False)
    for g in range(rows * cols):
        ax = axes[g // cols][g % cols]
        ax.axis("off")
        if g >= t:
            continue
        frame = e.frames[min(g * step, len(e.frames) - 1)].astype(np.float32) / 255.0
        shown = frame.copy()
        gray = np.repeat(frame.mean(axis=-1, keepdims=True), 3, axis=-1)
        for k in range(per_frame):  # kept tokens in colour; merged and pruned ones grey, tinted
            fate = fates[g * per_frame + k]
            if fate == KEPT:
                continue
            r, c = divmod(k, tw)
            area = (slice(row_edges[r], row_edges[r + 1]), slice(col_edges[c], col_edges[c + 1]))
            shown[area] = 0.45 * gray[area] + 0.55 * np.array(COLORS[fate], dtype=np.float32)
        ax.imshow(np.clip(shown, 0, 1), interpolation="nearest")
        for k in range(1, th):  # token grid
            ax.axhline(row_edges[k] - 0.5, color="white", linewidth=0.3, alpha=0.5)
        for k in range(1, tw):
            ax.axvline(col_edges[k] - 0.5, color="white", linewidth=0.3, alpha=0.5)
        counts = np.bincount(fates[g * per_frame:(g + 1) * per_frame], minlength=3)
        frames = f"frames {g * step}-{g * step + step - 1}" if step > 1 else f"frame {g}"
        ax.set_title(f"{frames}\n"
                     f"kept {counts[KEPT]}  merged {counts[MERGED]}  pruned {counts[PRUNED]}", fontsize=8)
    total = np.bincount(fates, minlength=3)
    steps = ", ".join(f"L{s.layer}{' pre' if s.where == 'before_attention' else ''} {s.op} {s.remove}"
                      for s in e.schedule.stages if s.remove)
    fig.suptitle(f"{e.name} ({e.mode} FrameFusion): {len(fates)} visual tokens -> {int(total[KEPT])} reach the LLM "
                 f"({int(total[MERGED])} merged into them, {int(total[PRUNED])} pruned)\nsteps: {steps or 'none'}",
                 fontsize=9)
    fig.legend(handles=[Patch(color=COLORS[MERGED], label="merged into an earlier frame's token"),
                        Patch(color=COLORS[PRUNED], label="pruned (low attention)"),
                        Patch(facecolor="white", edgecolor="gray", label="kept (original colours)")],
               loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    from ffexport.calibrate.report import save_figure

    return save_figure(fig, path, dpi=130)
