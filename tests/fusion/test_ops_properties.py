"""Property tests of FrameFusion's tensor ops against loop oracles written from the spec.

The oracles below use Python lists and explicit loops, following ``shared/FRAMEFUSION.md`` only:

* patch order: visual tokens sorted by patch id, then by sequence position (stable);
* chain similarity: cosine with the previous token of the same patch in that order, -2 for a
  chain's first token;
* merge: every maximal run of flagged tokens in a patch chain is averaged, with equal weights,
  together with the unflagged token just before it; the run is removed, the survivor keeps its
  sequence position;
* prune: keep the K highest importances, in their original order;
* budget: the formula of the spec, checked against hand-computed numbers;
* last-query importance: causal softmax of the last 4 queries over the keys, mean over heads and
  those queries, looped over heads and queries.

Tolerance: merged values and similarities are compared with ``rtol = 1e-6`` and
``atol = 1e-6 * max|input|`` (the oracle works in float64 on the float32 inputs; the absolute part
covers cancellation when averaging rows of mixed sign). Importances: ``rtol = atol = 1e-6``.

When scores tie (duplicated rows, equal importances) the op may return any of several correct
answers; the tests then check that the answer is ONE valid answer (the selected score multiset
equals the oracle's top-K multiset), not a particular one.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import assume, HealthCheck, given, settings
from hypothesis import strategies as st

from ffexport.errors import FusionError
from ffexport.fusion import ops
from ffexport.fusion.budget import budget

RTOL = 1e-6
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- loop oracles
def oracle_patch_order(pids: list[int]) -> list[int]:
    order = []
    for p in sorted(set(pids)):
        for i in range(len(pids)):
            if pids[i] == p:
                order.append(i)
    return order


def oracle_cosine(a: list[float], b: list[float]) -> float:
    dot = 0.0
    na = 0.0
    nb = 0.0
    for x, y in zip(a, b):
        dot += x * y
        na += x * x
        nb += y * y
    return dot / (math.sqrt(na) * math.sqrt(nb))


def oracle_chain_similarity(rows: list[list[float]], pids: list[int]) -> list[float]:
    """Similarities in patch order."""
    order = oracle_patch_order(pids)
    out = []
    for a in range(len(order)):
        i = order[a]
        if a > 0 and pids[order[a - 1]] == pids[i]:
            out.append(oracle_cosine(rows[order[a - 1]], rows[i]))
        else:
            out.append(-2.0)
    return out


def oracle_merge(rows: list[list[float]], pids: list[int], flagged: set[int]):
    """``flagged``: span positions to merge away. Returns (kept positions ascending, values)."""
    order = oracle_patch_order(pids)
    groups: dict[int, list[int]] = {}
    head = None
    previous = None
    for i in order:
        if i in flagged:
            assert head is not None and pids[previous] == pids[i], "a chain's first token was flagged"
            groups[head].append(i)
        else:
            head = i
            groups[head] = [i]
        previous = i
    kept = sorted(groups)
    dim = len(rows[0]) if rows else 0
    values = []
    for h in kept:
        members = groups[h]
        values.append([sum(rows[j][d] for j in members) / len(members) for d in range(dim)])
    return kept, values


def oracle_prune(importance: list[float], k: int) -> list[int]:
    ranked = sorted(range(len(importance)), key=lambda i: (-importance[i], i))
    return sorted(ranked[:k])


def oracle_last_query_importance(q, k, num_queries=4):
    """q, k: nested lists [H][L][d]. Returns [L]."""
    heads, length, d = len(q), len(q[0]), len(q[0][0])
    rows = min(num_queries, length)
    total = [0.0] * length
    for h in range(heads):
        for r in range(rows):
            qpos = length - rows + r
            logits = []
            for j in range(qpos + 1):
                logits.append(sum(q[h][qpos][e] * k[h][j][e] for e in range(d)) / math.sqrt(d))
            top = max(logits)
            ex = [math.exp(x - top) for x in logits]
            z = sum(ex)
            for j in range(qpos + 1):
                total[j] += ex[j] / z
    return [t / (heads * rows) for t in total]


def oracle_budget(sparsity, cost, num_layers):
    s, total = 1.0, 0.0
    for r in sparsity:
        s *= 1 - r
        total += s
    remain = num_layers * cost - total
    if remain < 0:
        raise ValueError("cost too small")
    if len(sparsity) >= num_layers:
        # the spec's formula divides by zero (or by a negative number) here; ffexport raises instead
        raise ValueError("merging ran through every budget layer")
    q = remain / ((num_layers - len(sparsity)) * s)
    return 0.0 if q > 1 else 1 - q


# --------------------------------------------------------------------------- helpers
def chain_firsts(pids: list[int]) -> set[int]:
    order = oracle_patch_order(pids)
    return {order[a] for a in range(len(order)) if a == 0 or pids[order[a - 1]] != pids[order[a]]}


def flags_in_patch_order(flagged: set[int], pids: list[int]) -> torch.Tensor:
    order = oracle_patch_order(pids)
    return torch.tensor([1.0 if i in flagged else 0.0 for i in order], dtype=torch.float32)


def random_rows(rng: random.Random, n: int, dim: int) -> list[list[float]]:
    """Rows with a norm well away from 0 (cosine has no epsilon)."""
    rows = []
    for _ in range(n):
        while True:
            row = [rng.uniform(-1.0, 1.0) for _ in range(dim)]
            if sum(x * x for x in row) > 1e-2:
                break
        rows.append(row)
    return rows


def to_f32(rows):
    return torch.tensor(rows, dtype=torch.float32)


def assert_values(actual: torch.Tensor, expected: list[list[float]], inputs: torch.Tensor):
    exp = torch.tensor(expected, dtype=torch.float64).reshape(actual.shape)
    scale = float(inputs.abs().max()) if inputs.numel() else 1.0
    torch.testing.assert_close(actual.to(torch.float64), exp, rtol=RTOL, atol=RTOL * max(scale, 1e-30))


@st.composite
def visual_spans(draw, *, arbitrary_ids: bool | None = None, identical_frames: bool = False):
    """(rows as float32-rounded lists, patch ids, rng) for a visual span.

    Either a fresh span (N = T*P, patch id = position mod P) or arbitrary patch ids, as after earlier
    reductions (any ids in [0, P), any multiplicities)."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    p = draw(st.integers(1, 4))
    dim = draw(st.integers(1, 5))
    if arbitrary_ids is None:
        arbitrary_ids = draw(st.booleans())
    if arbitrary_ids:
        n = draw(st.integers(1, 16))
        pids = draw(st.lists(st.integers(0, p - 1), min_size=n, max_size=n))
    else:
        t = draw(st.integers(1, 5))
        n = t * p
        pids = [i % p for i in range(n)]
    if identical_frames:
        base = random_rows(rng, p, dim)
        rows = [list(base[pid]) for pid in pids]
    else:
        rows = random_rows(rng, n, dim)
        # duplicate some rows so some similarities are exactly (or within rounding of) equal
        for i in range(n):
            if rng.random() < 0.2:
                rows[i] = list(rows[rng.randrange(n)])
    rows = to_f32(rows).tolist()  # the oracle sees exactly the float32 values the op sees
    return rows, pids, rng


