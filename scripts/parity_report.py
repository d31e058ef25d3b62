"""Print the parity table of docs/design.md: static schedule vs dynamic reference, and the full
decoder vs transformers, on the tiny model and synthetic videos.

    python scripts/parity_report.py [--model qwen2vl-tiny] [--max-new-tokens 8]
"""

from __future__ import annotations

import argparse
import platform
from datetime import date

import numpy as np
import torch

from ffexport.errors import FusionError
from ffexport.fusion.config import FusionConfig
from ffexport.models import LoadModel
from ffexport.reference import Reference
from ffexport.video import synthetic_video

VIDEOS = [("moving_object", 8), ("pan", 8), ("scene_cut", 12), ("static", 8), ("noise", 8), ("moving_object", 16)]
SETTINGS = {
    "default (0.3, 0.6, 0.1)": FusionConfig(),
    "default, budget 28": FusionConfig(budget_layers=28),
    "sim 0.9, rlb 0.05": FusionConfig(similarity=0.9, ratio_lower_bound=0.05),
    "sim 0.97, rlb 0.02, budget 28": FusionConfig(similarity=0.97, ratio_lower_bound=0.02, budget_layers=28),
}


def steps(result) -> str:
    return ", ".join(f"L{r.stage.layer}{'b' if r.stage.where[0] == 'b' else 'a'} {r.stage.op} {r.stage.remove}"
                     f"{' (top-k)' if r.branch == 'top-k' else ''}" for r in result.realized)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="qwen2vl-tiny")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    args = parser.parse_args()
    loaded = LoadModel(args.model)()
    print(f"{date.today()} · {platform.processor() or platform.machine()} · torch {torch.__version__} · "
          f"model {loaded.name} ({loaded.source})\n")
    print("| video | frames | setting | steps realized | visual kept | max abs logits diff | greedy tokens equal |")
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    for seed, (kind, frames) in enumerate(VIDEOS):
        case = loaded.case_from_video(synthetic_video(kind, frames=frames, seed=seed), "What moves in this video?")
        for name, fusion in SETTINGS.items():
            try:
                dyn = Reference(loaded, fusion=fusion, max_new_tokens=args.max_new_tokens)(case)
            except FusionError as e:
                print(f"| {kind} | {frames} | {name} | {e} | | | |")
                continue
            st = Reference(loaded, schedule=dyn.schedule, max_new_tokens=args.max_new_tokens)(case)
            diff = float(np.abs(dyn.logits - st.logits).max())
            worst = max(worst, diff)
            same = bool((dyn.generated_ids == st.generated_ids).all())
            kept = f"{dyn.schedule.final_visual_tokens}/{dyn.schedule.visual_tokens}"
            print(f"| {kind} | {frames} | {name} | {steps(dyn)} | {kept} | {diff:.1e} | {same} |")
    print(f"\nworst static-vs-dynamic logits difference: {worst:.2e}")


if __name__ == "__main__":
    main()
