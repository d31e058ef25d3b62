"""``ffexport bench --race`` on the tiny model: four variants, the two headline lines, fair work
(the full ONNX graph generates transformers' tokens, the reduced graph the dynamic reference's).
Timings are never asserted."""

from __future__ import annotations

import json
import re
import statistics

import pytest

from ffexport.cli import main

PREFILL = re.compile(r"^prefill speedup vs transformers sdpa: \d+\.\d\dx \(ideal \d+\.\d\dx\)$")
END_TO_END = re.compile(r"^end-to-end speedup vs transformers sdpa: \d+\.\d\dx \(ideal \d+\.\d\dx\)$")


@pytest.mark.slow
def test_race_runs_four_variants_and_ends_with_the_headlines(tmp_path, capsys):
    out = tmp_path / "race.json"
    assert main(["bench", "--race", "--bucket", "8x112x112", "--repeats", "1", "--warmup", "0", "--new-tokens", "5",
                 "--threads", "1", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert PREFILL.match(lines[-2]), lines[-2]
    assert END_TO_END.match(lines[-1]), lines[-1]
    data = json.loads(out.read_text())
    variants = {v["name"]: v for v in data["variants"]}
    assert list(variants) == ["transformers sdpa", "onnxruntime full", "ffexport reduced", "dynamic reference"]
    assert all(len(v["tokens"]) == 5 and len(v["prefill_s"]) == 1 for v in variants.values())
    # same work: the full graph reproduces transformers, the reduced graph the dynamic reference (parity contract)
    assert variants["onnxruntime full"]["tokens"] == variants["transformers sdpa"]["tokens"]
    assert variants["ffexport reduced"]["tokens"] == variants["dynamic reference"]["tokens"]
    assert variants["ffexport reduced"]["visual_tokens_left"] == variants["dynamic reference"]["visual_tokens_left"] < 64
    assert variants["transformers sdpa"]["visual_tokens_left"] == 64
    # the ONNX Runtime variants decode with static in-place graphs sized to their own caches + the new tokens
    capacities, prompt = data["decode"]["cache_capacities"], data["visual_tokens"] + data["text_tokens"]
    assert "in place" in data["decode"]["graph"]
    assert capacities["onnxruntime full"] == [prompt + 5] * data["num_layers"]
    reduced = capacities["ffexport reduced"]
    assert reduced[-1] == prompt - 64 + variants["ffexport reduced"]["visual_tokens_left"] + 5
    assert all(r <= f for r, f in zip(reduced, capacities["onnxruntime full"]))
    # the headline numbers are the table's medians
    a, c = variants["transformers sdpa"], variants["ffexport reduced"]
    assert data["prefill_speedup"] == pytest.approx(a["prefill_median_s"] / c["prefill_median_s"])
    assert data["end_to_end_speedup"] == pytest.approx(a["end_to_end_s"] / c["end_to_end_s"])
    assert f"(ideal {data['ideal_prefill_speedup']:.2f}x)" in lines[-2]
    assert data["ideal_prefill_speedup"] == pytest.approx(data["flops"]["full"] / data["flops"]["reduced"])
    # end to end: vision (the same for both) + prefill + 4 decode steps over each variant's caches
    e2e = data["end_to_end_flops"]
    assert e2e["full"]["vision"] == e2e["reduced"]["vision"] > 0
    assert (e2e["full"]["prefill"], e2e["reduced"]["prefill"]) == (data["flops"]["full"], data["flops"]["reduced"])
    assert e2e["full"]["decode"] > e2e["reduced"]["decode"] > 0  # shorter caches, cheaper attention
    total = {k: sum(v.values()) for k, v in e2e.items()}
    assert data["ideal_end_to_end_speedup"] == pytest.approx(total["full"] / total["reduced"])
    assert 1 < data["ideal_end_to_end_speedup"] < data["ideal_prefill_speedup"]
    assert f"(ideal {data['ideal_end_to_end_speedup']:.2f}x)" in lines[-1]
    # the ideal by stage: transformers' own vision, prefill and decode times, each scaled by its FLOP ratio
    stage = data["vision_seconds"] + a["prefill_median_s"] * e2e["reduced"]["prefill"] / e2e["full"]["prefill"] \
        + statistics.median(a["decode_s"]) * e2e["reduced"]["decode"] / e2e["full"]["decode"]
    assert data["ideal_end_to_end_by_stage"] == pytest.approx(a["end_to_end_s"] / stage)
    assert 1 < data["ideal_end_to_end_by_stage"] < data["ideal_prefill_speedup"]
    assert lines[-3].startswith(f"end-to-end ideal by stage: {data['ideal_end_to_end_by_stage']:.2f}x (")
    for v in variants.values():  # time to first token = vision + prefill; end to end adds the decode
        assert v["ttft_s"] == pytest.approx(data["vision_seconds"] + v["prefill_median_s"])
        assert v["memory"]["peak_bytes"] > 0


def test_race_is_cpu_only(error_line):
    assert main(["bench", "--race", "--device", "cuda"]) != 0
    line = error_line()
    assert "--device cuda" in line
