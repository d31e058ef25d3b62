"""Frame blocks with text between them (issue 13 item 1): the dynamic reference == the oracle,
static == dynamic on the realized schedule, text between blocks is never merged or pruned, and a
one-block layout is exactly the contiguous span."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
import torch

from ffexport.errors import FusionError, ScheduleError
from ffexport.fusion.config import FusionConfig
from ffexport.fusion.decoder import ReducedDecoder
from ffexport.fusion.layout import FrameBlock, FrameLayout
from ffexport.fusion.reducers import DynamicReducer, StaticReducer, VisualSpan
from ffexport.fusion.schedule import SCHEDULE_FORMAT, SCHEDULE_FORMAT_V1, Schedule, Stage
from ffexport.oracle import NaiveFrameFusion

ATOL = 1e-5
DEPTH = 4


@dataclass(frozen=True)
class BlockCase:
    seed: int
    blocks: int
    frames_per_block: int
    patches: int
    gap: int  # text tokens between two blocks
    similarity: float
    budget_layers: int | None = 28
    ratio_lower_bound: float = 0.1
    text_before: int = 4
    text_after: int = 5

    @property
    def id(self) -> str:
        return (f"s{self.seed}-b{self.blocks}x{self.frames_per_block}x{self.patches}-gap{self.gap}"
                f"-sim{self.similarity}-bl{self.budget_layers}-r{self.ratio_lower_bound}-after{self.text_after}")

    def layout(self) -> FrameLayout:
        n = self.frames_per_block * self.patches
        return FrameLayout(tuple(FrameBlock(i * (n + self.gap), n, self.patches) for i in range(self.blocks)))


CASES = [BlockCase(seed, b, fpb, p, gap, sim) for seed, (b, fpb, p), gap, sim in itertools.product(
    [0, 1], [(6, 1, 4), (3, 2, 6)], [1, 3], [0.3, 0.8, 0.95])] + [
    BlockCase(2, 6, 1, 4, 2, 0.5, ratio_lower_bound=0.0),  # cascades across layers
    BlockCase(3, 5, 1, 6, 2, 0.95, text_after=2),  # visual tokens among the last 4 queries
    BlockCase(4, 4, 2, 4, 3, 0.8, budget_layers=None),
]


def make_inputs(case: BlockCase, hidden: int = 64):
    """embeds [L, D] (patch base rows + per-frame noise, text rows between blocks), position ids, start."""
    g = torch.Generator().manual_seed(case.seed)
    layout = case.layout()
    p = case.patches
    base = torch.randn(p, hidden, generator=g)
    scales = torch.tensor([0.05, 0.4, 1.5])
    region = torch.randn(layout.region_length, hidden, generator=g)  # text rows keep these
    offsets = torch.as_tensor(layout.visual_offsets())
    for f in range(layout.frames):
        scale = scales[torch.randint(0, 3, (p,), generator=g)]
        region[offsets[f * p:(f + 1) * p]] = base + scale[:, None] * torch.randn(p, hidden, generator=g)
    before = torch.randn(case.text_before, hidden, generator=g)
    after = torch.randn(case.text_after, hidden, generator=g)
    embeds = torch.cat([before, region, after])
    length = embeds.shape[0]
    pos = torch.arange(length).repeat(3, 1)
    pos[1] = pos[1] // 2  # three different axes, so M-RoPE sections matter
    return embeds, pos, case.text_before, layout


@pytest.fixture(scope="module")
def decoder(tiny):
    return ReducedDecoder(tiny.adapter.decoder_parts(tiny.model))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_blocks_dynamic_matches_oracle_and_static_matches_dynamic(tiny, decoder, case):
    embeds, pos, s, layout = make_inputs(case)
    n, p = layout.visual_tokens, layout.patches_per_frame
    config = FusionConfig(similarity=case.similarity, ratio_lower_bound=case.ratio_lower_bound,
                          budget_layers=case.budget_layers)
    naive = NaiveFrameFusion(tiny.model, similarity=case.similarity, ratio_lower_bound=case.ratio_lower_bound,
                             budget_layers=case.budget_layers).prefill(embeds, pos, s, n, p,
                                                                       blocks=layout.to_json())
    reducer = DynamicReducer(config, config.layers_for(DEPTH))
    with torch.no_grad():
        try:
            dynamic = decoder.prefill(embeds[None], pos, torch.tensor(s), n, p, reducer, layout)
        except FusionError:
            assert naive.error is not None
            return
    assert naive.error is None
    steps = [(r.stage.layer, r.stage.where, r.stage.op, r.stage.remove) for r in reducer.realized]
    assert steps == naive.steps and [r.branch for r in reducer.realized] == naive.branches
    assert sum(r for *_, r in steps) > 0, "the case reduces nothing: it cannot test blocks"
    torch.testing.assert_close(dynamic.logits[0], naive.logits, atol=ATOL, rtol=0)
    for (ck, cv), (nk, nv) in zip(dynamic.presents, naive.kv, strict=True):
        torch.testing.assert_close(ck[0], nk, atol=ATOL, rtol=0)
        torch.testing.assert_close(cv[0], nv, atol=ATOL, rtol=0)
    # only visual tokens go: every text row (before, between the blocks, after) reaches the last layer
    assert dynamic.presents[-1][0].shape[2] == embeds.shape[0] - sum(r for *_, r in steps if _[0] < DEPTH - 1
                                                                     or _[1] == "before_attention")
    schedule = reducer.schedule(n, p, layout).validate(DEPTH, allow_empty=True)
    assert Schedule.from_json(schedule.to_json()) == schedule
    with torch.no_grad():
        static = decoder.prefill(embeds[None], pos, torch.tensor(s), n, p, StaticReducer(schedule), layout)
    torch.testing.assert_close(static.logits, dynamic.logits, atol=ATOL, rtol=0)
    assert [k.shape[2] for k, _ in static.presents] == [k.shape[2] for k, _ in dynamic.presents]


def test_text_between_blocks_is_kept_and_merges_reach_across_it():
    """Two one-frame blocks of P = 2 with one text row between: every patch of block 1 points the way
    block 0's does (cosine 1), so the threshold merges both into block 0; the text row stays, unchanged.
    (Patch ids count from each block's start: counted from the region's start they would pair 1 with 0.)"""
    layout = FrameLayout((FrameBlock(0, 2, 2), FrameBlock(3, 2, 2)))
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [3.0, 0.0], [0.0, 3.0]])
    span = VisualSpan(torch.tensor(0), 5, torch.as_tensor(layout.region_patch_ids()), 2, 2,
                      torch.as_tensor(layout.text_mask()), 1)
    reducer = DynamicReducer(FusionConfig(similarity=0.99, cost=0.5), 28)
    reduction = reducer.step(0, "before_attention", rows, span, None)
    assert reducer.realized[0].stage.remove == 2
    assert reduction.kept.tolist() == [0, 1, 2]
    assert reduction.values.tolist() == [[2.0, 0.0], [0.0, 2.0], [5.0, 5.0]]


def test_one_block_layout_is_the_contiguous_span(tiny, decoder):
    from tests.fusion.test_dynamic_oracle import CASES as CONTIGUOUS, make_inputs as contiguous_inputs

    embeds, pos, s, n, p = contiguous_inputs(CONTIGUOUS[0])
    config = FusionConfig(similarity=CONTIGUOUS[0].similarity, budget_layers=CONTIGUOUS[0].budget_layers)
    with torch.no_grad():
        plain = decoder.prefill(embeds[None], pos, torch.tensor(s), n, p, DynamicReducer(config, 28))
        blocks = decoder.prefill(embeds[None], pos, torch.tensor(s), n, p, DynamicReducer(config, 28),
                                 FrameLayout.contiguous(n, p))
    assert torch.equal(plain.logits, blocks.logits)


def test_layout_from_token_ids_and_schedule_versions():
    ids = [7, 9, 9, 9, 9, 1, 2, 9, 9, 9, 9, 8]
    start, layout = FrameLayout.from_token_ids(ids, 9, 2)
    assert start == 1 and layout.to_json() == [[0, 4], [6, 4]]
    assert (layout.visual_tokens, layout.frames, layout.text_tokens) == (8, 4, 2)
    multi = Schedule(8, 2, (Stage(0, "before_attention", "merge", 2),), layout)
    assert multi.to_json()["format"] == SCHEDULE_FORMAT and multi.to_json()["blocks"] == [[0, 4], [6, 4]]
    one = Schedule(8, 2, (), FrameLayout.contiguous(8, 2))
    assert one.to_json()["format"] == SCHEDULE_FORMAT_V1 and "blocks" not in one.to_json()
    assert one == Schedule(8, 2, ()) and Schedule.from_json(one.to_json()) == one
    with pytest.raises(ScheduleError, match="patches per frame"):
        FrameLayout((FrameBlock(0, 4, 2), FrameBlock(5, 3, 3)))
    with pytest.raises(ScheduleError, match="overlapping"):
        FrameLayout((FrameBlock(0, 4, 2), FrameBlock(3, 4, 2)))
    with pytest.raises(ScheduleError, match="hold"):
        Schedule(6, 2, (), layout).validate()


def test_block_prefill_graph_in_onnx_runtime_matches_pytorch(tiny, decoder, tmp_path):
    """The static graph of a several-block schedule (merge and prune steps) runs in ONNX Runtime like
    the module, with the video region's start a graph input; TensorRT-RTX's parser takes it when present."""
    ort = pytest.importorskip("onnxruntime")
    from ffexport.export.capture import CaptureOnnx, GraphSpec
    from ffexport.export.graphs import PrefillGraph, present_names

    from dataclasses import replace

    case = CASES[4]  # 3 blocks of 2 frames, 3 text rows between
    embeds, pos, s, layout = make_inputs(case)
    n, p = layout.visual_tokens, layout.patches_per_frame
    depth = 2  # the first two layers of the tiny decoder: a quick capture
    short = ReducedDecoder(replace(decoder.parts, layers=torch.nn.ModuleList(list(decoder.layers)[:depth])))
    schedule = Schedule(n, p, (Stage(0, "before_attention", "merge", 9), Stage(0, "after_attention", "merge", 3),
                               Stage(1, "after_attention", "prune", 8)), layout).validate(depth)
    module = PrefillGraph(short, schedule)
    inputs = (embeds[None], pos, torch.tensor(s))
    spec = GraphSpec("prefill", module, inputs, ["inputs_embeds", "position_ids", "video_start"],
                     ["logits", *present_names(depth)])
    proto = CaptureOnnx()(spec)
    path = tmp_path / "prefill.onnx"
    path.write_bytes(proto.SerializeToString())
    with torch.no_grad():
        expected = module(*inputs)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"inputs_embeds": embeds[None].numpy(), "position_ids": pos.numpy(),
                             "video_start": torch.tensor(s).numpy()})
    assert [g.shape for g in got] == [tuple(e.shape) for e in expected]
    assert expected[-1].shape[2] == embeds.shape[0] - 12  # the merges before layer 1's attention
    for e, g in zip(expected, got, strict=True):
        assert float((e - torch.from_numpy(g)).abs().max()) <= 1e-5
    from ffexport.export.trt_toolkit import find_toolkit
    from ffexport.lint.check import CheckGraph

    toolkit = find_toolkit(("tensorrt_rtx",))
    if toolkit is not None:  # CI installs it; the graph must parse and build ahead of time for SM89
        check = CheckGraph(toolkit=toolkit, build_for=("SM89",))(path, None)
        assert check.status == "built", check