# --------------------------------------------------------------------------- patch order, similarity
@SETTINGS
@given(visual_spans())
def test_patch_order_and_chain_similarity(span):
    rows, pids, _ = span
    pid_t = torch.tensor(pids, dtype=torch.int64)
    order = ops.patch_order(pid_t)
    assert order.tolist() == oracle_patch_order(pids)
    sim = ops.chain_similarity(to_f32(rows), pid_t, order)
    assert sim.dtype == torch.float32 and sim.shape == (len(pids),)
    expected = torch.tensor(oracle_chain_similarity(rows, pids), dtype=torch.float64)
    torch.testing.assert_close(sim.to(torch.float64), expected, rtol=RTOL, atol=1e-6)
    # chain heads get exactly -2 and nothing else does
    order_l = order.tolist()
    firsts = chain_firsts(pids)
    for a, i in enumerate(order_l):
        assert (float(sim[a]) == -2.0) == (i in firsts)


# --------------------------------------------------------------------------- merge
@SETTINGS
@given(visual_spans(), st.data())
def test_merge_matches_loop_oracle(span, data):
    rows, pids, rng = span
    n = len(pids)
    firsts = chain_firsts(pids)
    mergeable = [i for i in range(n) if i not in firsts]
    m = data.draw(st.integers(0, len(mergeable)), label="m")  # 0 .. N - (number of chains)
    flagged = set(rng.sample(mergeable, m))
    pid_t = torch.tensor(pids, dtype=torch.int64)
    order = ops.patch_order(pid_t)
    x = to_f32(rows)
    kept, values = ops.merge(x, pid_t, order, flags_in_patch_order(flagged, pids), m)
    exp_kept, exp_values = oracle_merge(rows, pids, flagged)
    assert kept.dtype == torch.int64
    assert kept.tolist() == exp_kept
    assert values.shape == (n - m, len(rows[0]))
    assert_values(values, exp_values, x)


