"""The dynamic FrameFusion reference against an independent naive re-implementation.

``ffexport.oracle.NaiveFrameFusion`` re-implements the whole dynamic prefill from the spec with
Python lists and explicit per-step decisions (it uses only the Hugging Face modules' weights and the
rotary tables' inputs). For every input below, ``ReducedDecoder.prefill(..., DynamicReducer(...))``
must realize the same schedule (layer, where, op, remove) through the same branches, give logits
within 1e-5 and per-layer KV caches of the same lengths (and values within 1e-5); where the spec's
budget formula fails, both must fail at the same step. The static decoder run on the realized
schedule must match too (the parity contract).

Inputs: random embeddings whose video span has temporal structure: every patch has a base row and
each frame adds noise of a scale drawn per (frame, patch) from {0.05, 0.4, 1.5}, so similarities
range from ~1 down to ~0. A final test asserts that the cases, together, exercised every path
(several threshold merges, a cascade at a later layer, top-k first and after threshold steps,
pruning at layer 0 and later, a budget error, the last 4 queries including visual tokens), so the
suite cannot pass vacuously.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
import torch

from ffexport.oracle import NaiveFrameFusion, NaiveResult  # noqa: E402

from ffexport.errors import FusionError  # noqa: E402
from ffexport.fusion.config import FusionConfig  # noqa: E402
from ffexport.fusion.decoder import ReducedDecoder  # noqa: E402
from ffexport.fusion.reducers import DynamicReducer, StaticReducer  # noqa: E402

LOGITS_ATOL = 1e-5
KV_ATOL = 1e-5
DEPTH = 4  # the tiny model's decoder layers


@dataclass(frozen=True)
class Case:
    seed: int
    frames: int
    grid_h: int
    grid_w: int
    similarity: float
    budget_layers: int | None
    cost: float = 0.3
    ratio_lower_bound: float = 0.1
    text_before: int = 5
    text_after: int = 6

    @property
    def id(self) -> str:
        return (
            f"s{self.seed}-t{self.frames}x{self.grid_h}x{self.grid_w}-sim{self.similarity}-bl{self.budget_layers}"
            f"-c{self.cost}-r{self.ratio_lower_bound}-txt{self.text_before}+{self.text_after}"
        )


GRID = [
    Case(seed, *shape, similarity, budget_layers)
    for seed, shape, similarity, budget_layers in itertools.product(
        [0, 1, 2], [(5, 2, 3), (8, 2, 2), (3, 3, 3)], [0.3, 0.8, 0.95, 0.999], [None, 28]
    )
]
EXTRA = [
    # cascades: merging continues into later layers (already-merged tokens merge again)
    Case(0, 8, 2, 2, 0.5, 28, ratio_lower_bound=0.0),
    Case(1, 8, 2, 2, 0.5, 28, ratio_lower_bound=0.0),
    Case(0, 5, 2, 3, 0.8, 28, ratio_lower_bound=0.02),
    Case(2, 5, 2, 3, 0.5, 28, ratio_lower_bound=0.02),
    # top-k after threshold steps (the budget then depends on the sparsity list)
    Case(10, 5, 2, 3, 0.4, 28),
    Case(10, 5, 2, 3, 0.4, None),
    Case(11, 5, 2, 3, 0.5, None, cost=0.5),
    Case(0, 6, 1, 4, 0.3, 28),
    # other costs
    Case(0, 5, 2, 3, 0.8, None, cost=0.5),
    Case(1, 8, 2, 2, 0.95, 28, cost=0.8),
    # fewer than 4 text tokens after the video: the importance's last 4 queries include visual tokens
    Case(0, 5, 2, 3, 0.95, 28, text_after=2),
    Case(1, 4, 2, 3, 0.999, None, text_after=1),
    Case(2, 8, 2, 2, 0.8, 28, text_after=3),
    # the video at the very start of the sequence
    Case(0, 5, 2, 3, 0.95, 28, text_before=0),
    Case(1, 8, 2, 2, 0.3, None, text_before=0, text_after=2),
]
CASES = GRID + EXTRA


def make_inputs(case: Case, hidden: int = 64):
    """inputs_embeds [L, D], position_ids [3, L], video start, N, P."""
    g = torch.Generator().manual_seed(case.seed)
    p = case.grid_h * case.grid_w
    n = case.frames * p
    base = torch.randn(p, hidden, generator=g)
    scales = torch.tensor([0.05, 0.4, 1.5])
    frames = []
    for _ in range(case.frames):
        scale = scales[torch.randint(0, 3, (p,), generator=g)]
        frames.append(base + scale[:, None] * torch.randn(p, hidden, generator=g))
    text = torch.randn(case.text_before + case.text_after, hidden, generator=g)
    s = case.text_before
    embeds = torch.cat([text[:s], torch.cat(frames), text[s:]])
    length = embeds.shape[0]
    pos = torch.zeros(3, length, dtype=torch.int64)
    pos[:, :s] = torch.arange(s)
    tt, hh, ww = torch.meshgrid(
        torch.arange(case.frames), torch.arange(case.grid_h), torch.arange(case.grid_w), indexing="ij"
    )
    pos[:, s : s + n] = torch.stack([tt.flatten(), hh.flatten(), ww.flatten()]) + s
    after = int(pos[:, s : s + n].max()) + 1
    pos[:, s + n :] = torch.arange(case.text_after) + after
    return embeds, pos, s, n, p


@dataclass
class Outcome:
    case: Case
    naive: NaiveResult
    code_steps: list
    code_branches: list
    code_numbers: list
    code_error: str | None
    code_result: object
    static_result: object
    length: int


@pytest.fixture(scope="module")
def decoder(tiny):
    return ReducedDecoder(tiny.adapter.decoder_parts(tiny.model))


@pytest.fixture(scope="module")
def outcomes(tiny, decoder):
    """Run every case once through both implementations (shared by the per-case and coverage tests)."""
    results = {}
    for case in CASES:
        embeds, pos, s, n, p = make_inputs(case)
        naive = NaiveFrameFusion(
            tiny.model,
            cost=case.cost,
            similarity=case.similarity,
            ratio_lower_bound=case.ratio_lower_bound,
            budget_layers=case.budget_layers,
        ).prefill(embeds, pos, s, n, p)
        config = FusionConfig(
            cost=case.cost,
            similarity=case.similarity,
            ratio_lower_bound=case.ratio_lower_bound,
            budget_layers=case.budget_layers,
        )
        reducer = DynamicReducer(config, config.layers_for(DEPTH))
        code_result, code_error, static_result = None, None, None
        with torch.no_grad():
            try:
                code_result = decoder.prefill(embeds[None], pos, torch.tensor(s), n, p, reducer)
            except FusionError as e:
                code_error = str(e)
            if code_error is None:
                schedule = reducer.schedule(n, p).validate(DEPTH, allow_empty=True)
                static_result = decoder.prefill(embeds[None], pos, torch.tensor(s), n, p, StaticReducer(schedule))
        results[case] = Outcome(
            case,
            naive,
            [(r.stage.layer, r.stage.where, r.stage.op, r.stage.remove) for r in reducer.realized],
            [r.branch for r in reducer.realized],
            [(r.visual_before, r.ratio, r.budget) for r in reducer.realized],
            code_error,
            code_result,
            static_result,
            embeds.shape[0],
        )
    return results


def test_naive_oracle_without_fusion_matches_hugging_face(tiny):
    """The oracle's own attention/RoPE are right: no reduction == the HF text model's forward."""
    for case in (CASES[0], EXTRA[-1]):
        embeds, pos, s, n, p = make_inputs(case)
        naive = NaiveFrameFusion(tiny.model).prefill(embeds, pos, s, n, p, fusion=False)
        with torch.no_grad():
            hf = tiny.model.model.language_model(inputs_embeds=embeds[None], position_ids=pos[:, None, :])
            logits = tiny.model.lm_head(hf.last_hidden_state[0, -1])
        torch.testing.assert_close(naive.logits, logits, atol=LOGITS_ATOL, rtol=0)
        assert [k.shape[1] for k, _ in naive.kv] == [embeds.shape[0]] * DEPTH


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_dynamic_reference_matches_naive(outcomes, case):
    out = outcomes[case]
    naive = out.naive
    assert out.code_steps == naive.steps, f"schedule differs:\n code  {out.code_steps}\n naive {naive.steps}"
    assert out.code_branches == naive.branches
    for (cn, cratio, cbudget), (nn, nratio, nbudget) in zip(out.code_numbers, naive.numbers, strict=True):
        assert cn == nn
        assert cbudget == pytest.approx(nbudget, abs=1e-12)
        if nratio is not None:
            assert cratio == pytest.approx(nratio, abs=1e-12)
    if naive.error is not None:
        assert out.code_error is not None, f"the spec's budget fails ({naive.error}) but the code ran on"
        return
    assert out.code_error is None, f"the code failed ({out.code_error}) where the spec's budget does not"
    logits = out.code_result.logits
    assert logits.shape == (1, naive.logits.shape[0])
    torch.testing.assert_close(logits[0], naive.logits, atol=LOGITS_ATOL, rtol=0)
    code_lengths = [k.shape[2] for k, _ in out.code_result.presents]
    assert code_lengths == [k.shape[1] for k, _ in naive.kv]
    for (ck, cv), (nk, nv) in zip(out.code_result.presents, naive.kv):
        torch.testing.assert_close(ck[0], nk, atol=KV_ATOL, rtol=0)
        torch.testing.assert_close(cv[0], nv, atol=KV_ATOL, rtol=0)
    # KV length of layer i = L minus every removal at a slot before layer i's attention
    for i, k_len in enumerate(code_lengths):
        removed = sum(
            r for (layer, where, _, r) in naive.steps if layer < i or (layer == i and where == "before_attention")
        )
        assert k_len == out.length - removed
    # parity contract: the static decoder on the realized schedule gives the same outputs
    torch.testing.assert_close(out.static_result.logits[0], naive.logits, atol=LOGITS_ATOL, rtol=0)
    assert [k.shape[2] for k, _ in out.static_result.presents] == code_lengths


def test_threshold_is_inclusive():
    """``sim >= similarity`` (not ``>``): with 1-D positive rows every chain similarity is exactly 1.0."""
    from ffexport.fusion.reducers import VisualSpan

    p, frames = 2, 3
    n = p * frames
    visual = torch.arange(1, n + 1, dtype=torch.float32).unsqueeze(1)
    span = VisualSpan(torch.tensor(0), n, torch.arange(n) % p, p, n // p)
    reducer = DynamicReducer(FusionConfig(similarity=1.0, cost=0.3), 28)  # budget 0.7 > ratio 4/6
    reduction = reducer.step(0, "before_attention", visual, span, None)
    step = reducer.realized[0]
    assert (step.branch, step.stage.remove, step.ratio) == ("threshold", n - p, pytest.approx((n - p) / n))
    assert reduction.kept.tolist() == [0, 1]
    assert reduction.values.flatten().tolist() == [3.0, 4.0]  # (1 + 3 + 5) / 3, (2 + 4 + 6) / 3


def _paths(out: Outcome) -> set[str]:
    steps = list(zip(out.naive.steps, out.naive.branches))
    paths = set()
    merges = [(s, b) for s, b in steps if s[2] == "merge"]
    if sum(1 for s, b in merges if b == "threshold" and s[3] > 0) >= 2:
        paths.add("several threshold merges")
    if any(b == "threshold" and s[3] > 0 and s[0] >= 1 for s, b in merges):
        paths.add("threshold merge at a later layer (cascade)")
    if merges and merges[0][1] == "top-k" and merges[0][0][3] > 0:
        paths.add("top-k at the first step")
    if any(b == "top-k" and s[3] > 0 for s, b in merges[1:]) and any(b == "threshold" for _, b in merges):
        paths.add("top-k after threshold steps")
    prunes = [s for s, _ in steps if s[2] == "prune" and s[3] > 0]
    if any(s[0] == 0 for s in prunes):
        paths.add("prune at layer 0 (merging ended before attention)")
    if any(s[0] >= 1 for s in prunes):
        paths.add("prune at a later layer")
    if prunes and out.case.text_after < 4:
        paths.add("prune with visual tokens among the last 4 queries")
    if out.naive.error is not None:
        paths.add("budget error (cost too small)")
    if out.naive.error is None and out.case.budget_layers is None and prunes:
        paths.add("prune with the model's depth as budget layers")
    if out.naive.error is None and out.case.budget_layers == 28 and prunes:
        paths.add("prune with 28 budget layers")
    return paths


def test_every_path_was_exercised(outcomes):
    seen: set[str] = set()
    for out in outcomes.values():
        seen |= _paths(out)
    required = {
        "several threshold merges",
        "threshold merge at a later layer (cascade)",
        "top-k at the first step",
        "top-k after threshold steps",
        "prune at layer 0 (merging ended before attention)",
        "prune at a later layer",
        "prune with visual tokens among the last 4 queries",
        "budget error (cost too small)",
        "prune with the model's depth as budget layers",
        "prune with 28 budget layers",
    }
    assert required <= seen, f"not exercised: {sorted(required - seen)}"
    # the similarity thresholds matter: different thresholds realize different schedules
    assert len({tuple(o.naive.steps) for o in outcomes.values()}) >= 20
