"""Static schedules: which FrameFusion steps happen where, and how many visual tokens each removes.

File format (versioned JSON)::

    {"format": "ffexport.schedule/2", "visual_tokens": N, "patches_per_frame": P,
     "blocks": [[0, 256], [262, 256], ...],
     "stages": [{"layer": 0, "where": "before_attention", "op": "merge", "remove": 65}, ...]}

``blocks`` (version 2) are the frame blocks ``[region offset, tokens]`` of
:class:`ffexport.fusion.layout.FrameLayout`. Version 1 (no ``blocks``: one contiguous block) is
still read, and a schedule whose video is one contiguous block is still written as version 1, so
that readers of version 1 (the C++ runtime, older builds) keep reading every single-block build.

A bucket fixes N, P and the layout; a schedule fixes every shape inside the reduced decoder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffexport.errors import ScheduleError
from ffexport.fusion.layout import FrameLayout
from ffexport.io import save_json

SCHEDULE_FORMAT = "ffexport.schedule/2"
#: the version without frame blocks (one contiguous block), still read and written for such videos
SCHEDULE_FORMAT_V1 = "ffexport.schedule/1"
WHERE = ("before_attention", "after_attention")
OPS = ("merge", "prune")


@dataclass(frozen=True)
class Stage:
    """One FrameFusion step: ``op`` at ``layer`` (``where`` relative to its attention)."""

    layer: int
    where: str
    op: str
    remove: int

    @property
    def slot(self) -> tuple[int, int]:
        """Sort key: layer, then before (0) / after (1) attention."""
        return (self.layer, WHERE.index(self.where))

    def to_json(self) -> dict[str, Any]:
        return {"layer": self.layer, "where": self.where, "op": self.op, "remove": self.remove}


@dataclass(frozen=True)
class Schedule:
    """A static FrameFusion schedule for one bucket (``visual_tokens`` N, ``patches_per_frame`` P)."""

    visual_tokens: int
    patches_per_frame: int
    stages: tuple[Stage, ...] = field(default_factory=tuple)
    #: the frame blocks (None: one contiguous block of ``visual_tokens``)
    layout: FrameLayout | None = None

    def __post_init__(self) -> None:
        if (self.layout is not None and self.layout.is_contiguous
                and (self.layout.visual_tokens, self.layout.patches_per_frame) == (self.visual_tokens,
                                                                                    self.patches_per_frame)):
            object.__setattr__(self, "layout", None)  # one contiguous block is the layout-free schedule

    @property
    def frame_layout(self) -> FrameLayout:
        """The layout, a single contiguous block when none was given."""
        return self.layout if self.layout is not None else FrameLayout.contiguous(self.visual_tokens,
                                                                                  self.patches_per_frame)

    # ------------------------------------------------------------------ queries
    def at(self, layer: int, where: str) -> Stage | None:
        """The stage at ``(layer, where)``, if any."""
        for stage in self.stages:
            if stage.layer == layer and stage.where == where:
                return stage
        return None

    def visual_counts(self) -> list[int]:
        """Visual tokens left after each stage (same order as ``stages``)."""
        counts, n = [], self.visual_tokens
        for stage in self.stages:
            n -= stage.remove
            counts.append(n)
        return counts

    @property
    def final_visual_tokens(self) -> int:
        return self.visual_tokens - sum(s.remove for s in self.stages)

    # ------------------------------------------------------------ validation
    def validate(self, num_layers: int | None = None, *, allow_empty: bool = False) -> "Schedule":
        """Raise :class:`ScheduleError` when the schedule is impossible; return self otherwise.

        ``allow_empty`` accepts a schedule that removes every visual token (the dynamic algorithm
        can realize one on a tiny video; no deployment wants one)."""
        n_tok, p = self.visual_tokens, self.patches_per_frame
        if not (isinstance(n_tok, int) and isinstance(p, int)) or n_tok <= 0 or p <= 0:
            raise ScheduleError(f"visual_tokens and patches_per_frame must be positive integers, got {n_tok}, {p}")
        if n_tok % p:
            raise ScheduleError(f"visual_tokens {n_tok} is not a multiple of patches_per_frame {p}")
        if self.layout is not None and (self.layout.visual_tokens, self.layout.patches_per_frame) != (n_tok, p):
            raise ScheduleError(
                f"the frame blocks hold {self.layout.visual_tokens} tokens of {self.layout.patches_per_frame} "
                f"per frame, the schedule says {n_tok} of {p}"
            )
        previous: tuple[int, int] | None = None
        n = n_tok
        merged_total = 0
        for i, s in enumerate(self.stages):
            where = f"stage {i} (layer {s.layer}, {s.where}, {s.op})"
            if s.where not in WHERE:
                raise ScheduleError(f"{where}: 'where' must be one of {WHERE}")
            if s.op not in OPS:
                raise ScheduleError(f"{where}: 'op' must be one of {OPS}")
            if not isinstance(s.layer, int) or s.layer < 0 or (num_layers is not None and s.layer >= num_layers):
                limit = f"0..{num_layers - 1}" if num_layers is not None else ">= 0"
                raise ScheduleError(f"{where}: unknown layer {s.layer} (the model has layers {limit})")
            if not isinstance(s.remove, int) or s.remove < 0:
                raise ScheduleError(f"{where}: 'remove' must be a non-negative integer, got {s.remove!r}")
            if previous is not None and s.slot <= previous:
                raise ScheduleError(f"{where}: stages must be in strictly increasing (layer, where) order")
            previous = s.slot
            if s.op == "prune" and s.where == "before_attention":
                raise ScheduleError(f"{where}: a prune needs the attention of its layer; use 'after_attention'")
            if s.op == "merge":
                merged_total += s.remove
                # every patch chain keeps its first token, so at most n - P tokens can merge
                if s.remove > n - min(p, n):
                    raise ScheduleError(
                        f"{where}: a merge can remove at most {max(n - p, 0)} of the {n} visual tokens left "
                        f"(each of the {p} patch positions keeps one token), not {s.remove}"
                    )
            elif s.remove > n:
                raise ScheduleError(f"{where}: cannot prune {s.remove} of the {n} visual tokens left")
            n -= s.remove
        if n == 0 and self.stages and not allow_empty:
            raise ScheduleError(
                f"the schedule removes all {n_tok} visual tokens: the video would never reach the model"
            )
        if merged_total > n_tok - p:
            raise ScheduleError(f"merges remove {merged_total} tokens in all; at most N - P = {n_tok - p} can merge")
        return self

    # -------------------------------------------------------------------- I/O
    def to_json(self) -> dict[str, Any]:
        """Version 2 with ``blocks`` when the video has several frame blocks, else version 1."""
        data: dict[str, Any] = {
            "format": SCHEDULE_FORMAT_V1,
            "visual_tokens": self.visual_tokens,
            "patches_per_frame": self.patches_per_frame,
        }
        if not self.frame_layout.is_contiguous:
            data["format"] = SCHEDULE_FORMAT
            data["blocks"] = self.frame_layout.to_json()
        data["stages"] = [s.to_json() for s in self.stages]
        return data

    @classmethod
    def from_json(cls, data: Any, *, source: str = "schedule") -> "Schedule":
        """Parse (without validating against a model) a decoded JSON object."""
        if not isinstance(data, dict):
            raise ScheduleError(f"{source}: expected a JSON object")
        version = data.get("format")
        if version not in (SCHEDULE_FORMAT, SCHEDULE_FORMAT_V1):
            raise ScheduleError(
                f"{source}: 'format' must be {SCHEDULE_FORMAT!r} or {SCHEDULE_FORMAT_V1!r}, got {version!r}"
            )
        try:
            stages = tuple(
                Stage(layer=st["layer"], where=st["where"], op=st["op"], remove=st["remove"])
                for st in data["stages"]
            )
            layout = None
            if version == SCHEDULE_FORMAT and data.get("blocks") is not None:
                layout = FrameLayout.from_json(data["blocks"], int(data["patches_per_frame"]), source=source)
                if layout.is_contiguous:
                    layout = None
            schedule = cls(int(data["visual_tokens"]), int(data["patches_per_frame"]), stages, layout)
        except (KeyError, TypeError, ValueError) as e:
            raise ScheduleError(f"{source}: malformed schedule ({type(e).__name__}: {e})") from e
        return schedule.validate()

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write atomically (temp file + rename); refuse to replace an existing file unless asked."""
        return save_json(self.to_json(), path, overwrite=overwrite)


def load_schedule(path: str | os.PathLike[str]) -> Schedule:
    """Read and validate a schedule file."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError as e:
        raise ScheduleError(f"{p}: no such file") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ScheduleError(f"{p}: not a readable JSON file ({e})") from e
    return Schedule.from_json(data, source=str(p))