@SETTINGS
@given(visual_spans(arbitrary_ids=False), st.data())
def test_merge_fresh_span_m_up_to_n_minus_p(span, data):
    """Fresh span (N = T*P): M anywhere in 0 .. N - P, including the two ends."""
    rows, pids, rng = span
    n = len(pids)
    p = max(pids) + 1
    mergeable = [i for i in range(n) if i >= p]  # every token after the first frame
    m = data.draw(st.integers(0, len(mergeable)), label="m")
    flagged = set(rng.sample(mergeable, m))
    pid_t = torch.tensor(pids, dtype=torch.int64)
    x = to_f32(rows)
    kept, values = ops.merge(x, pid_t, ops.patch_order(pid_t), flags_in_patch_order(flagged, pids), m)
    exp_kept, exp_values = oracle_merge(rows, pids, flagged)
    assert kept.tolist() == exp_kept
    assert_values(values, exp_values, x)
    if m == n - p:  # everything merged: one token per patch, the first frame's positions
        assert kept.tolist() == list(range(p))


@SETTINGS
@given(visual_spans(identical_frames=True))
def test_merge_runs_spanning_all_frames(span):
    """All frames of a patch identical: similarity 1 everywhere, every run spans every later frame;
    merging all of them leaves the chain head with its (unchanged) value."""
    rows, pids, _ = span
    pid_t = torch.tensor(pids, dtype=torch.int64)
    order = ops.patch_order(pid_t)
    x = to_f32(rows)
    sim = ops.chain_similarity(x, pid_t, order)
    firsts = chain_firsts(pids)
    flagged = set(range(len(pids))) - firsts
    for a, i in enumerate(order.tolist()):
        if i not in firsts:
            assert abs(float(sim[a]) - 1.0) < 1e-5
    kept, values = ops.merge(x, pid_t, order, flags_in_patch_order(flagged, pids), len(flagged))
    exp_kept, exp_values = oracle_merge(rows, pids, flagged)
    assert kept.tolist() == exp_kept == sorted(firsts)
    assert_values(values, exp_values, x)
    assert_values(values, [rows[i] for i in exp_kept], x)


@SETTINGS
@given(visual_spans(), st.data())
def test_top_m_merge_with_ties_is_one_valid_answer(span, data):
    """The static merge (top-M chain similarities, then merge) with duplicated rows (ties): the flagged
    set must be a valid top-M set, and the merge of that set must match the oracle."""
    rows, pids, _ = span
    n = len(pids)
    firsts = chain_firsts(pids)
    m = data.draw(st.integers(0, n - len(firsts)), label="m")
    pid_t = torch.tensor(pids, dtype=torch.int64)
    order = ops.patch_order(pid_t)
    x = to_f32(rows)
    sim = ops.chain_similarity(x, pid_t, order)
    flags = ops.top_flags(sim, m)
    assert int(flags.sum()) == m
    # the top-M multiset, up to near-ties: scores within ops.SIMILARITY_EPS of the cut may trade places
    chosen = sorted(float(s) for s, f in zip(sim, flags) if f == 1)
    best = sorted(float(s) for s in sim)[n - m :]
    assert all(abs(a - b) <= 2 * ops.SIMILARITY_EPS for a, b in zip(chosen, best))
    order_l = order.tolist()
    flagged = {order_l[a] for a in range(n) if flags[a] == 1}
    assert not flagged & firsts
    kept, values = ops.merge(x, pid_t, order, flags, m)
    exp_kept, exp_values = oracle_merge(rows, pids, flagged)
    assert kept.tolist() == exp_kept
    assert_values(values, exp_values, x)


