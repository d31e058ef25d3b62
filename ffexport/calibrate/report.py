"""Fidelity of a static schedule against the dynamic reference, as JSON and as a picture.

``Fidelity(loaded, schedule, fusion)(name, case) -> dict`` runs one video both ways (PyTorch, greedy
decoding) and measures:

* ``token_agreement``: share of the ``max_new_tokens`` greedy tokens the static run produces before it
  first differs from the dynamic run (1.0: the same answer); ``tokens_equal``, ``first_token_equal``;
* ``kl_first_token``: KL(dynamic || static) of the first generated token's distributions (nats, float64);
* ``kept_overlap``: Jaccard overlap of the original visual tokens that survive both runs;
* ``cost_static`` / ``cost_dynamic``: realized costs (:mod:`ffexport.calibrate.cost`) vs the budget;
* ``layer0_redundancy``: share of tokens at or above the similarity threshold at layer 0 (what the
  dynamic reference merges first), and how far it sits from the calibration set's.

:func:`plot_report` draws the calibration (per-step merge ratios across videos, where the static choice
sits; visual tokens per layer) and the per-video fidelity. matplotlib is imported lazily (Agg backend).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ffexport.calibrate.collect import VideoRun
from ffexport.calibrate.cost import layer_shares, schedule_cost
from ffexport.calibrate.policy import Realized, slot_of
from ffexport.calibrate.trace import TracedReference, kept_overlap
from ffexport.case import Case
from ffexport.errors import FusionError
from ffexport.fusion.config import FusionConfig
from ffexport.fusion.schedule import Schedule
from ffexport.models.loading import LoadedModel

log = logging.getLogger(__name__)

FIDELITY_FORMAT = "ffexport.fidelity/1"


def kl_divergence(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    """KL(softmax(p) || softmax(q)) in nats, computed in float64."""
    p = np.asarray(p_logits, dtype=np.float64).reshape(-1)
    q = np.asarray(q_logits, dtype=np.float64).reshape(-1)
    lp = p - p.max() - np.log(np.exp(p - p.max()).sum())
    lq = q - q.max() - np.log(np.exp(q - q.max()).sum())
    return float(max((np.exp(lp) * (lp - lq)).sum(), 0.0))


def distance(value: float | None, calibration: Sequence[float]) -> dict[str, Any] | None:
    """Where ``value`` sits among the calibration set's values: range, percentile, and z (in standard
    deviations, floored at 0.02 so that a tight set does not inflate it); ``outside`` when beyond the range."""
    values = np.asarray([v for v in calibration if v is not None], dtype=np.float64)
    if value is None or values.size == 0:
        return None
    spread = max(float(values.std()), 0.02)
    return {"value": round(float(value), 4), "calibration_min": round(float(values.min()), 4),
            "calibration_median": round(float(np.median(values)), 4), "calibration_max": round(float(values.max()), 4),
            "percentile": round(100.0 * float((values < value).mean() + 0.5 * (values == value).mean()), 1),
            "z": round((float(value) - float(values.mean())) / spread, 2),
            "outside": bool(value < values.min() - 1e-9 or value > values.max() + 1e-9)}


class Fidelity:
    """``Fidelity(loaded, schedule, fusion, max_new_tokens=8)(name, case, calibration=...) -> dict``."""

    def __init__(self, loaded: LoadedModel, schedule: Schedule, fusion: FusionConfig, *, max_new_tokens: int = 8) -> None:
        self.loaded, self.schedule, self.fusion = loaded, schedule, fusion
        self.max_new_tokens = max_new_tokens
        self.static = TracedReference(loaded, schedule=schedule, max_new_tokens=max_new_tokens)
        self.dynamic = TracedReference(loaded, fusion=fusion, max_new_tokens=max_new_tokens)
        self.budget_layers = fusion.layers_for(loaded.num_layers)
        self.static_cost = schedule_cost(schedule, loaded.num_layers, self.budget_layers)

    def __call__(self, name: str, case: Case, calibration: Sequence[float] = ()) -> tuple[dict[str, Any], VideoRun]:
        static, static_trace = self.static.traced(case)
        record: dict[str, Any] = {"video": name, "cost_static": round(self.static_cost, 4),
                                  "static_tokens": static.generated_ids[0].tolist()}
        try:
            dynamic, trace = self.dynamic.traced(case)
        except FusionError as e:
            record["dynamic_error"] = str(e)
            record["note"] = "the dynamic reference cannot run this video with these settings; static figures only"
            return record, VideoRun(name, error=str(e))
        a, b = dynamic.generated_ids[0].tolist(), static.generated_ids[0].tolist()
        prefix = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        redundancy = dynamic.realized[0].ratio if dynamic.realized else None
        cost_dynamic = schedule_cost(dynamic.schedule, self.loaded.num_layers, self.budget_layers)
        record.update({
            "schedule_equal": dynamic.schedule == self.schedule,
            "dynamic_tokens": a,
            "tokens_equal": a == b,
            "first_token_equal": bool(a[:1] == b[:1]),
            "token_agreement": round(prefix / max(len(a), 1), 4),
            "kl_first_token": kl_divergence(dynamic.logits, static.logits),
            "kept_overlap": round(kept_overlap(trace, static_trace), 4),
            "visual_tokens_static": self.schedule.final_visual_tokens,
            "visual_tokens_dynamic": dynamic.schedule.final_visual_tokens,
            "cost_dynamic": round(cost_dynamic, 4),
            "layer0_redundancy": None if redundancy is None else round(redundancy, 4),
            "dynamic_stages": [s.to_json() for s in dynamic.schedule.stages],
        })
        if calibration:
            record["distance_from_calibration"] = distance(redundancy, calibration)
        run = VideoRun(name, dynamic.schedule, cost_dynamic, redundancy, dynamic, trace)
        return record, run


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means over the videos the dynamic reference could run."""
    ok = [r for r in records if "dynamic_error" not in r]
    if not ok:
        return {"videos": len(records), "compared": 0}
    mean = lambda key: round(float(np.mean([r[key] for r in ok])), 4)  # noqa: E731
    return {"videos": len(records), "compared": len(ok), "tokens_equal": sum(r["tokens_equal"] for r in ok),
            "first_token_equal": sum(r["first_token_equal"] for r in ok), "token_agreement": mean("token_agreement"),
            "kl_first_token_mean": round(float(np.mean([r["kl_first_token"] for r in ok])), 5),
            "kl_first_token_max": round(float(np.max([r["kl_first_token"] for r in ok])), 5),
            "kept_overlap": mean("kept_overlap"), "cost_dynamic_mean": mean("cost_dynamic")}


