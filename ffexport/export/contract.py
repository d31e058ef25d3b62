"""The parity contract, proven by the build's gate on every parity video, and the independent oracle.

What a bucket's gate proves here, for each parity video ``v`` (besides the per-graph checks of
:mod:`ffexport.export.parity` and the static end-to-end run, which test the graphs against the code
they were captured from):

1. **The contract** (``contract``): the dynamic reference runs ``v`` and realizes a schedule ``S_v``
   (the policy schedule, realized for that video). The static prefill graph with ``S_v`` (the
   deployed graph when ``S_v`` is the deployed schedule, otherwise one exported for this check and
   not kept) runs the whole ONNX Runtime pipeline (embed, vision, prefill, decode): its prefill
   logits must equal the dynamic reference's within :data:`CONTRACT_FP32` (fp32 builds; other
   precisions: the build's tolerance) and its greedy tokens must be the same. A failure makes the
   bucket not usable. A build whose schedule comes from the default policy must also deploy exactly
   ``S_v`` of the calibration clip.
2. **The oracle** (``oracle``): :mod:`ffexport.oracle` (FrameFusion written from the spec only, no
   ``ffexport.fusion``) runs the same prefill input; its realized steps must equal ``S_v`` and the
   graph's logits and every layer's cache must equal its outputs within :data:`CONTRACT_FP32`. This
   catches a bug in ``ffexport/fusion`` that the graph and the reference share. It runs where it is
   affordable and the build is fp32; every video says what was and was not compared and why.
3. **Fidelity** (``fidelity``, measured, not a gate): where the deployed schedule is not ``S_v`` (a
   calibrated or given schedule), the deployed static pipeline against the dynamic reference in
   PyTorch: greedy-token agreement, first-token KL, kept-token overlap.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ffexport.case import Case
from ffexport.errors import CaptureError, FusionError
from ffexport.export.parity import OrtRunner, Tolerance, compare
from ffexport.fusion.config import FusionConfig
from ffexport.fusion.layout import FrameLayout
from ffexport.fusion.schedule import Schedule
from ffexport.models.loading import LoadedModel
from ffexport.reference import Reference

log = logging.getLogger(__name__)

#: static graph (schedule realized on the video) vs the dynamic reference and vs the oracle, fp32:
#: what the contract promises (measured on the tiny model: 1e-6 .. 3e-6)
CONTRACT_FP32 = Tolerance(atol=1e-5)

#: ``schedule_kind`` values: what the deployed schedule is, hence what the gate can say about it
POLICY = "policy"  # the schedule the dynamic reference realizes on the calibration clip: proven there
CALIBRATED = "calibrated"  # chosen from many videos (shipped, or --schedule with a calibration record)
GIVEN = "given"  # --schedule without a calibration record
KIND_MEANING = {
    POLICY: "the dynamic reference's schedule on the calibration clip: the deployed graph is proven equal to "
            "the dynamic reference on that clip",
    CALIBRATED: "a calibrated static schedule: the deployed graph is measured against the dynamic reference "
                "(fidelity), not proven equal to it",
    GIVEN: "a given static schedule: the deployed graph is measured against the dynamic reference (fidelity), "
           "not proven equal to it, except on a video whose realized schedule it is",
}


def schedule_kind(origin: dict[str, Any] | None) -> str:
    kind = (origin or {}).get("kind")
    if kind == "policy":
        return POLICY
    if kind == "shipped" or (origin or {}).get("calibration"):
        return CALIBRATED
    return GIVEN


@dataclass(frozen=True)
class ParityVideo:
    """One parity video: its name, the case, and the prefill inputs (PyTorch vision features placed)."""

    name: str
    case: Case
    embeds: torch.Tensor  # [1, L, D]
    positions: torch.Tensor  # [3, L]
    start: torch.Tensor  # [] int64
    deepstack: torch.Tensor | None = None  # [k, N, D] Qwen3-VL's DeepStack levels (None: none)

    def feeds(self) -> dict[str, np.ndarray]:
        """The prefill graph's inputs."""
        feeds = {"inputs_embeds": self.embeds.numpy(), "position_ids": self.positions.numpy(),
                 "video_start": self.start.numpy()}
        if self.deepstack is not None:
            from ffexport.export.graphs import DEEPSTACK_INPUT

            feeds[DEEPSTACK_INPUT] = self.deepstack.numpy()
        return feeds


