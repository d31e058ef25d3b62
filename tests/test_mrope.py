"""Qwen2-VL M-RoPE positions: the released rule, and where transformers 5.3+ departs from it."""

import numpy as np
import pytest
import torch

from ffexport.mrope import mrope_position_ids, video_spans

VIDEO = 9


def test_hand_computed_example():
    # 2 text tokens, a video of t=4 groups on a 2x4 patch grid (1x2 merged tokens per group), 2 text tokens
    ids = np.array([1, 2] + [VIDEO] * 8 + [3, 4])
    pos, delta = mrope_position_ids(ids, [[4, 2, 4]], video_token_id=VIDEO, spatial_merge_size=2)
    assert pos.tolist() == [
        [0, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 7],
        [0, 1, 2, 2, 2, 2, 2, 2, 2, 2, 6, 7],
        [0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 6, 7],
    ]
    # text after the video starts at max(video positions) + 1 = 6: the temporal length counts
    assert delta == 8 - 12


def test_span_must_match_grid():
    ids = np.array([1] + [VIDEO] * 7 + [2])
    with pytest.raises(ValueError, match="does not match grid"):
        mrope_position_ids(ids, [[4, 2, 4]], video_token_id=VIDEO, spatial_merge_size=2)


def test_video_spans():
    assert video_spans(np.array([1, 9, 9, 2, 9]), 9) == [(1, 3), (4, 5)]
    assert video_spans(np.array([1, 2]), 9) == []


def _hf_positions(tiny, ids, grid):
    mm = torch.tensor((ids == tiny.config.video_token_id).astype(np.int64) * 2)
    pos, delta = tiny.model.model.get_rope_index(torch.tensor(ids), mm, video_grid_thw=torch.tensor(grid))
    return pos[:, 0].numpy(), int(delta.reshape(-1)[0])


@pytest.mark.parametrize("t, h, w", [(1, 4, 4), (2, 8, 8), (2, 8, 4)])
def test_agrees_with_transformers_when_frames_do_not_exceed_the_grid(tiny, t, h, w):
    # transformers 5.x advances by max(h, w) // merge after a video; with t <= that, both rules agree
    vid = tiny.config.video_token_id
    ids = np.array([[5, 6, 7] + [vid] * (t * h * w // 4) + [8, 9]])
    ours = mrope_position_ids(ids, [[t, h, w]], video_token_id=vid, spatial_merge_size=2)
    hf = _hf_positions(tiny, ids, [[t, h, w]])
    np.testing.assert_array_equal(ours[0], hf[0])
    assert ours[1] == hf[1]


def test_differs_from_transformers_5_when_the_video_is_long(tiny):
    # 8 temporal groups on a 2x2 merged grid: the released rule puts the next text at 3 + 7 + 1 = 11,
    # transformers 5.3+ at 3 + 2 = 5 (it ignores the temporal length). We keep the released rule.
    vid = tiny.config.video_token_id
    t, h, w = 8, 4, 4
    ids = np.array([[5, 6, 7] + [vid] * (t * h * w // 4) + [8, 9]])
    ours, _ = mrope_position_ids(ids, [[t, h, w]], video_token_id=vid, spatial_merge_size=2)
    hf, _ = _hf_positions(tiny, ids, [[t, h, w]])
    assert ours[0, -2] == 3 + (t - 1) + 1
    assert hf[0, -2] == 3 + max(h, w) // 2
    np.testing.assert_array_equal(ours[:, : 3 + t * 4], hf[:, : 3 + t * 4])