# ---------------------------------------------------------------------------------------------- picture
def save_figure(fig, path: str | Path, *, dpi: int) -> Path:
    """Write a matplotlib figure as PNG atomically (a partial file never takes the final name), close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(path)
    return path


def _slot_label(slot: int) -> str:
    return "L0 pre" if slot == 0 else f"L{slot - 1}"


def plot_report(path: str | Path, *, schedule: Schedule, calibration: Sequence[VideoRun], held_out: Sequence[VideoRun],
                records: Sequence[dict[str, Any]], num_layers: int, title: str, requested_cost: float,
                budget_layers: int) -> Path:
    """Three panels: per-step share removed (calibration videos as dots, the static choice as a bar);
    visual tokens per layer (each video a line, the static schedule bold); fidelity per held-out video."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = schedule.visual_tokens
    cal = [r for r in calibration if r.schedule is not None]
    static = Realized.of(schedule)
    slots = max([len(Realized.of(r.schedule).merges) + 1 for r in cal] + [static.end + 1])
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2), gridspec_kw={"width_ratios": [1.1, 1.1, 1.3]})
    fig.suptitle(title, fontsize=12)

    # (a) per-step removal across calibration videos
    ax = axes[0]
    rng = np.random.default_rng(0)
    for r in cal:
        shares = _step_shares(r.schedule, slots)
        xs = np.arange(slots) + rng.uniform(-0.15, 0.15, size=slots)
        for (x, (share, op)) in zip(xs, shares):
            if op is not None:
                ax.scatter(x, share, s=22, color="#4c72b0" if op == "merge" else "#dd8452", alpha=0.55,
                           edgecolors="none")
    for x, (share, op) in enumerate(_step_shares(schedule, slots)):
        if op is not None:
            ax.hlines(share, x - 0.32, x + 0.32, color="black", linewidth=3)
    ax.scatter([], [], color="#4c72b0", label="merge (calibration video)")
    ax.scatter([], [], color="#dd8452", label="prune (calibration video)")
    ax.plot([], [], color="black", linewidth=3, label="static schedule")
    ax.set_xticks(range(slots), [_slot_label(s) for s in range(slots)])
    ax.set_xlabel("FrameFusion step (layer; 'pre' = before attention)")
    ax.set_ylabel(f"share of the {n} visual tokens removed")
    ax.set_ylim(-0.02, 1.0)
    ax.set_title("what each step removes")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)

    # (b) tokens each layer sees
    ax = axes[1]
    layers = np.arange(num_layers)
    for r in cal:
        ax.plot(layers, layer_shares(r.schedule, num_layers), color="#4c72b0", alpha=0.35, linewidth=1)
    for r in held_out:
        if r.schedule is not None:
            ax.plot(layers, layer_shares(r.schedule, num_layers), color="#55a868", alpha=0.6, linewidth=1,
                    linestyle="--")
    ax.plot(layers, layer_shares(schedule, num_layers), color="black", linewidth=3,
            label=f"static (cost {schedule_cost(schedule, num_layers, budget_layers):.3f})")
    ax.plot([], [], color="#4c72b0", label="dynamic, calibration videos")
    ax.plot([], [], color="#55a868", linestyle="--", label="dynamic, held-out videos")
    ax.axhline(requested_cost, color="#c44e52", linestyle=":", label=f"budget: cost {requested_cost}")
    ax.set_xticks(layers if num_layers <= 32 else layers[::4])
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("share of visual tokens at the layer's attention")
    ax.set_ylim(0, 1.05)
    ax.set_title("visual tokens per layer")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)

    # (c) fidelity per held-out video
    ax = axes[2]
    ok = [r for r in records if "dynamic_error" not in r]
    names = [r["video"].replace("synthetic:", "") for r in ok]
    y = np.arange(len(ok))
    ax.barh(y - 0.2, [r["kept_overlap"] for r in ok], height=0.38, color="#4c72b0", label="kept-token overlap")
    ax.barh(y + 0.2, [r["token_agreement"] for r in ok], height=0.38, color="#55a868", label="greedy-token agreement")
    for i, r in enumerate(ok):
        far = r.get("distance_from_calibration") or {}
        mark = "  outside the calibration range" if far.get("outside") else ""
        ax.text(1.02, i, f"KL {r['kl_first_token']:.2g}{mark}", va="center", fontsize=7,
                color="#c44e52" if mark else "black")
    ax.set_yticks(y, names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.75)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_xlabel("static vs dynamic (1 = identical); KL: first generated token, nats")
    ax.set_title("fidelity on held-out videos")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def _step_shares(schedule: Schedule, slots: int) -> list[tuple[float, str | None]]:
    """Per slot: the share of the bucket's tokens the step removes and its op (None: no step)."""
    out: list[tuple[float, str | None]] = [(0.0, None)] * slots
    for stage in schedule.stages:
        slot = slot_of(stage)
        if slot < slots:
            out[slot] = (stage.remove / schedule.visual_tokens, stage.op)
    return out


