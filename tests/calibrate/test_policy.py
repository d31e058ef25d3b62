"""The calibration policy: cost within 2% of the budget, valid schedules on any calibration set."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ffexport.calibrate.cost import layer_shares, schedule_cost
from ffexport.calibrate.policy import QuantilePolicy, Realized
from ffexport.errors import FusionError
from ffexport.fusion.config import FusionConfig
from ffexport.fusion.schedule import Schedule, Stage

N, P = 512, 64  # a 16x224x224 tiny bucket


def realized(n: int, p: int, merges: list[int], prune: int | None) -> Schedule:
    """A schedule shaped like the dynamic reference's: merges at slots 0.., then a prune."""
    stages = [Stage(0, "before_attention", "merge", merges[0])]
    stages += [Stage(k - 1, "after_attention", "merge", m) for k, m in enumerate(merges) if k]
    if prune is not None:
        stages.append(Stage(len(merges) - 1, "after_attention", "prune", prune))
    return Schedule(n, p, tuple(stages))


def test_shares_and_cost_follow_the_budget_formula():
    s = realized(64, 16, [42, 0], 6)  # what the tiny model realizes on its calibration clip
    assert layer_shares(s, 4) == [22 / 64, 22 / 64, 16 / 64, 16 / 64]
    assert schedule_cost(s, 4, 4) == pytest.approx(76 / 256)
    # a deeper budget than the model: the formula's extra layers see the final share
    assert schedule_cost(s, 4, 28) == pytest.approx((22 + 22 + 16 * 26) / 64 / 28)


def test_realized_view_of_a_schedule():
    r = Realized.of(realized(N, P, [300, 20, 0], 100))
    assert r.merges == (300, 20, 0) and r.end == 3 and r.prune == 100
    top_k = Realized.of(Schedule(N, P, (Stage(0, "before_attention", "merge", 358),)))
    assert top_k.merges == (358,) and top_k.end == 1 and top_k.prune is None


@pytest.mark.parametrize("cost", [0.15, 0.3, 0.5, 0.8])
@pytest.mark.parametrize("layers", [4, 28])
def test_policy_meets_the_budget_within_2_percent(cost, layers):
    schedules = [realized(N, P, [300 - 10 * i, 5 * (i % 3), 0], None) for i in range(9)]
    choice = QuantilePolicy(FusionConfig(cost=cost))(schedules, layers)
    assert abs(choice.cost - cost) / cost <= 0.02, (choice.cost, choice.notes)
    assert choice.schedule.final_visual_tokens >= 1
    choice.schedule.validate(layers)


def test_one_video_gives_back_its_realized_schedule():
    s = realized(64, 16, [42, 0], 6)
    assert QuantilePolicy(FusionConfig())([s], 4).schedule == s


def test_median_merges_and_prune_slot():
    schedules = [realized(N, P, [m, 0], 10) for m in (100, 200, 300, 400, 440)]
    choice = QuantilePolicy(FusionConfig(), quantile=0.5)([*schedules], 28)
    assert choice.schedule.stages[0].remove == 300 and choice.prune_slot == 2
    low = QuantilePolicy(FusionConfig(), quantile=0.0)([*schedules], 28)
    assert low.schedule.stages[0].remove == 100


def test_slideshow_only_and_noise_only_calibration_sets_stay_valid():
    slideshow = [Schedule(N, P, (Stage(0, "before_attention", "merge", N - P),))] * 3  # everything merges
    noise = [realized(N, P, [0], 480)] * 3  # nothing merges
    for schedules in (slideshow, noise):
        choice = QuantilePolicy(FusionConfig())(schedules, 4)
        s = choice.schedule.validate(4)
        assert 1 <= s.final_visual_tokens < N
        assert sum(x.remove for x in s.stages if x.op == "merge") <= N - P  # every patch keeps a token
        assert abs(choice.cost_error) <= 0.02


def test_merges_that_alone_undercut_the_budget_are_reduced():
    schedules = [Schedule(N, P, (Stage(0, "before_attention", "merge", N - P),))]  # 1/8 of the tokens left
    choice = QuantilePolicy(FusionConfig(cost=0.6))(schedules, 4)
    assert abs(choice.cost_error) <= 0.02 and any("reduced" in n for n in choice.notes)


def test_cost_too_small_is_a_fusion_error():
    with pytest.raises(FusionError, match="cost is too small"):
        QuantilePolicy(FusionConfig(cost=0.01))([realized(64, 16, [0], 60)], 4)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 120), min_size=1, max_size=4), st.integers(0, 300)),
                min_size=1, max_size=8),
       st.sampled_from([0.2, 0.3, 0.5]), st.sampled_from([4, 6, 28]), st.floats(0, 1))
def test_any_calibration_set_gives_a_valid_schedule(videos, cost, layers, quantile):
    n, p = 512, 64
    schedules = []
    for merges, prune in videos:
        left = n
        capped = []
        for m in merges[:layers]:
            m = min(m, left - p)
            capped.append(m)
            left -= m
        schedules.append(realized(n, p, capped, min(prune, left - 1) if len(capped) < layers else None))
    try:
        choice = QuantilePolicy(FusionConfig(cost=cost), quantile=quantile)(schedules, layers)
    except FusionError as e:
        assert "cost is too small" in str(e)
        return
    s = choice.schedule.validate(layers)
    assert 1 <= s.final_visual_tokens <= n
    if not any("no prune" in note for note in choice.notes):
        # within rounding of one kept token over the layers after the prune
        assert abs(choice.cost - cost) <= 0.5 / n + 1e-9
