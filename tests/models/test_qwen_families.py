"""Qwen families: a model directory's processor config, read as transformers reads it (issue 12 item 5)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ffexport.errors import ModelError
from ffexport.video.preprocess import preprocess_video
from ffexport.video.processor_config import QWEN2_VL_DEFAULTS, read_processor_config
from ffexport.video.synthetic import synthetic_video

#: what released Qwen2-VL checkpoints ship (the image processor's file; no video config)
RELEASED = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
            "merge_size": 2, "image_processor_type": "Qwen2VLImageProcessor"}


def _write(directory: Path, name: str, data: dict) -> None:
    (directory / name).write_text(json.dumps(data))


def _transformers_dict(directory: Path) -> dict:
    from transformers.video_processing_utils import BaseVideoProcessor

    return BaseVideoProcessor.get_video_processor_dict(str(directory), local_files_only=True)[0]


@pytest.mark.parametrize("layout", ["image_only", "video_beside_image", "nested_beside_both"])
def test_the_file_transformers_picks_is_the_file_read(tmp_path: Path, layout: str) -> None:
    _write(tmp_path, "preprocessor_config.json", RELEASED)
    if layout != "image_only":
        _write(tmp_path, "video_preprocessor_config.json", {"size": {"shortest_edge": 4 * 3136,
                                                                      "longest_edge": 28 * 28 * 300}})
    if layout == "nested_beside_both":
        _write(tmp_path, "processor_config.json", {"video_processor": {"min_pixels": 2 * 3136, "max_pixels": 28 * 28 * 100,
                                                                        "image_mean": [0.5, 0.5, 0.5]}})
    ours = read_processor_config(tmp_path)
    theirs = _transformers_dict(tmp_path)
    size = theirs.get("size", {})
    assert ours.min_pixels == theirs.get("min_pixels", size.get("shortest_edge"))
    assert ours.max_pixels == theirs.get("max_pixels", size.get("longest_edge"))
    assert ours.source == {"image_only": "preprocessor_config.json",
                           "video_beside_image": "video_preprocessor_config.json",
                           "nested_beside_both": "processor_config.json#video_processor"}[layout]
    if layout == "nested_beside_both":
        assert ours.image_mean == (0.5, 0.5, 0.5) and ours.image_std == QWEN2_VL_DEFAULTS.image_std


def test_no_file_gives_the_video_processor_defaults(tmp_path: Path) -> None:
    assert read_processor_config(tmp_path) == QWEN2_VL_DEFAULTS
    assert QWEN2_VL_DEFAULTS.source == "defaults"


@pytest.mark.parametrize("bad", [{"min_pixels": 0}, {"max_pixels": "big"}, {"min_pixels": 9000, "max_pixels": 100},
                                 {"image_mean": [0.5, 0.5]}])
def test_malformed_values_are_one_line_errors(tmp_path: Path, bad: dict) -> None:
    _write(tmp_path, "preprocessor_config.json", bad)
    with pytest.raises(ModelError, match="preprocessor_config.json"):
        read_processor_config(tmp_path)


def test_released_limits_give_transformers_token_count(tmp_path: Path) -> None:
    """112x140 frames: 20 tokens per frame in transformers with the released file (143 with the class defaults)."""
    pil = pytest.importorskip("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl",
                              reason="transformers' Qwen2-VL Pillow processor is the reference")
    _write(tmp_path, "preprocessor_config.json", RELEASED)
    cfg = read_processor_config(tmp_path)
    frame = synthetic_video("moving_object", frames=1, height=112, width=140, seed=3)[0]
    pixels, grid = preprocess_video(np.stack([frame, frame]), min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels,
                                    patch_size=cfg.patch_size, temporal_patch_size=cfg.temporal_patch_size,
                                    merge_size=cfg.merge_size, image_mean=cfg.image_mean, image_std=cfg.image_std)
    reference = pil.Qwen2VLImageProcessorPil.from_pretrained(str(tmp_path))
    out = reference(images=frame, return_tensors="np")
    np.testing.assert_array_equal(grid, out["image_grid_thw"])
    np.testing.assert_allclose(pixels, out["pixel_values"], rtol=0, atol=1e-5)
    assert int(np.prod(grid)) // 4 == 20
    _, default_grid = preprocess_video(np.stack([frame, frame]))
    assert int(np.prod(default_grid)) // 4 == 143  # what ffexport used for every directory before


def test_a_model_directory_carries_its_limits_into_the_loaded_model(tmp_path: Path) -> None:
    from ffexport.models import LoadModel

    tiny = LoadModel("qwen2vl-tiny")()
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    _write(tmp_path, "preprocessor_config.json", RELEASED)
    loaded = LoadModel(str(tmp_path))()
    assert loaded.video_pixels == (3136, 12845056)
    assert loaded.processor.source == "preprocessor_config.json"
    frames = synthetic_video("moving_object", frames=2, height=112, width=140, seed=3)
    case = loaded.case_from_video(frames, "what happens?")
    assert case.video_grid_thw.reshape(-1).tolist() == [1, 8, 10]
