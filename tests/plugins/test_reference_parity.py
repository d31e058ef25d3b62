"""The plugins' CPU reference (C++, plugins/common) against ffexport.fusion.ops (PyTorch).

The reference is what the CUDA kernels are written to match; here it must equal the torch ops on
random spans: kept positions identical, values within 1e-5 (float32) or the dtype's rounding
(float16/bfloat16). Inputs include exact ties (a token repeating its patch's previous row: static
content), a patch identical across all frames (the longest run), rows that are scaled copies
(near-ties inside the tie window), spans thinned by earlier reductions, and ties in importance.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ffexport.fusion import ops

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALUE_TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (1e-3, 1e-3), torch.bfloat16: (8e-3, 8e-3)}


@st.composite
def merge_cases(draw):
    """(visual [n, D], patch_ids [n], P, frames, M) for one merge step."""
    frames = draw(st.integers(1, 6))
    patches = draw(st.integers(1, 10))
    d = draw(st.integers(1, 24))
    dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
    seed = draw(st.integers(0, 2**31 - 1))
    repeat = draw(st.sampled_from([0.0, 0.3, 0.7]))  # share of tokens repeating the previous frame's row
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(frames, patches, d, generator=generator)
    for f in range(1, frames):
        similar = torch.rand(patches, generator=generator) < 0.5
        rows[f, similar] = rows[f - 1, similar] + 0.05 * rows[f, similar]
        same = torch.rand(patches, generator=generator) < repeat
        rows[f, same] = rows[f - 1, same]
    if draw(st.booleans()):  # one patch identical across all frames: a run as long as the chain
        rows[:, draw(st.integers(0, patches - 1))] = rows[0, 0].clone()
    if draw(st.booleans()):  # scaled copies: cosine 1 up to rounding, inside the tie window
        scale = torch.tensor(draw(st.sampled_from([0.5, 3.0, 1.7])))
        target = draw(st.integers(0, patches - 1))
        for f in range(1, frames):
            rows[f, target] = rows[f - 1, target].clone() * scale
    visual = rows.reshape(frames * patches, d)
    patch_ids = torch.arange(frames * patches, dtype=torch.int64) % patches
    if draw(st.booleans()):  # a span thinned by earlier steps: any subset, order kept
        keep = torch.rand(frames * patches, generator=generator) < draw(st.sampled_from([0.5, 0.8]))
        visual, patch_ids = visual[keep], patch_ids[keep]
    n = visual.shape[0]
    assume(n >= 2)
    mergeable = n - int(torch.unique(patch_ids).numel())  # tokens with a chain predecessor
    assume(mergeable >= 1)
    remove = draw(st.integers(1, mergeable))
    return visual.to(dtype).contiguous(), patch_ids, patches, frames, remove


def torch_merge(visual, patch_ids, patches, frames, remove):
    order = ops.patch_order(patch_ids, patches)
    key = ops.chain_closeness(visual, patch_ids, order)
    flags = ops.top_flags(key, remove)
    # a run never exceeds n; ops.segment_sums fails when max_len > n (a thinned span of fewer tokens
    # than frames), so bound it by n: the same sums
    return ops.merge(visual, patch_ids, order, flags, remove, min(frames, visual.shape[0]))


@SETTINGS
@given(case=merge_cases())
def test_merge_matches_torch(reference, case):
    visual, patch_ids, patches, frames, remove = case
    kept, values = reference.merge(visual, patch_ids, remove, patches, frames)
    want_kept, want_values = torch_merge(visual, patch_ids, patches, frames, remove)
    assert torch.equal(kept, want_kept)
    rtol, atol = VALUE_TOL[visual.dtype]
    torch.testing.assert_close(values, want_values, rtol=rtol, atol=atol)


@SETTINGS
@given(case=merge_cases())
def test_merge_steps_match_torch(reference, case):
    """Patch order exactly, merge keys to float32 rounding, selection flags exactly."""
    visual, patch_ids, patches, _, remove = case
    order = ops.patch_order(patch_ids, patches)
    assert torch.equal(reference.patch_order(patch_ids, patches), order)
    key = ops.chain_closeness(visual, patch_ids, order)
    torch.testing.assert_close(reference.chain_closeness(visual, patch_ids, patches), key, rtol=1e-5, atol=1e-6)
    assert torch.equal(reference.top_flags(key, remove, relative=False), ops.top_flags(key, remove))


@st.composite
def prune_cases(draw):
    n = draw(st.integers(2, 300))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    kind = draw(st.sampled_from(["log-uniform", "softmax", "ties", "near-ties"]))
    if kind == "softmax":  # attention means: positive, summing to about 1
        importance = torch.softmax(torch.randn(n, generator=generator) * 3, dim=0)
    else:
        importance = torch.exp2(torch.rand(n, generator=generator) * -20)
    if kind == "ties":  # exact duplicates
        importance = importance[torch.randint(0, max(n // 4, 1), (n,), generator=generator)]
    if kind == "near-ties":  # a few ulps apart: tied inside the log2 window, broken by position
        base = importance[0]
        importance[: n // 2] = base * (1 + torch.randint(0, 4, (n // 2,), generator=generator) * 1.2e-7)
    keep = draw(st.integers(1, n - 1))
    return importance.to(torch.float32), keep


@SETTINGS
@given(case=prune_cases())
def test_prune_matches_torch(reference, case):
    importance, keep = case
    assert torch.equal(reference.prune(importance, keep), ops.prune(importance, keep))


def test_long_static_video_merges_whole_chains(reference):
    """Static content (every frame equal): the kept tokens are the first frame, values unchanged."""
    frames, patches, d = 8, 6, 16
    frame = torch.randn(patches, d, generator=torch.Generator().manual_seed(0))
    visual = frame.repeat(frames, 1)
    patch_ids = torch.arange(frames * patches) % patches
    remove = (frames - 1) * patches
    kept, values = reference.merge(visual, patch_ids, remove, patches, frames)
    assert torch.equal(kept, torch.arange(patches))
    torch.testing.assert_close(values, frame, rtol=1e-6, atol=1e-6)
    want_kept, want_values = torch_merge(visual, patch_ids, patches, frames, remove)
    assert torch.equal(kept, want_kept)
    torch.testing.assert_close(values, want_values, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_bucket_sized_merge_matches_torch(reference, dtype):
    """A realistic shape: 8 frame groups x 64 patches, D=256, 30% removed."""
    generator = torch.Generator().manual_seed(1)
    frames, patches, d = 8, 64, 256
    rows = torch.randn(frames, patches, d, generator=generator)
    for f in range(1, frames):
        rows[f] = rows[f - 1] + 0.2 * rows[f]
        rows[f, : patches // 4] = rows[f - 1, : patches // 4]  # static corner
    visual = rows.reshape(-1, d).to(dtype)
    patch_ids = torch.arange(frames * patches) % patches
    remove = int(0.3 * frames * patches)
    kept, values = reference.merge(visual, patch_ids, remove, patches, frames)
    want_kept, want_values = torch_merge(visual, patch_ids, patches, frames, remove)
    assert torch.equal(kept, want_kept)
    rtol, atol = VALUE_TOL[dtype]
    torch.testing.assert_close(values, want_values, rtol=rtol, atol=atol)
