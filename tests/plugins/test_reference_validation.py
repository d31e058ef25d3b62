"""Bad attributes, shapes, dtypes and values are refused by the plugins' shared validation
(plugins/common/frameFusionValidate.h) with a one-line message, through the reference's C ABI."""

from __future__ import annotations

import pytest
import torch

INVALID_ARGUMENT, INVALID_DATA = 1, 2


def span(frames=3, patches=4, d=5):
    visual = torch.randn(frames * patches, d, generator=torch.Generator().manual_seed(0))
    return visual, torch.arange(frames * patches) % patches


@pytest.mark.parametrize(
    ("remove", "patches", "max_run", "words"),
    [
        (12, 4, 3, "remove=12 must be < n=12"),
        (13, 4, 3, "must be < n"),
        (0, 4, 3, "remove=0 must be >= 1"),
        (-1, 4, 3, "remove=-1"),
        (2, 0, 3, "patches_per_frame=0"),
        (2, 4, 0, "max_run=0"),
        (9, 4, 3, "exceeds the 8 tokens that can merge"),
        (2, 2, 3, "exceed patches_per_frame * max_run"),
    ],
)
def test_merge_refuses_bad_attributes(reference, remove, patches, max_run, words):
    visual, patch_ids = span()
    code, message, _, _ = reference.merge_raw(visual, patch_ids % max(patches, 1), remove, patches, max_run)
    assert code == INVALID_ARGUMENT
    assert words in message and message.startswith("FrameFusionMerge:") and "\n" not in message
    assert reference.validate_merge(12, 5, 0, remove, patches, max_run) == (INVALID_ARGUMENT, message)


def test_merge_refuses_bad_dtype_code(reference):
    visual, patch_ids = span()
    code, message, _, _ = reference.merge_raw(visual, patch_ids, 2, 4, 3, dtype_code=5)
    assert code == INVALID_ARGUMENT
    assert "float32, float16 or bfloat16" in message and "type code 5" in message


@pytest.mark.parametrize(("bad", "words"), [(4, "patch_ids[7]=4 is outside [0, 4)"), (-1, "patch_ids[7]=-1 is outside [0, 4)")])
def test_merge_refuses_patch_ids_out_of_range(reference, bad, words):
    visual, patch_ids = span()
    patch_ids[7] = bad
    code, message, _, _ = reference.merge_raw(visual, patch_ids, 2, 4, 3)
    assert (code, message) == (INVALID_DATA, f"FrameFusionMerge: {words}")


def test_merge_refuses_chain_longer_than_max_run(reference):
    visual, _ = span()
    patch_ids = torch.zeros(12, dtype=torch.int64)
    patch_ids[6:] = 1  # 6 tokens of patch 0 but max_run = 3
    code, message, _, _ = reference.merge_raw(visual, patch_ids, 2, 4, 3)
    assert code == INVALID_DATA
    assert "patch 0 occurs more than max_run=3 times" in message


def test_merge_refuses_zero_rows_that_leave_too_few_candidates(reference):
    """A zero row has no direction (NaN key, ranked last): asking to merge it is refused, not garbage."""
    visual, patch_ids = span(frames=2, patches=2)
    visual[2:] = 0.0  # both tokens of the second frame are zero
    code, message, _, _ = reference.merge_raw(visual, patch_ids, 2, 2, 2)
    assert code == INVALID_DATA
    assert "NaN" in message


def test_validation_accepts_unknown_n(reference):
    assert reference.validate_merge(-1, 3584, 1, 100, 256, 32) == (0, "")
    assert reference.validate_prune(-1, 0, 100) == (0, "")


@pytest.mark.parametrize(
    ("n", "keep", "words"),
    [(10, 11, "keep=11 must be < n=10"), (10, 10, "keep=10 must be < n=10"), (10, 0, "keep=0 must be >= 1"), (1, 1, "2 <= n")],
)
def test_prune_refuses_bad_keep(reference, n, keep, words):
    code, message, _ = reference.prune_raw(torch.rand(n), keep)
    assert code == INVALID_ARGUMENT
    assert words in message and message.startswith("FrameFusionPrune:")


def test_prune_refuses_non_float32(reference):
    code, message = reference.validate_prune(10, 1, 3)
    assert code == INVALID_ARGUMENT
    assert "importance must be float32 (got float16)" in message


def test_merge_refuses_null_arrays(reference):
    import ctypes

    message = ctypes.create_string_buffer(128)
    code = reference.lib.ffe_merge(None, 0, 4, 2, None, 1, 2, 2, None, None, message, len(message))
    assert code == INVALID_ARGUMENT
    assert b"NULL" in message.value