def test_merge_cascade_uses_equal_weights():
    """A second merge averages already-merged tokens with equal weight (no size weighting)."""
    x = torch.tensor([[1.0], [3.0], [5.0], [100.0]])  # P = 1: one chain of four frames
    pid = torch.zeros(4, dtype=torch.int64)
    order = ops.patch_order(pid)
    kept, values = ops.merge(x, pid, order, torch.tensor([0.0, 1.0, 1.0, 0.0]), 2)
    assert kept.tolist() == [0, 3]
    assert values.flatten().tolist() == [3.0, 100.0]
    kept2, values2 = ops.merge(values, pid[:2], ops.patch_order(pid[:2]), torch.tensor([0.0, 1.0]), 1)
    assert kept2.tolist() == [0]
    assert values2.flatten().tolist() == [51.5]  # (3 + 100) / 2, not (1 + 3 + 5 + 100) / 4


def test_merge_run_joins_the_token_just_before_it():
    """Two runs in one chain go to two different heads; a run never crosses into another chain."""
    # P = 2, T = 4: chain of patch 0 = positions 0, 2, 4, 6; patch 1 = 1, 3, 5, 7
    x = torch.arange(8, dtype=torch.float32).unsqueeze(1) * 10
    pid = torch.arange(8) % 2
    order = ops.patch_order(pid)  # [0, 2, 4, 6, 1, 3, 5, 7]
    flags = torch.tensor([0, 1, 0, 1, 0, 0, 1, 1], dtype=torch.float32)  # 2 | 6 | 5, 7
    kept, values = ops.merge(x, pid, order, flags, 4)
    assert kept.tolist() == [0, 1, 3, 4]
    assert values.flatten().tolist() == [10.0, 10.0, 50.0, 50.0]  # (0+20)/2, 10, (30+50+70)/3, (40+60)/2


# --------------------------------------------------------------------------- top_flags, compact_index
@SETTINGS
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=20), st.data())
def test_top_flags_valid_top_set_with_ties(values, data):
    scores = torch.tensor(values, dtype=torch.float32)
    count = data.draw(st.integers(0, len(values)), label="count")
    flags = ops.top_flags(scores, count)
    assert flags.dtype == scores.dtype and flags.shape == scores.shape
    assert set(flags.tolist()) <= {0.0, 1.0} and int(flags.sum()) == count
    chosen = sorted(v for v, f in zip(values, flags.tolist()) if f == 1)
    assert chosen == sorted(values)[len(values) - count :]


@SETTINGS
@given(st.lists(st.booleans(), min_size=1, max_size=30))
def test_compact_index(bits):
    keep = torch.tensor([1.0 if b else 0.0 for b in bits])
    count = sum(bits)
    out = ops.compact_index(keep, count)
    assert out.dtype == torch.int64
    assert out.tolist() == [i for i, b in enumerate(bits) if b]


# --------------------------------------------------------------------------- prune
def _well_separated(values):
    """Importances the selection must tell apart: more than a few ops.IMPORTANCE_EPS apart in log2."""
    ordered = sorted(math.log2(max(v, 2.0**-126)) for v in values)  # selection_key clamps at float32's tiny
    return all(b - a > 4 * ops.IMPORTANCE_EPS for a, b in zip(ordered, ordered[1:]))


@SETTINGS
@given(st.lists(st.floats(0, 10, allow_nan=False, width=32), min_size=1, max_size=24, unique=True), st.data())
def test_prune_distinct_importances(values, data):
    assume(_well_separated(values))
    k = data.draw(st.integers(0, len(values)), label="k")
    kept = ops.prune(torch.tensor(values, dtype=torch.float32), k)
    assert kept.dtype == torch.int64
    assert kept.tolist() == oracle_prune(values, k)


def test_near_ties_are_broken_by_position():
    """Keys within ops.SIMILARITY_EPS of the cut are one tie: the earlier position wins, so the
    choice does not depend on last-bit rounding (static content gives such keys)."""
    base = -1e-6
    near = [base + 3e-10, base, base - 3e-10]
    for order in (near, near[::-1], [near[1], near[0], near[2]]):
        flags = ops.top_flags(torch.tensor(order + [-0.5]), 2)
        assert flags.tolist() == [1.0, 1.0, 0.0, 0.0]
    importance = torch.tensor([1e-4, 1e-4 * (1 + 2**-23), 5e-5, 1e-4 * (1 - 2**-23)])
    assert ops.prune(importance, 2).tolist() == [0, 1]
    assert ops.prune(importance.flip(0), 2).tolist() == [0, 2]


