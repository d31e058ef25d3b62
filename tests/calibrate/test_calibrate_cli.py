"""``ffexport calibrate`` and ``ffexport explain`` on the tiny model: outputs, report, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ffexport.cli import main
from ffexport.errors import FusionError, InputError
from ffexport.fusion.schedule import load_schedule
from ffexport.video import synthetic_video, write_video


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    out = tmp_path_factory.mktemp("calib")
    code = main(["-q", "calibrate", "--bucket", "8x112x112", "--synthetic", "3", "--out", str(out / "s.json"),
                 "--report", str(out / "report"), "--report-synthetic", "2", "--report-kinds", "zoom,scene_cut",
                 "--max-new-tokens", "2"])
    assert code == 0
    return out


@pytest.mark.slow
def test_schedule_file_with_provenance(calibrated):
    schedule = load_schedule(calibrated / "s.json").validate(4)  # usable with `build --schedule`
    assert 1 <= schedule.final_visual_tokens < 64
    record = json.loads((calibrated / "s.json").read_text())["calibration"]
    assert record["model"] == "qwen2vl-tiny" and record["model_source"] == "random weights (seed 0)"
    assert record["bucket"]["name"] == "8x112x112" and record["fusion"]["budget_layers"] == 4
    assert abs(record["cost"]["relative_error"]) <= 0.02
    assert record["command"].startswith("ffexport calibrate --model qwen2vl-tiny") and record["date"]
    used = record["inputs"]["videos"] + record["inputs"]["skipped"]["cost_too_small"]
    assert len(used) == 3 and all(v.startswith("synthetic:") for v in used)


@pytest.mark.slow
def test_fidelity_report_json_and_png(calibrated):
    report = json.loads((calibrated / "report" / "fidelity.json").read_text())
    assert report["format"] == "ffexport.fidelity/1"
    held = report["held_out"]
    assert len(held) == 2 and {r["video"].split(":")[1] for r in held} == {"zoom", "scene_cut"}
    for r in held:
        assert 0 <= r["token_agreement"] <= 1 and r["kl_first_token"] >= 0 and 0 <= r["kept_overlap"] <= 1
        assert len(r["static_tokens"]) == 2 and r["distance_from_calibration"]["calibration_max"] <= 1
    probes = {r["video"].split(":")[1]: r for r in report["out_of_distribution"]}
    assert set(probes) == {"slideshow", "noise"}
    noise = probes["noise"]["distance_from_calibration"]
    assert noise["value"] == 0 and noise["outside"] and noise["z"] < -2  # nothing merges: far from calibration
    # the static schedule never removes more than the bucket holds, whatever the video
    assert all(r["visual_tokens_static"] >= 1 for r in held + report["out_of_distribution"])
    from PIL import Image

    image = np.asarray(Image.open(calibrated / "report" / "fidelity.png").convert("RGB")).astype(np.int64)
    assert image.shape == (572, 1870, 3)  # three panels, 17 x 5.2 inches at 110 dpi
    fidelity_panel = image[:, 2 * 1870 // 3:]  # the right third: one pair of bars per held-out video

    def has(color: str, area) -> int:
        rgb = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(area - rgb).max(axis=-1) <= 2).sum())

    overlap, agreement = has("#4c72b0", fidelity_panel), has("#55a868", fidelity_panel)
    assert overlap > 500 and agreement > 500  # kept-token overlap and greedy-token agreement bars drawn
    # bar lengths follow the data: the summed overlap vs agreement areas keep their ratio (legend swatches aside)
    drawn = [r for r in held + report["out_of_distribution"] if "dynamic_error" not in r]
    want = sum(r["kept_overlap"] for r in drawn) / max(sum(r["token_agreement"] for r in drawn), 1e-9)
    if 0.1 < want < 10:
        assert abs(overlap / agreement - want) <= 0.1 * want + 0.02


def test_empty_folder_is_one_line(tmp_path, capsys, error_line):
    (tmp_path / "videos").mkdir()
    code = main(["-q", "calibrate", "--bucket", "8x112x112", "--videos", str(tmp_path / "videos"),
                 "--out", str(tmp_path / "s.json")])
    assert code == InputError.exit_code and "holds no files" in error_line()
    assert not (tmp_path / "s.json").exists()


def test_folder_without_a_readable_video_is_one_line(tmp_path, capsys, error_line):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "notes.txt").write_text("not a video")
    (videos / "broken.mp4").write_bytes(b"\x00" * 100)
    code = main(["-q", "calibrate", "--bucket", "8x112x112", "--videos", str(videos), "--out", str(tmp_path / "s.json")])
    assert code == InputError.exit_code
    line = error_line()
    assert "no readable video" in line and "broken.mp4" in line
    assert not (tmp_path / "s.json").exists()


@pytest.mark.slow
def test_unreadable_files_among_good_ones_are_skipped_by_name(tmp_path, capsys):
    pytest.importorskip("av", reason="PyAV writes the test videos")
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(synthetic_video("moving_object", frames=8, seed=3), videos / "a.mp4")
    write_video(synthetic_video("zoom", frames=12, height=96, width=128, seed=4), videos / "b.gif")
    (videos / "c.mp4").write_bytes(b"garbage")
    assert main(["calibrate", "--bucket", "8x112x112", "--videos", str(videos), "--out", str(tmp_path / "s.json")]) == 0
    err = capsys.readouterr().err
    assert "skipped c.mp4" in err and "not a readable video" in err
    record = json.loads((tmp_path / "s.json").read_text())["calibration"]
    assert record["inputs"]["skipped"]["unreadable"] == ["c.mp4"]
    assert sorted(record["inputs"]["videos"] + record["inputs"]["skipped"]["cost_too_small"]) == ["a.mp4", "b.gif"]


@pytest.mark.slow
def test_a_budget_no_video_can_meet_is_one_line(tmp_path, capsys, error_line):
    # many small merge steps on a 4-layer budget exhaust it (as in the authors' code) on every pan
    code = main(["-q", "calibrate", "--bucket", "8x112x112", "--synthetic", "2", "--kinds", "pan", "--similarity", "0.9",
                 "--out", str(tmp_path / "s.json")])
    assert code == FusionError.exit_code
    line = error_line()
    assert "cost is too small for every calibration video (2 of 2" in line
    assert not (tmp_path / "s.json").exists()


def test_refuses_to_overwrite_and_unknown_kinds(tmp_path, capsys, error_line):
    (tmp_path / "s.json").write_text("mine")
    args = ["-q", "calibrate", "--bucket", "8x112x112", "--synthetic", "1", "--out", str(tmp_path / "s.json")]
    assert main(args) == InputError.exit_code and "--overwrite" in error_line()
    assert main(args[:-1] + [str(tmp_path / "t.json"), "--kinds", "wobble"]) == InputError.exit_code
    assert "unknown synthetic kind(s) wobble" in error_line()


def _tinted(pixels, color) -> "np.ndarray":
    """Pixels drawn as ``0.45 * gray + 0.55 * color`` (explain's tint): the channel differences do not
    depend on the gray underneath, so they identify the tint whatever the frame shows."""
    px = pixels[..., :3].astype(np.float64)
    c = np.asarray(color) * 0.55 * 255
    return (np.abs((px[..., 2] - px[..., 0]) - (c[2] - c[0])) <= 2.5) & (
        np.abs((px[..., 1] - px[..., 0]) - (c[1] - c[0])) <= 2.5)


def test_explain_draws_merged_and_pruned_patches(tmp_path, tiny):
    """The picture's content: its size, and tinted areas in the proportion of the tokens the dynamic
    reference merged and pruned on that video (blue and red areas differ, kept tokens are untinted)."""
    from PIL import Image

    from ffexport.calibrate.explain import COLORS, Explain
    from ffexport.calibrate.trace import KEPT, MERGED, PRUNED
    from ffexport.export.buckets import parse_bucket

    out = tmp_path / "explain.png"
    assert main(["-q", "explain", "--video", "synthetic:moving_object:0", "--out", str(out)]) == 0
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape == (455, 1144, 3)  # 4 token frames of 112x112 in one row: 8.8 x 3.5 inches at 130 dpi
    bucket = parse_bucket("8x112x112", patch_size=14, temporal_patch_size=2, merge_size=2, video_pixels=tiny.video_pixels)
    fates = Explain(tiny, bucket)(synthetic_video("moving_object", frames=8, seed=0), "clip").trace.fates()
    merged, pruned, kept = (int((fates == f).sum()) for f in (MERGED, PRUNED, KEPT))
    assert merged > 0 and pruned > 0 and kept > 0
    blue, red = int(_tinted(image, COLORS[MERGED]).sum()), int(_tinted(image, COLORS[PRUNED]).sum())
    # every token covers the same area on screen: the tinted areas follow the token counts
    per_token = (blue + red) / (merged + pruned)
    assert per_token > 1000  # a 112-pixel frame is drawn 2.2 in wide at 130 dpi: a 28-pixel token, ~65x65 pixels
    assert abs(blue / per_token - merged) <= 0.1 * merged + 1 and abs(red / per_token - pruned) <= 0.1 * pruned + 1


def test_explain_fates_match_the_schedule(tiny):
    from ffexport.calibrate.explain import Explain
    from ffexport.calibrate.trace import KEPT, MERGED, PRUNED
    from ffexport.export.buckets import parse_bucket

    bucket = parse_bucket("8x112x112", patch_size=14, temporal_patch_size=2, merge_size=2, video_pixels=tiny.video_pixels)
    assert (bucket.visual_tokens, bucket.patches_per_frame) == (64, 16)
    e = Explain(tiny, bucket)(synthetic_video("moving_object", frames=8, seed=3), "clip")
    fates = e.trace.fates()
    merged = sum(s.remove for s in e.schedule.stages if s.op == "merge")
    assert (fates == KEPT).sum() == e.schedule.final_visual_tokens
    assert (fates != KEPT).sum() == 64 - e.schedule.final_visual_tokens
    assert (fates == PRUNED).sum() >= sum(s.remove for s in e.schedule.stages if s.op == "prune")
    assert (fates == MERGED).sum() <= merged
    assert (fates[:16] != MERGED).all()  # the first frame's tokens start every patch chain: never merged away


def test_explain_bad_output_name(tmp_path, capsys, error_line):
    assert main(["-q", "explain", "--video", "synthetic:pan", "--out", str(tmp_path / "x.jpg")]) == InputError.exit_code
    assert "PNG" in error_line()


def test_a_video_the_budget_cannot_cover_is_skipped_by_name_and_counted(tiny, caplog):
    from ffexport.calibrate.collect import Collect
    from ffexport.calibrate.videos import synthetic_set
    from ffexport.export.buckets import parse_bucket
    from ffexport.fusion.config import FusionConfig

    bucket = parse_bucket("8x112x112", patch_size=14, temporal_patch_size=2, merge_size=2, video_pixels=tiny.video_pixels)
    videos = synthetic_set(2, kinds=("static", "pan"), grain=False)
    with caplog.at_level("WARNING"):
        collection = Collect(tiny, bucket, FusionConfig(similarity=0.9), quiet=True)(videos)
    assert [r.name for r in collection.calibrated] == ["synthetic:static:0:grain0"]
    assert [r.name for r in collection.failed] == ["synthetic:pan:1:grain0"]
    assert "cost is too small" in collection.failed[0].error
    assert any("skipped synthetic:pan:1:grain0" in r.getMessage() for r in caplog.records)
    (run,) = collection.calibrated
    assert run.trace.survivors.size == run.schedule.final_visual_tokens and run.cost == pytest.approx(0.3125)
