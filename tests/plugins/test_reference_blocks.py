"""The plugin interface on frame blocks: the video as several blocks with text between them.

A static step of a several-block prefill hands the plugin the visual rows alone (the text rows
between blocks compacted away by :class:`ffexport.fusion.reducers.StaticReducer`), with each row's
patch id = its offset inside its block modulo P. So a block's first frame follows the previous
block's last frame in every patch chain, and the merge partner of a token can sit across a block
boundary (and across the text there). Here the CPU reference of the plugins (what the kernels are
written to match) stands in for the plugin nodes inside ``StaticReducer`` and must give exactly
what the standard ops give (``StandardSteps``), on random block layouts, thinned spans and dtypes:
kept region rows identical, values within the dtype's rounding, text rows untouched.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ffexport.fusion.layout import FrameBlock, FrameLayout
from ffexport.fusion.reducers import StandardSteps, StaticReducer, VisualSpan
from ffexport.fusion.schedule import Schedule, Stage

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALUE_TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (1e-3, 1e-3), torch.bfloat16: (8e-3, 8e-3)}


class ReferenceSteps:
    """The plugins' CPU reference as the step ops of a StaticReducer (what a plugin node computes),
    remembering what each call received."""

    def __init__(self, reference) -> None:
        self.reference = reference
        self.calls: list[dict] = []

    def merge(self, visual, patch_ids, remove, patches_per_frame, max_run):
        self.calls.append({"op": "merge", "rows": visual.shape[0], "patch_ids": patch_ids.clone(),
                           "patches": patches_per_frame, "max_run": max_run})
        return self.reference.merge(visual, patch_ids, remove, patches_per_frame, max_run)

    def prune(self, importance, keep):
        self.calls.append({"op": "prune", "rows": importance.shape[0]})
        return self.reference.prune(importance, keep)


@st.composite
def block_spans(draw):
    """(span, rows [length, D], layout, kept region rows) for a several-block region, maybe thinned."""
    blocks = draw(st.integers(2, 4))
    patches = draw(st.integers(1, 6))
    frames = [draw(st.integers(1, 3)) for _ in range(blocks)]
    gaps = [draw(st.integers(0, 3)) for _ in range(blocks - 1)]  # text tokens between blocks (0: adjacent)
    d = draw(st.integers(1, 16))
    dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    start, layout_blocks = 0, []
    for i, f in enumerate(frames):
        layout_blocks.append(FrameBlock(start, f * patches, patches))
        start += f * patches + (gaps[i] if i < blocks - 1 else 0)
    layout = FrameLayout(tuple(layout_blocks))
    total = layout.frames
    video = torch.randn(total, patches, d, generator=generator)
    for f in range(1, total):  # frame f follows frame f-1 (across a block boundary too): similar or equal rows
        similar = torch.rand(patches, generator=generator) < 0.6
        video[f, similar] = video[f - 1, similar] + 0.05 * video[f, similar]
        same = torch.rand(patches, generator=generator) < 0.3
        video[f, same] = video[f - 1, same]
    rows = torch.randn(layout.region_length, d, generator=generator) * 10  # text rows: unrelated values
    rows[torch.as_tensor(layout.visual_offsets())] = video.reshape(-1, d)
    keep = torch.ones(layout.region_length, dtype=torch.bool)
    if draw(st.booleans()):  # thinned by earlier steps: some visual rows gone, every text row kept
        visual_rows = torch.as_tensor(layout.visual_offsets())
        gone = torch.rand(visual_rows.numel(), generator=generator) < draw(st.sampled_from([0.3, 0.5]))
        keep[visual_rows[gone]] = False
    region = torch.nonzero(keep).reshape(-1)
    text = torch.as_tensor(layout.text_mask())[region]
    span = VisualSpan(torch.tensor(draw(st.integers(0, 5))), int(region.numel()),
                      torch.as_tensor(layout.region_patch_ids())[region], patches, total, text,
                      int(text.sum()))
    return span, rows[region].to(dtype).contiguous(), layout, region


def _merge_stage(draw, span: VisualSpan) -> int:
    visual = span.visual_count
    chains = int(torch.unique(span.patch_ids[~span.text]).numel())
    assume(visual >= 2 and visual - chains >= 1)
    return draw(st.integers(1, visual - chains))


@SETTINGS
@given(case=block_spans(), data=st.data())
def test_merge_on_blocks_matches_standard_ops(reference, case, data):
    span, rows, layout, region = case
    remove = _merge_stage(data.draw, span)
    schedule = Schedule(layout.visual_tokens, layout.patches_per_frame, (Stage(0, "before_attention", "merge", remove),))
    want = StaticReducer(schedule, steps=StandardSteps()).step(0, "before_attention", rows, span, None)
    steps = ReferenceSteps(reference)
    got = StaticReducer(schedule, steps=steps).step(0, "before_attention", rows, span, None)

    # what the plugin node receives: the visual rows alone, patch id = offset in its block mod P
    (call,) = steps.calls
    visual = ~span.text
    assert call["rows"] == span.visual_count
    assert torch.equal(call["patch_ids"], span.patch_ids[visual])
    offsets = torch.as_tensor(layout.visual_offsets())
    in_block = torch.cat([torch.arange(b.length) for b in layout.blocks])
    assert torch.equal(call["patch_ids"], (in_block % layout.patches_per_frame)[torch.isin(offsets, region)])
    assert (call["patches"], call["max_run"]) == (layout.patches_per_frame, layout.frames)

    assert torch.equal(got.kept, want.kept)
    assert torch.isin(torch.nonzero(span.text).reshape(-1), got.kept).all()  # text rows are never merged
    rtol, atol = VALUE_TOL[rows.dtype]
    torch.testing.assert_close(got.values, want.values, rtol=rtol, atol=atol)
    text_kept = span.text[got.kept]
    assert torch.equal(got.values[text_kept], rows[got.kept[text_kept]])  # and keep their values exactly


@SETTINGS
@given(case=block_spans(), data=st.data())
def test_prune_on_blocks_matches_standard_ops(reference, case, data):
    span, rows, layout, _ = case
    assume(span.visual_count >= 2)
    remove = data.draw(st.integers(1, span.visual_count - 1))
    schedule = Schedule(layout.visual_tokens, layout.patches_per_frame, (Stage(0, "after_attention", "prune", remove),))
    generator = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    sequence = int(span.start) + span.length + 3
    importance = torch.exp2(torch.rand(sequence, generator=generator) * -20)
    want = StaticReducer(schedule, steps=StandardSteps()).step(0, "after_attention", rows, span, importance)
    steps = ReferenceSteps(reference)
    got = StaticReducer(schedule, steps=steps).step(0, "after_attention", rows, span, importance)
    assert steps.calls == [{"op": "prune", "rows": span.visual_count}]  # ranks the visual tokens only
    assert torch.equal(got.kept, want.kept)
    assert torch.isin(torch.nonzero(span.text).reshape(-1), got.kept).all()


def test_merge_partner_across_a_block_boundary(reference):
    """Two one-frame blocks with text between: block 1's patch 1 repeats block 0's patch 1 and is the
    only merge; it merges into block 0's token, across the text, whose value stays the average."""
    p, d = 3, 4
    layout = FrameLayout((FrameBlock(0, p, p), FrameBlock(p + 2, p, p)))  # rows 3, 4 are text
    generator = torch.Generator().manual_seed(5)
    rows = torch.randn(layout.region_length, d, generator=generator)
    rows[p + 2 + 1] = rows[1] * 1.0  # equal: cosine 1
    rows[p + 2 + 0] = -rows[0]       # opposite: cosine -1
    rows[p + 2 + 2] = torch.randn(d, generator=generator)
    span = VisualSpan(torch.tensor(7), layout.region_length, torch.as_tensor(layout.region_patch_ids()), p,
                      layout.frames, torch.as_tensor(layout.text_mask()), layout.text_tokens)
    schedule = Schedule(2 * p, p, (Stage(0, "before_attention", "merge", 1),))
    got = StaticReducer(schedule, steps=ReferenceSteps(reference)).step(0, "before_attention", rows, span, None)
    want = StaticReducer(schedule, steps=StandardSteps()).step(0, "before_attention", rows, span, None)
    assert got.kept.tolist() == want.kept.tolist() == [0, 1, 2, 3, 4, 5, 7]  # region row 6 (block 1, patch 1) left
    torch.testing.assert_close(got.values, want.values, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got.values[1], rows[1], rtol=1e-6, atol=1e-6)  # (x + x) / 2
