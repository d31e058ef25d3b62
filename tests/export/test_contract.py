"""The build's gate against a bug in the FrameFusion code that the graphs and the reference share.

The per-graph checks and the static end-to-end run compare each graph with the PyTorch code it was
captured from, and the contract compares the static graph with the dynamic reference: both sides run
``ffexport/fusion/ops.py``, so a bug there passes all of them. Only the spec-derived oracle
(``ffexport.oracle``) sees it; this test breaks ``ops.merge`` and checks that the bucket fails for
that reason alone.
"""

from __future__ import annotations

import json

import pytest

from ffexport.cli import main
from ffexport.errors import ValidationError

BUCKET = "8x112x112"


@pytest.fixture(scope="module")
def broken_build(tmp_path_factory):
    from ffexport.fusion import ops

    original = ops.merge

    def merge_with_a_bug(*args, **kwargs):  # averages off by 1% (a wrong normalization)
        kept, values = original(*args, **kwargs)
        return kept, values * 1.01

    patch = pytest.MonkeyPatch()
    patch.setattr(ops, "merge", merge_with_a_bug)
    try:
        out = tmp_path_factory.mktemp("broken") / "b"
        code = main(["-q", "build", "--bucket", BUCKET, "--out", str(out), "--no-shipped-schedule"])
    finally:
        patch.undo()
    return code, out


def test_a_bug_in_the_fusion_ops_fails_the_gate_through_the_oracle(broken_build):
    code, out = broken_build
    assert code == ValidationError.exit_code
    report = json.loads((out / BUCKET / "parity.json").read_text())
    # what compares the graphs with their own code passes: graph == PyTorch, pipeline == static reference
    assert all(g["passed"] for g in report["graphs"]) and report["shared_graphs_passed"]
    assert all(e["tokens_equal"] and e["logits"]["passed"] for e in report["end_to_end"])
    contract = report["contract"]
    assert contract["contract_passed"]  # static == dynamic: both run the same broken merge
    assert contract["schedule_kind"] == "policy" and contract["videos"][0]["graph"] == "deployed"
    # the oracle does not share the bug: the bucket fails for that alone
    assert contract["oracle"]["passed"] is False and not contract["passed"] and not report["passed"]
    failed = [v["oracle"] for v in contract["videos"] if v["oracle"]["passed"] is False]
    assert failed and all(not o["logits"]["passed"] for o in failed if o["compared"])
    (bucket,) = json.loads((out / "manifest.json").read_text())["buckets"]
    assert bucket["usable"] is False and bucket["parity"]["contract"]["oracle"]["passed"] is False