@SETTINGS
@given(visual_spans())
def test_chain_closeness_ranks_like_the_cosine(span):
    rows, pids, _ = span
    pid_t = torch.tensor(pids, dtype=torch.int64)
    order = ops.patch_order(pid_t)
    x = to_f32(rows)
    sim = ops.chain_similarity(x, pid_t, order)
    key = ops.chain_closeness(x, pid_t, order)
    chained = sim > -2
    assert torch.equal(chained, key > -8)
    # key = cos - 1 up to float32 rounding of the cosine
    assert torch.allclose(key[chained], sim[chained] - 1, atol=1e-5)


def test_chain_closeness_resolves_near_duplicates():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(256, generator=g)
    rows = torch.stack([a, a + 1e-4 * torch.randn(256, generator=g), a, a + 2e-4 * torch.randn(256, generator=g)])
    pid = torch.tensor([0, 1, 0, 1])
    order = ops.patch_order(pid)
    key = ops.chain_closeness(rows, pid, order)
    sim = ops.chain_similarity(rows, pid, order)
    # the two 1e-4 / 2e-4 perturbations differ by 4x in 1 - cos: the key sees it with full precision
    gaps = -key[key > -8]
    assert gaps.max() / gaps.min() > 3.5
    assert (1 - sim[sim > -2]).min() < 1e-6  # where the cosine itself is down to a few ulps


def test_nan_scores_rank_last():
    flags = ops.top_flags(torch.tensor([-2.0, 0.5, float("nan"), 0.9]), 2)
    assert flags.tolist() == [0.0, 1.0, 0.0, 1.0]


@SETTINGS
@given(st.lists(st.integers(0, 3), min_size=1, max_size=24), st.data())
def test_prune_tied_importances_is_one_valid_answer(values, data):
    k = data.draw(st.integers(0, len(values)), label="k")
    kept = ops.prune(torch.tensor(values, dtype=torch.float32), k).tolist()
    assert len(kept) == k
    assert all(a < b for a, b in zip(kept, kept[1:]))  # original order, no repeats
    assert all(0 <= i < len(values) for i in kept)
    expected = oracle_prune(values, k)
    assert sorted(values[i] for i in kept) == sorted(values[i] for i in expected)


# --------------------------------------------------------------------------- last-query importance
@SETTINGS
@given(
    st.integers(1, 3),
    st.integers(1, 9),
    st.integers(1, 4),
    st.sampled_from([1, 2, 4, 5]),
    st.integers(0, 2**32 - 1),
)
def test_last_query_importance_matches_loops(heads, length, d, num_queries, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads, length, d, generator=g) * 2
    k = torch.randn(1, heads, length, d, generator=g) * 2
    out = ops.last_query_importance(q, k, num_queries)
    assert out.shape == (length,)
    expected = oracle_last_query_importance(q[0].tolist(), k[0].tolist(), num_queries)
    torch.testing.assert_close(out.to(torch.float64), torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-6)
    # every query's softmax sums to 1, so the mean does too
    assert abs(float(out.sum()) - 1.0) < 1e-5


def test_last_query_importance_default_is_four_queries():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 7, 3, generator=g)
    k = torch.randn(1, 2, 7, 3, generator=g)
    expected = oracle_last_query_importance(q[0].tolist(), k[0].tolist(), 4)
    torch.testing.assert_close(
        ops.last_query_importance(q, k).double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-6
    )


# --------------------------------------------------------------------------- budget
@pytest.mark.parametrize(
    "sparsity, cost, layers, expected",
    [
        ([], 0.3, 28, 0.7),  # 1 - 8.4 / 28
        ([], 0.3, 4, 0.7),  # 1 - 1.2 / 4
        ([0.5], 0.3, 28, 1 - 7.9 / 13.5),  # s = .5, total = .5, remain = 7.9, over 27 * .5
        ([0.5, 0.5], 0.3, 4, 0.1),  # s = .25, total = .75, remain = .45, over 2 * .25 = .9
        ([0.2, 0.25], 0.3, 28, 1 - (8.4 - 0.8 - 0.6) / (26 * 0.6)),  # s = .8, .6
        ([0.0], 0.5, 10, 1 - 4.0 / 9.0),
        ([], 1.0, 4, 0.0),  # quotient exactly 1: 1 - 1
        ([0.9], 0.5, 4, 0.0),  # quotient 1.9 / 0.3 > 1: return 0
    ],
)
def test_budget_hand_computed(sparsity, cost, layers, expected):
    assert budget(sparsity, cost, layers) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert oracle_budget(sparsity, cost, layers) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_budget_cost_too_small():
    # total = 1 + 1 = 2 > 4 * 0.3
    with pytest.raises(FusionError, match="cost is too small"):
        budget([0.0, 0.0], 0.3, 4)
    with pytest.raises(FusionError, match="cost is too small"):
        budget([0.0] * 9, 0.3, 28)  # total = 9 > 28 * 0.3 = 8.4
    # just inside: total = 8 <= 8.4 is allowed (remain 0.4 over 20 layers)
    assert budget([0.0] * 8, 0.3, 28) == pytest.approx(1 - 0.4 / 20)