def bucket_fidelity(loaded: LoadedModel, schedule: Schedule, fusion: FusionConfig, cases: Sequence[Case],
                    names: Sequence[str], path: str | Path, *, max_new_tokens: int = 4) -> dict[str, Any]:
    """``ffexport build --fidelity``: static vs dynamic on the build's parity videos, written to ``path``;
    returns the manifest's summary (file, static cost, means)."""
    from ffexport.io import save_json

    fidelity = Fidelity(loaded, schedule, fusion, max_new_tokens=max_new_tokens)
    records = [fidelity(name, case)[0] for name, case in zip(names, cases)]
    summary = summarize(records)
    path = Path(path)
    save_json({"format": FIDELITY_FORMAT, "model": loaded.name, "bucket": path.parent.name,
               "fusion": {"cost": fusion.cost, "similarity": fusion.similarity,
                          "ratio_lower_bound": fusion.ratio_lower_bound,
                          "budget_layers": fusion.layers_for(loaded.num_layers)},
               "schedule": schedule.to_json(),
               "cost": {"budget": fusion.cost, "static": round(fidelity.static_cost, 5)},
               "summary": summary, "videos": records}, path, overwrite=True)
    return {"file": f"{path.parent.name}/{path.name}", "cost_static": round(fidelity.static_cost, 5), **summary}
