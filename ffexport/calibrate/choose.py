"""Which schedule a build uses for a bucket, and where it came from (the manifest's ``schedule_origin``).

In order: the schedule given with ``--schedule`` (its calibration record, if the file has one, is
kept); else the shipped calibrated schedule for exactly this model, weights, bucket and FrameFusion
settings (:func:`ffexport.calibrate.shipped.find_shipped`); else the default policy
(:class:`ffexport.export.policy.DefaultPolicy`: the dynamic reference on one synthetic clip).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ffexport.export.buckets import Bucket
from ffexport.fusion.config import FusionConfig
from ffexport.fusion.schedule import Schedule
from ffexport.models.loading import LoadedModel


@dataclass(frozen=True)
class ChosenSchedule:
    schedule: Schedule
    source: str  # one line for people (manifest ``schedule_source``)
    origin: dict[str, Any]  # the record (manifest ``schedule_origin``)


class ChooseSchedule:
    """``ChooseSchedule(fusion, given=..., given_source=..., given_origin=..., shipped=True)(loaded, bucket)``."""

    def __init__(self, fusion: FusionConfig, *, given: Schedule | None = None, given_source: str | None = None,
                 given_origin: dict[str, Any] | None = None, shipped: bool = True) -> None:
        self.fusion, self.given, self.given_source = fusion, given, given_source
        self.given_origin, self.shipped = given_origin, shipped

    def __call__(self, loaded: LoadedModel, bucket: Bucket) -> ChosenSchedule:
        if self.given is not None:
            return ChosenSchedule(self.given, self.given_source or "given",
                                  self.given_origin or {"kind": "given", "file": self.given_source})
        if self.shipped:
            from ffexport.calibrate.shipped import find_shipped

            found = find_shipped(loaded, bucket, self.fusion)
            if found is not None:
                origin = found.origin("shipped")
                c = found.calibration
                source = (f"shipped calibrated schedule {origin['file']} ({len(c.get('inputs', {}).get('videos', []))} "
                          f"videos, {c.get('date', '?')}, cost {c.get('cost', {}).get('realized')})")
                return ChosenSchedule(found.schedule, source, origin)
        from ffexport.export.policy import DefaultPolicy

        policy = DefaultPolicy(self.fusion)(loaded, bucket)
        origin = {"kind": "policy", "policy": "ffexport.export.policy.DefaultPolicy",
                  "shipped": "not used (--no-shipped-schedule)" if not self.shipped else
                  "none ships for this model, weights, bucket and FrameFusion settings"}
        return ChosenSchedule(policy.schedule, policy.source, origin)


def given_origin(path: str) -> dict[str, Any]:
    """The manifest's ``schedule_origin`` for ``--schedule FILE``, with the file's calibration record if any."""
    from ffexport.calibrate.shipped import read_calibrated

    found = read_calibrated(path)
    origin: dict[str, Any] = {"kind": "given", "file": str(path)}
    if found.calibration:
        origin["calibration"] = found.calibration
    return origin