def test_budget_no_layers_left_is_an_error():
    # not in the spec (its formula divides by zero); ffexport raises FusionError
    with pytest.raises(FusionError, match="all 4 budget layers"):
        budget([0.1, 0.1, 0.1, 0.1], 0.9, 4)


def test_budget_return_zero_is_exact_zero():
    assert budget([0.9], 0.5, 4) == 0
    assert budget([], 1.0, 28) == 0


@SETTINGS
@given(st.lists(st.floats(0.0, 0.69), max_size=5), st.sampled_from([0.1, 0.3, 0.5, 0.9]), st.sampled_from([4, 28]))
def test_budget_matches_formula(sparsity, cost, layers):
    try:
        expected = oracle_budget(sparsity, cost, layers)
    except ValueError:
        with pytest.raises(FusionError):
            budget(sparsity, cost, layers)
        return
    got = budget(sparsity, cost, layers)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert 0.0 <= got <= 1.0


# --------------------------------------------------------------------------- reduced-precision models
# n just past 2**8 / 2**11, where bf16 / fp16 stop holding every integer; importances 2 ** (i / steps - 10)
# with neighbours further apart than the dtype's spacing (bf16: 0.78%, fp16: 0.1%), so all distinct
LOW_PRECISION = [(torch.bfloat16, 300, 50), (torch.float16, 2100, 100)]


# regression: ranks were once counted with a cumsum in the scores' dtype, which bf16 (n > 256) and
# fp16 (n > 2048) cannot hold, so kept positions repeated or went out of order
@pytest.mark.parametrize("dtype, n, steps", LOW_PRECISION, ids=["bf16", "fp16"])
def test_low_precision_scores_select_the_right_positions(dtype, n, steps):
    g = torch.Generator().manual_seed(0)
    # compact_index with 0/1 flags in the model dtype (what top_flags returns for bf16/fp16 scores)
    keep = torch.ones(n, dtype=dtype)
    assert ops.compact_index(keep, n).tolist() == list(range(n))
    # prune of importances in the model dtype (distinct values, so the answer is unique)
    importance = torch.pow(2.0, torch.randperm(n, generator=g).to(torch.float32) / steps - 10).to(dtype)
    values = importance.float().tolist()
    assert len(set(values)) == n
    k = n - 7
    assert ops.prune(importance, k).tolist() == oracle_prune(values, k)
    # merge with flags in the model dtype: P = 2, every other later-frame token merges
    p = 2
    x = torch.randn(n, 3, generator=g).to(dtype)
    pid = torch.arange(n) % p
    pids = pid.tolist()
    firsts = chain_firsts(pids)
    flagged = {i for i in range(n) if i not in firsts and (i // p) % 2 == 1}
    flags = flags_in_patch_order(flagged, pids).to(dtype)
    kept, _ = ops.merge(x, pid, ops.patch_order(pid), flags, len(flagged))
    assert kept.tolist() == oracle_merge([[0.0]] * n, pids, flagged)[0]


def test_merge_on_a_span_thinner_than_its_frames():
    """A span pruned down to fewer tokens than frames still merges (chains are bounded by the rows)."""
    visual = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # two tokens of one patch, identical
    patch_ids = torch.tensor([0, 0])
    order = ops.patch_order(patch_ids, 1)
    flags = ops.top_flags(ops.chain_closeness(visual, patch_ids, order), 1)
    kept, values = ops.merge(visual, patch_ids, order, flags, 1, max_run=5)
    assert kept.tolist() == [0] and torch.equal(values, visual[:1])
