"""Shipped calibrated schedules: valid, documented, packaged, and used only where they fit."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import sys
from pathlib import Path

import pytest

from ffexport.calibrate.choose import ChooseSchedule, given_origin
from ffexport.calibrate.shipped import SHIPPED_DIR, find_shipped, read_calibrated
from ffexport.export.buckets import parse_bucket
from ffexport.fusion.config import FusionConfig

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(SHIPPED_DIR.glob("*/*.json"))


def _bucket(loaded, text):
    v = loaded.config.vision_config
    return parse_bucket(text, patch_size=v.patch_size, temporal_patch_size=v.temporal_patch_size,
                        merge_size=v.spatial_merge_size, video_pixels=loaded.video_pixels)


def test_the_tiny_presets_standard_buckets_ship():
    names = {(p.parent.name, p.stem) for p in SHIPPED}
    assert {("qwen2vl-tiny", "8x112x112"), ("qwen2vl-tiny", "16x224x224")} <= names
    # no schedule calibrated on random weights is shipped for the real presets
    assert not {m for m, _ in names} & {"qwen2vl-2b", "qwen2vl-7b"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_schedule_is_valid_and_has_its_provenance(path):
    found = read_calibrated(path)
    c = found.calibration
    found.schedule.validate(c["num_layers"])
    assert 1 <= found.schedule.final_visual_tokens < found.schedule.visual_tokens
    assert c["model"] == path.parent.name and c["bucket"]["name"] == path.stem
    assert abs(c["cost"]["relative_error"]) <= 0.02
    assert c["command"].startswith("ffexport calibrate") and c["date"] and c["inputs"]["videos"]
    assert "commit" in c and "uncommitted_changes" in c
    assert (ROOT / "calib" / "reports" / path.parent.name / path.stem / "fidelity.json").is_file()


def test_pyproject_packages_the_shipped_schedules():
    if sys.version_info < (3, 11):
        pytest.skip("tomllib needs Python 3.11")
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["ffexport.calibrate"]
    for path in SHIPPED:
        relative = str(path.relative_to(SHIPPED_DIR.parent))
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative


def test_used_only_for_the_same_model_weights_bucket_and_settings(tiny):
    bucket = _bucket(tiny, "8x112x112")
    assert find_shipped(tiny, bucket, FusionConfig()) is not None
    assert find_shipped(tiny, bucket, FusionConfig(budget_layers=tiny.num_layers)) is not None  # the same settings
    for fusion in (FusionConfig(cost=0.4), FusionConfig(similarity=0.8), FusionConfig(ratio_lower_bound=0.2),
                   FusionConfig(budget_layers=28)):
        assert find_shipped(tiny, bucket, fusion) is None, fusion
    assert find_shipped(tiny, _bucket(tiny, "16x112x112"), FusionConfig()) is None
    user_weights = dataclasses.replace(tiny, source="/home/me/qwen2vl-tiny-finetuned")
    assert find_shipped(user_weights, bucket, FusionConfig()) is None


@pytest.mark.slow
def test_choose_schedule_origin(tiny, tmp_path):
    bucket = _bucket(tiny, "8x112x112")
    shipped = ChooseSchedule(FusionConfig())(tiny, bucket)
    assert shipped.origin["kind"] == "shipped"
    assert shipped.origin["file"].endswith("ffexport/calibrate/schedules/qwen2vl-tiny/8x112x112.json")
    assert shipped.origin["calibration"]["model_source"] == tiny.source and shipped.source.startswith("shipped")
    policy = ChooseSchedule(FusionConfig(), shipped=False)(tiny, bucket)
    assert policy.origin["kind"] == "policy" and policy.source.startswith("default policy")
    other = ChooseSchedule(FusionConfig(cost=0.4))(tiny, bucket)
    assert other.origin["kind"] == "policy" and "none ships" in other.origin["shipped"]
    path = tmp_path / "s.json"
    path.write_text(json.dumps({**shipped.schedule.to_json(), "calibration": {"model": "x"}}))
    assert given_origin(str(path)) == {"kind": "given", "file": str(path), "calibration": {"model": "x"}}