class ScheduleContract:
    """``ScheduleContract(loaded, fusion=..., ...)(deployed, kind, videos) -> dict`` (``passed`` in it).

    ``export_prefill(schedule, directory) -> Path`` captures the bucket's prefill graph with another
    schedule into ``directory`` (the build supplies it: same capture path as the deployed graph);
    ``out``, ``vision_file``, ``prefill_file`` name the deployed graphs (embed and decode are shared)."""

    def __init__(self, loaded: LoadedModel, *, fusion: FusionConfig, runner: OrtRunner, out: Path, vision_file: str,
                 prefill_file: str, export_prefill: Callable[[Schedule, Path], Path], tolerance: Tolerance,
                 precision: str, tokens: int, visual_tokens: int, patches_per_frame: int,
                 layout: FrameLayout | None = None) -> None:
        self.loaded, self.fusion, self.runner, self.out = loaded, fusion, runner, Path(out)
        self.vision_file, self.prefill_file, self.export_prefill = vision_file, prefill_file, export_prefill
        self.tolerance = CONTRACT_FP32 if precision == "fp32" else tolerance
        self.precision, self.tokens = precision, tokens
        self.visual_tokens, self.patches_per_frame = visual_tokens, patches_per_frame
        #: the video's frame blocks, given to the oracle (None or one block: the contiguous span)
        self.blocks = None if layout is None or layout.is_contiguous else layout.to_json()
        self.budget_layers = fusion.layers_for(loaded.num_layers)

    def __call__(self, deployed: Schedule, kind: str, videos: Sequence[ParityVideo]) -> dict[str, Any]:
        t0 = time.perf_counter()
        oracle = self._oracle()
        graphs: dict[Schedule, Path] = {deployed: self.out / self.prefill_file}
        scratch = Path(tempfile.mkdtemp(prefix="ffexport-contract-"))
        records, exported, oracle_seconds = [], 0, 0.0
        try:
            for i, video in enumerate(videos):
                record: dict[str, Any] = {"video": video.name}
                records.append(record)
                try:
                    dynamic = Reference(self.loaded, fusion=self.fusion, max_new_tokens=self.tokens)(video.case)
                except FusionError as e:
                    record.update({"compared": False, "passed": None, "dynamic_error": str(e),
                                   "note": "the dynamic reference cannot run this video with these settings"})
                    continue
                realized = dynamic.schedule
                record["realized"] = [s.to_json() for s in realized.stages]
                record["deployed_equals_realized"] = realized == deployed
                if realized not in graphs:
                    try:
                        graphs[realized] = self.export_prefill(realized, scratch / f"contract{len(graphs)}")
                    except CaptureError as e:  # the realized schedule cannot be exported: nothing proven here
                        record.update({"compared": True, "passed": False, "error": str(e),
                                       "note": "the static graph of the realized schedule could not be captured"})
                        continue
                    exported += 1
                prefill = graphs[realized]
                record["graph"] = "deployed" if realized == deployed else "exported for this check (not kept)"
                record.update(self._contract(video, prefill, dynamic))
                if oracle is not None:
                    t1 = time.perf_counter()
                    record["oracle"] = self._oracle_check(oracle, video, prefill, realized)
                    oracle_seconds += time.perf_counter() - t1
                if realized != deployed:
                    record["fidelity"] = self._fidelity(deployed, video)
                if i == 0 and kind == POLICY and realized != deployed:
                    record["passed"] = False
                    record["note"] = ("the default policy's schedule is not what the dynamic reference realizes on "
                                      "the calibration clip")
        finally:
            for graph in list(graphs.values())[1:]:
                self.runner.forget(graph)
            shutil.rmtree(scratch, ignore_errors=True)
        return self._summary(deployed, kind, records, oracle, exported, time.perf_counter() - t0, oracle_seconds)

    # ---------------------------------------------------------------- 1. static graph (S_v) == dynamic
    def _contract(self, video: ParityVideo, prefill: Path, dynamic) -> dict[str, Any]:
        from ffexport.export.build import run_graphs

        logits, tokens = run_graphs(self.runner, self.out, video.case, self.vision_file, str(prefill),
                                    self.loaded.config, self.loaded.adapter, self.tokens)
        want = dynamic.generated_ids[0].tolist()
        diff = compare("logits", logits, dynamic.logits, self.tolerance)
        return {"compared": True, "logits": diff.__dict__, "tokens_equal": tokens == want, "graph_tokens": tokens,
                "dynamic_tokens": want, "passed": bool(diff.passed and tokens == want)}

    # ---------------------------------------------------------------- 2. the oracle
    def _oracle(self):
        """The oracle for this model, or None with the reason kept in ``self.oracle_note``."""
        from ffexport.oracle.runner import OracleRun

        self.oracle_note = ""
        dtype = next(self.loaded.model.parameters()).dtype
        if dtype != torch.float32:
            self.oracle_note = f"not run: the oracle computes in float32 and this build is {self.precision}"
            return None
        rotary = self.loaded.model.model.language_model.rotary_emb
        # 1D RoPE (no mrope_section on the model): the rotary layout the family declares, as data
        section = None if hasattr(rotary, "mrope_section") else \
            self.loaded.adapter.decoder_parts(self.loaded.model).mrope_section
        try:
            return OracleRun(self.loaded.model, cost=self.fusion.cost, similarity=self.fusion.similarity,
                             ratio_lower_bound=self.fusion.ratio_lower_bound, budget_layers=self.budget_layers,
                             mrope_section=section)
        except AttributeError as e:  # a family whose modules the oracle does not know
            self.oracle_note = f"not run: the oracle does not support {self.loaded.name}'s modules ({e})"
            return None

    def _oracle_check(self, oracle, video: ParityVideo, prefill: Path, realized: Schedule) -> dict[str, Any]:
        with torch.no_grad():
            outcome = oracle(video.embeds[0].float(), video.positions, int(video.start), self.visual_tokens,
                             self.patches_per_frame, blocks=self.blocks,
                             deepstack=video.deepstack)
        if not outcome.ran:
            return {"ran": False, "compared": False, "passed": None, "work": outcome.work, "note": outcome.note}
        result = outcome.result
        want = [(s.layer, s.where, s.op, s.remove) for s in realized.stages]
        record: dict[str, Any] = {"ran": True, "seconds": round(outcome.seconds, 3), "work": outcome.work,
                                  "steps": [list(s) for s in result.steps]}
        if outcome.ambiguous:
            upto = outcome.first_ambiguous + 1
            same = result.steps[:upto] == want[:upto]
            record.update({"compared": False, "passed": None if same else False, "schedule_equal_upto_tie": same,
                           "ambiguous": [what for _, what in outcome.ambiguous],
                           "note": "a decision sat on a tie the spec leaves open (see ffexport/oracle/runner.py): "
                                   "steps compared up to it; logits and caches not compared"})
            return record
        if result.error is not None:
            record.update({"compared": True, "passed": False, "error": result.error,
                           "note": "the spec's budget fails where the dynamic reference ran on"})
            return record
        got = self.runner.run(prefill, video.feeds())
        logits = compare("logits", got["logits"][0], result.logits.numpy(), self.tolerance)
        caches = []
        for i, (k, v) in enumerate(result.kv):
            for name, value in ((f"present.{i}.key", k), (f"present.{i}.value", v)):
                caches.append(compare(name, got[name][0], value.numpy(), self.tolerance))
        worst = max(caches, key=lambda c: (not c.passed, c.max_abs))
        schedule_equal = result.steps == want
        record.update({"compared": True, "schedule_equal": schedule_equal, "logits": logits.__dict__,
                       "caches": {"worst": worst.__dict__, "passed": all(c.passed for c in caches)},
                       "passed": bool(schedule_equal and logits.passed and all(c.passed for c in caches))})
        return record

    # ---------------------------------------------------------------- 3. fidelity (measured)
    def _fidelity(self, deployed: Schedule, video: ParityVideo) -> dict[str, Any]:
        from ffexport.calibrate.report import Fidelity

        record, _ = Fidelity(self.loaded, deployed, self.fusion, max_new_tokens=self.tokens)(video.name, video.case)
        keys = ("tokens_equal", "token_agreement", "kl_first_token", "kept_overlap", "visual_tokens_static",
                "visual_tokens_dynamic", "dynamic_error")
        return {k: record[k] for k in keys if k in record}

    # ---------------------------------------------------------------- record
    def _summary(self, deployed, kind, records, oracle, exported, seconds, oracle_seconds) -> dict[str, Any]:
        compared = [r for r in records if r.get("compared")]
        contract_ok = bool(compared) and all(r["passed"] for r in compared)
        oracles = [r["oracle"] for r in records if "oracle" in r]
        oracle_compared = [o for o in oracles if o["compared"]]
        oracle_failed = [o for o in oracles if o["passed"] is False]
        logits_diffs = [r["logits"]["max_abs"] for r in compared if "logits" in r]
        oracle_diffs = [o["logits"]["max_abs"] for o in oracle_compared]
        differs = [r for r in records if "fidelity" in r]
        fidelity = None
        if differs:
            f = [r["fidelity"] for r in differs
                 if "dynamic_error" not in r["fidelity"] and r["fidelity"].get("measured", True)]
            fidelity = {"what": "the deployed static schedule vs the dynamic reference (PyTorch), on the parity "
                                "videos whose realized schedule differs from it: measured, not a gate",
                        "videos": len(differs), "measured": len(f),
                        "tokens_equal": sum(bool(x["tokens_equal"]) for x in f),
                        "token_agreement_mean": _mean(x["token_agreement"] for x in f),
                        "kl_first_token_max": max((x["kl_first_token"] for x in f), default=None),
                        "kept_overlap_mean": _mean(x["kept_overlap"] for x in f)}
        not_run = [o for o in oracles if not o["ran"]]
        return {
            "schedule_kind": kind,
            "schedule_kind_meaning": KIND_MEANING[kind],
            "proven": ("on every parity video the dynamic reference could run: the static graph with the schedule "
                       "the dynamic reference realizes on that video, run through embed -> vision -> prefill -> "
                       f"decode in ONNX Runtime, equals the dynamic reference (prefill logits max |diff| <= "
                       f"{self.tolerance.atol}, rtol {self.tolerance.rtol}; {self.tokens} greedy tokens equal)"),
            "tolerance": {"atol": self.tolerance.atol, "rtol": self.tolerance.rtol},
            "videos": records,
            "compared": len(compared),
            "passed": bool(contract_ok and not oracle_failed),
            "contract_passed": contract_ok,
            "deployed_equals_realized": [r["video"] for r in records if r.get("deployed_equals_realized")],
            "logits_max_abs": max(logits_diffs, default=None),
            "graphs_exported": exported,
            "seconds": round(seconds, 2),
            "oracle": {
                "what": ("ffexport.oracle (FrameFusion from the spec only) on each video's prefill input: its steps "
                         "== the realized schedule, the graph's logits and every layer's cache == its outputs"),
                "compared": len(oracle_compared), "videos": len(records),
                "ambiguous": sum(1 for o in oracles if o.get("ambiguous")), "not_run": len(not_run) + (
                    len(records) if oracle is None else 0),
                "note": self.oracle_note or (not_run[0]["note"] if not_run else ""),
                "passed": not oracle_failed, "logits_max_abs": max(oracle_diffs, default=None),
                "seconds": round(oracle_seconds, 2),
            },
            "fidelity": fidelity,
        }


def _mean(values) -> float | None:
    values = list(values)
    return round(float(np.mean(values)), 4) if values else None
