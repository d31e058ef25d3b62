"""Calibration: static FrameFusion schedules chosen from data, and what they cost in fidelity.

A deployed bucket fixes how many tokens every step removes; FrameFusion decides that per video. So
the static schedule comes from data: :class:`~ffexport.calibrate.collect.Collect` runs the dynamic
reference over calibration videos resized to the bucket, :class:`~ffexport.calibrate.policy.QuantilePolicy`
chooses one schedule from the schedules they realize, :class:`~ffexport.calibrate.report.Fidelity`
measures static vs dynamic on held-out videos, and :mod:`~ffexport.calibrate.shipped` finds the
schedules the project ships for its presets. See docs/calibration.md.
"""

from ffexport.calibrate.cost import layer_shares, schedule_cost

__all__ = ["layer_shares", "schedule_cost"]
