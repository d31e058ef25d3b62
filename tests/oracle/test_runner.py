"""``ffexport.oracle.runner``: the oracle as the build's gate runs it (independence, cost limit, ties)."""

from __future__ import annotations

import subprocess
import sys

import torch

from ffexport.oracle.runner import OracleRun, oracle_work


def _inputs(frames: list[torch.Tensor], text_before: int = 3, text_after: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    p = frames[0].shape[0]
    hidden = frames[0].shape[1]
    text = torch.randn(text_before + text_after, hidden, generator=g)
    embeds = torch.cat([text[:text_before], *frames, text[text_before:]])
    length = embeds.shape[0]
    pos = torch.arange(length).expand(3, length).contiguous()
    return embeds, pos, text_before, p * len(frames), p


def test_the_oracle_imports_nothing_of_the_code_it_checks():
    code = "import sys, ffexport.oracle.runner; print(sorted(m for m in sys.modules if m.startswith('ffexport.fusion')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_above_the_cost_limit_it_does_not_run_and_says_so(tiny):
    frames = [torch.randn(4, 64, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    embeds, pos, s, n, p = _inputs(frames)
    limit = oracle_work(tiny.num_layers, embeds.shape[0]) - 1
    outcome = OracleRun(tiny.model, cost=0.3, similarity=0.6, ratio_lower_bound=0.1, budget_layers=4,
                        max_work=limit)(embeds, pos, s, n, p)
    assert not outcome.ran and outcome.result is None and "not run" in outcome.note and "limit" in outcome.note
    outcome = OracleRun(tiny.model, cost=0.3, similarity=0.6, ratio_lower_bound=0.1, budget_layers=4,
                        max_work=limit + 1)(embeds, pos, s, n, p)
    assert outcome.ran and outcome.result.logits is not None


def test_a_top_k_cut_through_identical_frames_is_reported_as_a_tie(tiny):
    """Identical frames: every chained similarity is exactly equal, so a top-k merge's cut is a tie the
    spec does not order; distinct frames (random, far apart) give no tie."""
    g = torch.Generator().manual_seed(1)
    base = torch.randn(4, 64, generator=g)
    same = [base.clone() for _ in range(4)]  # 16 tokens, 12 chained similarities of 1.0
    embeds, pos, s, n, p = _inputs(same)
    run = OracleRun(tiny.model, cost=0.3, similarity=0.6, ratio_lower_bound=0.1, budget_layers=28)
    outcome = run(embeds, pos, s, n, p)
    assert outcome.result.branches[0] == "top-k" and 0 < outcome.result.steps[0][3] < 12
    assert outcome.first_ambiguous == 0 and "cut between similarities" in outcome.ambiguous[0][1]
    distinct = [torch.randn(4, 64, generator=g) * 3 for _ in range(4)]
    outcome = run(*_inputs(distinct))
    assert outcome.ran and outcome.ambiguous == []
