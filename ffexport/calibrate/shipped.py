"""Schedules the project ships (package data: ``ffexport/calibrate/schedules/<model>/<bucket>.json``).

A shipped schedule is an ``ffexport.schedule/1`` file with a ``calibration`` record (what
``ffexport calibrate`` writes): the model, its weights (``model_source``), its depth, the bucket, the
FrameFusion settings, the policy, the inputs and seeds, the command, the date and the ffexport commit.
``ffexport build`` uses one only when ALL of these match the build: model name, weights source (a
user's ``--weights`` directory never matches a schedule calibrated on the preset's random weights),
depth, bucket (frames and resized size) and fusion settings (cost, similarity, ratio lower bound,
resolved budget layers). How they were made and how to remake them: calib/README.md.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ffexport.errors import ScheduleError
from ffexport.export.buckets import Bucket
from ffexport.fusion.config import FusionConfig
from ffexport.fusion.schedule import Schedule
from ffexport.models.loading import LoadedModel

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).resolve().parent / "schedules"


@dataclass(frozen=True)
class CalibratedSchedule:
    schedule: Schedule
    calibration: dict[str, Any]
    file: Path

    def origin(self, kind: str) -> dict[str, Any]:
        """The manifest's ``schedule_origin`` for this file (``kind``: shipped or given)."""
        name = _relative(self.file)
        return {"kind": kind, "file": name, "calibration": self.calibration}


def read_calibrated(path: str | Path) -> CalibratedSchedule:
    """A schedule file with its ``calibration`` record (``{}`` when it has none)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ScheduleError(f"{p}: not a readable JSON file ({e})") from e
    schedule = Schedule.from_json(data, source=str(p))
    calibration = data.get("calibration") if isinstance(data, dict) else None
    return CalibratedSchedule(schedule, calibration if isinstance(calibration, dict) else {}, p)


def fusion_record(fusion: FusionConfig, num_layers: int) -> dict[str, Any]:
    return {"cost": fusion.cost, "similarity": fusion.similarity, "ratio_lower_bound": fusion.ratio_lower_bound,
            "budget_layers": fusion.layers_for(num_layers)}


def bucket_record(bucket: Bucket) -> dict[str, Any]:
    return {"name": bucket.name, "frames": bucket.frames, "resized": list(bucket.resized),
            "grid_thw": list(bucket.grid_thw), "visual_tokens": bucket.visual_tokens}


def matches(calibration: dict[str, Any], loaded: LoadedModel, bucket: Bucket, fusion: FusionConfig) -> str | None:
    """None when the calibration record fits this model, bucket and settings; else what differs."""
    wanted = {"model": loaded.name, "model_source": loaded.source, "num_layers": loaded.num_layers}
    for key, value in wanted.items():
        if calibration.get(key) != value:
            return f"{key} {calibration.get(key)!r} (the build has {value!r})"
    got_bucket = calibration.get("bucket") or {}
    want_bucket = bucket_record(bucket)
    for key in ("frames", "resized", "grid_thw"):
        if got_bucket.get(key) != want_bucket[key]:
            return f"bucket {key} {got_bucket.get(key)!r} (the build has {want_bucket[key]!r})"
    if calibration.get("fusion") != fusion_record(fusion, loaded.num_layers):
        return f"FrameFusion settings {calibration.get('fusion')} (the build has {fusion_record(fusion, loaded.num_layers)})"
    return None


def find_shipped(loaded: LoadedModel, bucket: Bucket, fusion: FusionConfig,
                 directory: Path = SHIPPED_DIR) -> CalibratedSchedule | None:
    """The shipped schedule calibrated for exactly this model, weights, bucket and settings, or None."""
    folder = directory / loaded.name
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob("*.json")):
        try:
            found = read_calibrated(path)
        except ScheduleError as e:  # a damaged package file: say so, never use it
            log.warning("ignoring shipped schedule %s: %s", path, e)
            continue
        why = matches(found.calibration, loaded, bucket, fusion)
        if why is None:
            return found
        log.debug("shipped schedule %s does not fit: %s", path, why)
    return None


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(SHIPPED_DIR.parent.parent.parent))
    except ValueError:
        return str(path)
