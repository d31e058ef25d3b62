"""Race ffexport's reduced prefill graph (ONNX Runtime) against the authors' own FrameFusion code
(thu-nics/FrameFusion, PyTorch, transformers 4.51.3, SDPA) at the same width, depth, tokens and
realized schedule, on the same machine (issue 14, "ahead of the research code").

    python benchmarks/authors_race.py --authors-repo PATH --authors-python PATH/bin/python \\
        [--layers 8] [--bucket 32x448x448] [--threads 2] [--rounds 5] [--warmup-rounds 1] [--inner 2] \\
        [--workdir DIR] [--json OUT.json] [--profile]

``--authors-repo`` is a local clone of the authors' repository (never vendored here) and
``--authors-python`` the interpreter of a second virtual environment holding what it pins
(torch, transformers==4.51.3, accelerate, einops, matplotlib). Never run in CI.

Model: Qwen2-VL-2B width (hidden 1536, 12 heads, 2 KV heads, MLP 8960), ``--layers`` decoder
layers, random weights (``qwen2vl-2b --random-weights``, seed 0), 1 vision block, fp32. Inputs: the
bucket's calibration clip through that vision block and ffexport's synthetic text (the same
``inputs_embeds`` and M-RoPE positions go to every variant; the vision encoder is not timed).

Variants, each timed in its own fresh process, the processes alternated (the order rotates every
round; a whole first round is a warm-up that only fills the page cache):

- ``authors framefusion``: ``framefusion.interface.apply_framefusion(model, cost, similarity,
  ratio)`` on transformers 4.51.3's ``Qwen2VLForConditionalGeneration`` (SDPA), then the language
  model's forward over the embeddings, as the authors' patched ``forward`` calls it after it has
  run the vision tower and ``FrameFusion.prepare`` (replicated here with the same ``patch_type``),
  and ``lm_head`` on the last position only (the authors' forward projects every position; keeping
  one favours them);
- ``ffexport reduced``: the static prefill graph ``ffexport bench --runtime onnxruntime`` captures
  (fused attention, ``com.microsoft.GroupQueryAttention``) in an ONNX Runtime session;
- ``transformers sdpa full``: the same 4.51.3 model without FrameFusion (the common yardstick).

``--low-precision`` adds two variants, each compared with its fp32 side for accuracy (last-position
logits: max |diff|, argmax, top-5 overlap; random weights, so a measure of the arithmetic, not of
answers):

- ``ffexport reduced int8``: the same reduced graph with its weight MatMuls quantized as ``ffexport
  build --precision int8`` does (``ffexport.export.quantize``: ONNX Runtime's own
  ``onnxruntime.quantization.quantize_dynamic``; int8 weights, one scale per output
  channel; activations quantized per run: ``DynamicQuantizeMatMul``/``MatMulInteger``, which MLAS runs
  on AMX/VNNI). Attention, norms, softmax and FrameFusion's steps stay fp32;
- ``authors framefusion bf16``: the authors' code with the model in bfloat16 (PyTorch runs bf16 GEMMs
  and SDPA on AMX), the fair low-precision opponent.

Same schedule: ffexport's dynamic reference realizes its schedule on the inputs with the authors'
parameters (cost, similarity lower bound, ratio lower bound, their 28-layer budget); each process
reports the KV length every layer's attention saw, and the race stops unless the two FrameFusion
sides agree on every layer. The last position's logits of the two sides are compared as well.
Same threads: ``torch.set_num_threads`` / ``intra_op_num_threads`` and OMP/MKL variables.

The last line: ``ffexport reduced / authors framefusion prefill: X.XXx (target <= 0.70x)``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

AUTHORS, REDUCED, FULL = "authors framefusion", "ffexport reduced", "transformers sdpa full"
#: ``--low-precision``: int8 weight GEMMs on ffexport's side, bf16 on the authors' (both use this CPU's AMX units)
REDUCED_INT8, AUTHORS_BF16 = "ffexport reduced int8", "authors framefusion bf16"
VARIANTS = (AUTHORS, REDUCED, FULL)
LOW_PRECISION = (REDUCED_INT8, AUTHORS_BF16)
#: where each variant's worker saves its last-position logits (in --workdir)
LOGITS = {AUTHORS: "authors_framefusion", REDUCED: "ffexport_reduced", FULL: "transformers_sdpa_full",
          REDUCED_INT8: "ffexport_reduced_int8", AUTHORS_BF16: "authors_framefusion_bf16"}
TARGET = 0.70
#: what the authors' code hard-codes as the depth of its cost budget (FrameFusion._compute_pruning_ratio)
AUTHORS_BUDGET_LAYERS = 28
TEXT_TOKEN = -1  # the authors' patch type of a text token


# ====================================================================== driver (ffexport's venv)
def prepare(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Build the model, the inputs, the realized schedule and the reduced graph; write what the
    workers read into ``workdir`` (inputs.npz, authors_weights.pt, meta.json, reduced.prefill.onnx)."""
    import gc

    import numpy as np
    import torch

    from ffexport.bench.ort_runtime import ExportPrefillGraphs
    from ffexport.bench.prefill import bench_case, prepare_inputs
    from ffexport.bench.torch_runtime import realized_schedule
    from ffexport.export.buckets import parse_bucket
    from ffexport.fusion.config import FusionConfig
    from ffexport.fusion.decoder import ReducedDecoder
    from ffexport.models import LoadModel

    torch.set_num_threads(args.threads)
    loaded = LoadModel("qwen2vl-2b", random_weights=True, layers=args.layers, vision_layers=1)()
    vision = loaded.config.vision_config
    bucket = parse_bucket(args.bucket, patch_size=vision.patch_size, temporal_patch_size=vision.temporal_patch_size,
                          merge_size=vision.spatial_merge_size, video_pixels=loaded.video_pixels)
    case, source = bench_case(loaded, bucket)
    inputs = prepare_inputs(loaded, case, "cpu")
    fusion = FusionConfig(cost=args.cost, similarity=args.similarity, ratio_lower_bound=args.ratio_lower_bound,
                          budget_layers=AUTHORS_BUDGET_LAYERS)
    decoder = ReducedDecoder(loaded.adapter.decoder_parts(loaded.model))
    schedule = realized_schedule(decoder, inputs, fusion)
    length = int(inputs.embeds.shape[1])
    np.savez(workdir / "inputs.npz", inputs_embeds=inputs.embeds.numpy(), position_ids=inputs.positions.numpy(),
             video_start=inputs.start.numpy())
    _save_authors_weights(loaded, workdir / "authors_weights.pt")
    export = ExportPrefillGraphs(loaded.adapter.decoder_parts(loaded.model), workdir, max_text=args.max_text)
    graph, _ = export("reduced", schedule, (inputs.embeds, inputs.positions, inputs.start))
    graph_int8 = quantize_int8(graph, workdir / "reduced.int8.onnx", decoder.parts) if args.low_precision else None
    meta = {
        "config": _authors_config(loaded), "layers": loaded.num_layers, "bucket": bucket.name,
        "visual_tokens": inputs.visual_tokens, "patches_per_frame": inputs.patches_per_frame,
        "video_start": int(inputs.start), "length": length, "text_tokens": length - inputs.visual_tokens,
        "inputs": source, "model_source": loaded.source, "graph": graph.name, "schedule": schedule.to_json(),
        "graph_int8": graph_int8.name if graph_int8 else None,
        "fusion": {"cost": args.cost, "similarity_lower_bound": args.similarity,
                   "ratio_lower_bound": args.ratio_lower_bound, "budget_layers": AUTHORS_BUDGET_LAYERS},
    }
    (workdir / "meta.json").write_text(json.dumps(meta, indent=1))
    del loaded, decoder, export, inputs, case
    gc.collect()
    return meta


def quantize_int8(graph: Path, out: Path, parts) -> Path:
    """The graph as ``ffexport build --precision int8`` quantizes it (``ffexport.export.quantize``):
    the MatMuls over the decoder's projections and lm_head (``parts``' weights, found by content) in int8
    per output channel by ONNX Runtime's dynamic quantizer; MatMuls of two activations (attention's
    importance) and any other constant stay fp32."""
    from ffexport.export.quantize import QuantizeInt8, decoder_weight_keys

    QuantizeInt8(decoder_weight_keys(parts))(graph, out)
    return out


def _save_authors_weights(loaded, path: Path) -> None:
    """The language model's weights under transformers 4.51.3's names (``model.layers.N...``,
    ``model.norm``, ``model.embed_tokens``, ``lm_head``); the vision tower is not needed."""
    import torch

    language = loaded.model.model.language_model
    state = {f"model.{k}": v for k, v in language.state_dict().items()}
    state["lm_head.weight"] = loaded.model.lm_head.weight.detach()
    torch.save(state, path)


def _authors_config(loaded) -> dict[str, Any]:
    """A transformers 4.51.3 ``Qwen2VLConfig`` (flat text fields) with the same dimensions."""
    text, cfg, vision = loaded.config.text_config, loaded.config, loaded.config.vision_config
    rope = dict(getattr(text, "rope_parameters", None) or text.rope_scaling)
    return {
        "architectures": ["Qwen2VLForConditionalGeneration"], "hidden_size": text.hidden_size, "intermediate_size": text.intermediate_size,
        "num_hidden_layers": text.num_hidden_layers, "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads, "rms_norm_eps": text.rms_norm_eps,
        "rope_theta": rope["rope_theta"], "rope_scaling": {"type": "mrope", "mrope_section": rope["mrope_section"]},
        "vocab_size": text.vocab_size, "max_position_embeddings": text.max_position_embeddings,
        # Qwen2-VL-2B-Instruct's config.json (4.51.3's default window, 4096, would make its SDPA path build
        # an explicit mask beyond 4096 tokens, which the authors' merge cannot slice)
        "sliding_window": 32768, "use_sliding_window": False, "max_window_layers": 28,
        "hidden_act": text.hidden_act, "tie_word_embeddings": bool(getattr(cfg, "tie_word_embeddings", True)),
        "video_token_id": cfg.video_token_id, "image_token_id": cfg.image_token_id,
        "vision_start_token_id": cfg.vision_start_token_id, "vision_end_token_id": cfg.vision_end_token_id,
        "vision_config": {"depth": 1, "embed_dim": vision.embed_dim, "hidden_size": vision.hidden_size,
                          "num_heads": vision.num_heads, "patch_size": vision.patch_size,
                          "spatial_merge_size": vision.spatial_merge_size,
                          "temporal_patch_size": vision.temporal_patch_size},
    }


def worker_command(args: argparse.Namespace, variant: str, workdir: Path, *, profile: bool = False) -> list[str]:
    common = ["--workdir", str(workdir), "--threads", str(args.threads), "--inner", str(args.inner),
              "--profile-top", str(args.profile_top)]
    if profile:
        common.append("--profile")
    if variant in (REDUCED, REDUCED_INT8):
        return [sys.executable, __file__, "--worker", "onnxruntime", *common,
                *(["--int8"] if variant == REDUCED_INT8 else [])]
    fusion = ["--cost", str(args.cost), "--similarity", str(args.similarity),
              "--ratio-lower-bound", str(args.ratio_lower_bound)]
    return [args.authors_python, __file__, "--worker", "authors", "--authors-repo", args.authors_repo,
            "--variant", "full" if variant == FULL else "framefusion", *fusion, *common,
            *(["--bf16"] if variant == AUTHORS_BF16 else [])]


def run_worker(args: argparse.Namespace, variant: str, workdir: Path, *, profile: bool = False) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"}
    if variant in (REDUCED, REDUCED_INT8):
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)  # this checkout's ffexport
    proc = subprocess.run(worker_command(args, variant, workdir, profile=profile), capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"error: the {variant} worker failed (exit {proc.returncode})")
    lines = proc.stdout.strip().splitlines()
    for line in lines[:-1]:
        print(f"    [{variant}] {line}")
    return json.loads(lines[-1])


def check_same_schedule(meta: dict[str, Any], results: dict[str, dict[str, Any]], workdir: Path) -> dict[str, Any]:
    """Stop unless both FrameFusion sides' attention saw the same number of tokens in every layer."""
    import numpy as np

    text = meta["text_tokens"]
    kept = {v: [n - text for n in results[v]["kv_lengths"]] for v in (AUTHORS, REDUCED)}
    for v in [v for v in VARIANTS if v in results]:
        print(f"  visual tokens each layer's attention saw, {v}: {[n - text for n in results[v]['kv_lengths']]}")
    if kept[AUTHORS] != kept[REDUCED]:
        raise SystemExit("error: the realized schedules differ (visual tokens per layer above); choose FrameFusion "
                         "parameters for which ffexport's dynamic reference realizes the authors' schedule")
    a, r = (np.load(workdir / f"{LOGITS[v]}.logits.npy").reshape(-1) for v in (AUTHORS, REDUCED))
    full_path = workdir / "transformers_sdpa_full.logits.npy"
    f = np.load(full_path).reshape(-1) if FULL in results and full_path.exists() else None
    check = {"visual_tokens_per_layer": kept[AUTHORS], "max_abs_logit_diff": float(np.abs(a - r).max()),
             "argmax_equal": bool(a.argmax() == r.argmax()), "logit_scale": float(np.abs(a).max()),
             "full_vs_authors_max_abs_logit_diff": None if f is None else float(np.abs(a - f).max())}
    full_note = "not run" if f is None else f"max |diff| {check['full_vs_authors_max_abs_logit_diff']:.3g}"
    print(f"  same schedule on both sides: {kept[AUTHORS]} visual tokens per layer; last-position logits: max |authors "
          f"- ffexport| {check['max_abs_logit_diff']:.3g} (|logits| up to {check['logit_scale']:.3g}), argmax "
          f"{'equal' if check['argmax_equal'] else 'DIFFERENT'}; authors vs full model: {full_note}")
    for low, base in ((REDUCED_INT8, REDUCED), (AUTHORS_BF16, AUTHORS)):
        if low in results:
            check[low] = accuracy(np.load(workdir / f"{LOGITS[low]}.logits.npy").reshape(-1),
                                  np.load(workdir / f"{LOGITS[base]}.logits.npy").reshape(-1))
            check[low]["same_schedule_as_fp32"] = results[low]["kv_lengths"] == results[base]["kv_lengths"]
            c = check[low]
            print(f"  {low} vs {base}: last-position logits max |diff| {c['max_abs_diff']:.3g} ({c['relative']:.2%} of "
                  f"|logits| max), argmax {'equal' if c['argmax_equal'] else 'DIFFERENT'}, top-5 overlap "
                  f"{c['top5_overlap']}/5; schedule {'the same' if c['same_schedule_as_fp32'] else 'DIFFERENT'} "
                  f"({[n - text for n in results[low]['kv_lengths']]} visual tokens per layer)")
    return check


def accuracy(low, base) -> dict[str, Any]:
    """How far a low-precision variant's logits are from its fp32 side's."""
    import numpy as np

    top = lambda x: set(np.argsort(x)[-5:].tolist())  # noqa: E731
    diff = float(np.abs(low - base).max())
    return {"max_abs_diff": diff, "relative": diff / float(np.abs(base).max()),
            "argmax_equal": bool(low.argmax() == base.argmax()), "top5_overlap": len(top(low) & top(base))}


def summarize(samples: list[float]) -> dict[str, float]:
    q = statistics.quantiles(samples, n=4) if len(samples) > 1 else [samples[0]] * 3
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "q1": q[0], "q3": q[2],
            "n": len(samples)}


def race(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir or f"/tmp/ffexport-authors-race-{args.layers}l")
    workdir.mkdir(parents=True, exist_ok=True)
    from ffexport.bench.prefill import _load_average, git_commit, machine_facts

    load_start = _load_average()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"authors race: {started}, load average {load_start}, ffexport commit {git_commit()}, authors' repo "
          f"{_authors_commit(args.authors_repo)}")
    t0 = time.perf_counter()
    meta = _reusable(args, workdir) if args.reuse else None
    meta = meta or _prepare_in_subprocess(args, workdir)
    s = meta["schedule"]
    print(f"prepared in {time.perf_counter() - t0:.0f} s: {meta['layers']} layers, bucket {meta['bucket']}: "
          f"{meta['visual_tokens']} visual + {meta['text_tokens']} text tokens, {meta['patches_per_frame']} per frame; "
          f"ffexport's realized schedule {s['stages']} -> {meta['visual_tokens'] - sum(x['remove'] for x in s['stages'])} "
          f"visual tokens ({meta['fusion']})")
    variants = tuple(v for v in VARIANTS if v != FULL or not args.no_full)
    if args.low_precision:
        if not meta.get("graph_int8"):
            raise SystemExit("error: --low-precision: the prepared workdir has no int8 graph; run without --reuse")
        variants += LOW_PRECISION
    samples: dict[str, list[float]] = {v: [] for v in variants}
    per_process: dict[str, list[list[float]]] = {v: [] for v in variants}
    info: dict[str, dict[str, Any]] = {}
    check = None
    for r in range(args.warmup_rounds + args.rounds):
        warm = r < args.warmup_rounds
        order = list(variants[r % len(variants):] + variants[:r % len(variants)])
        for variant in order:
            out = run_worker(args, variant, workdir)
            info[variant] = out
            label = "warm-up" if warm else f"round {r - args.warmup_rounds + 1}"
            print(f"  {label}: {variant}: prefill {', '.join(f'{x:.3f}' for x in out['samples'])} s "
                  f"(load {out['load_s']:.1f} s, first run {out['first_s']:.3f} s, peak RSS {out['peak_rss_mib']:,.0f} MiB)",
                  flush=True)
            if not warm:
                samples[variant].extend(out["samples"])
                per_process[variant].append(out["samples"])
        if check is None:
            check = check_same_schedule(meta, info, workdir)
    stats = {v: summarize(samples[v]) for v in variants}
    ratio = stats[REDUCED]["median"] / stats[AUTHORS]["median"]
    low = {f"{a} / {b}": stats[a]["median"] / stats[b]["median"]
           for a, b in ((REDUCED_INT8, AUTHORS), (REDUCED_INT8, AUTHORS_BF16), (AUTHORS_BF16, AUTHORS))
           if a in stats and b in stats}
    profiles = {}
    if args.profile:
        for variant in (AUTHORS, REDUCED):
            profiles[variant] = run_worker(args, variant, workdir, profile=True).get("profile")
    load_end = _load_average()
    record = {"format": "ffexport.bench.authors_race/1", "started": started, "load_average_start": load_start,
              "load_average_end": load_end, "machine": machine_facts(), "authors_commit": _authors_commit(args.authors_repo),
              "threads": args.threads, "rounds": args.rounds, "warmup_rounds": args.warmup_rounds, "inner": args.inner,
              **{k: v for k, v in meta.items() if k != "config"}, "same_schedule": check,
              "versions": {v: info[v]["versions"] for v in variants},
              "variants": {v: {"samples_s": samples[v], "per_process_s": per_process[v], **stats[v],
                               "kv_lengths": info[v]["kv_lengths"], "peak_rss_mib": info[v]["peak_rss_mib"]}
                           for v in variants},
              "ratio_reduced_over_authors": ratio,
              "ratio_of_minima": stats[REDUCED]["min"] / stats[AUTHORS]["min"], "low_precision_ratios": low,
              "profiles": profiles}
    render(record)
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1))
    return 0


def _reusable(args: argparse.Namespace, workdir: Path) -> dict[str, Any] | None:
    """``--reuse``: the workdir's prepared files, when they were made with the same settings."""
    path = workdir / "meta.json"
    if not path.exists():
        return None
    meta = json.loads(path.read_text())
    same = (meta["layers"] == args.layers and meta["bucket"] == args.bucket
            and meta["fusion"]["cost"] == args.cost and meta["fusion"]["similarity_lower_bound"] == args.similarity
            and meta["fusion"]["ratio_lower_bound"] == args.ratio_lower_bound
            and (meta.get("graph_int8") is not None or not args.low_precision))
    return meta if same else None


def _prepare_in_subprocess(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """:func:`prepare` in a child process, so that the driver holds no weights during the rounds."""
    cmd = [sys.executable, __file__, "--worker", "prepare", "--workdir", str(workdir), "--layers", str(args.layers),
           "--bucket", args.bucket, "--threads", str(args.threads), "--cost", str(args.cost), "--similarity",
           str(args.similarity), "--ratio-lower-bound", str(args.ratio_lower_bound), "--max-text", str(args.max_text),
           *(["--low-precision"] if args.low_precision else [])]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"error: preparing the race failed (exit {proc.returncode})")
    return json.loads((workdir / "meta.json").read_text())


def _authors_commit(repo: str) -> str | None:
    proc = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True)
    if proc.returncode == 0:
        return proc.stdout.strip()
    marker = Path(repo) / "COMMIT"  # a `git archive` export carries no .git; the one who made it may note it
    return marker.read_text().strip() if marker.exists() else None


def render(record: dict[str, Any]) -> None:
    text = record["text_tokens"]
    print(f"\nauthors race: {record['layers']} layers, 2B width, fp32, {record['visual_tokens']} visual + {text} text "
          f"tokens, {record['threads']} threads, {record['warmup_rounds']} warm-up + {record['rounds']} rounds of fresh "
          f"processes (order rotating), {record['inner']} timed prefills per process after 1 untimed; load average "
          f"{record['load_average_start']} at the start, {record['load_average_end']} at the end")
    header = ["variant", "visual tokens per layer", "prefill median s", "min-max s", "IQR s", "n", "peak RSS MiB",
              "vs authors"]
    a = record["variants"][AUTHORS]["median"]
    rows = []
    for name, v in record["variants"].items():
        kept = [n - text for n in v["kv_lengths"]]
        kept_s = f"{kept[0]} x {len(kept)}" if len(set(kept)) == 1 else ",".join(map(str, kept))
        rows.append([name, kept_s, f"{v['median']:.3f}", f"{v['min']:.3f}-{v['max']:.3f}",
                     f"{v['q1']:.3f}-{v['q3']:.3f}", str(v["n"]), f"{v['peak_rss_mib']:,.0f}", f"{v['median'] / a:.2f}x"])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    for name, prof in record.get("profiles", {}).items():
        if prof:
            print(f"\nprofile, {name} ({prof['method']}; one prefill, {prof['total_ms']:.0f} ms):")
            for row in prof["top"]:
                print(f"  {row['name'][:60]:<60} {row['ms']:>9.1f} ms  {row['share'] * 100:5.1f}%  x{row['calls']}")
    if FULL in record["variants"]:
        full = record["variants"][FULL]["median"]
        print(f"\nauthors framefusion vs transformers sdpa full: {full / a:.2f}x faster; ffexport reduced vs transformers "
              f"sdpa full: {full / record['variants'][REDUCED]['median']:.2f}x faster")
    print(f"fastest sample (least disturbed by other processes): ffexport reduced / authors framefusion "
          f"{record['ratio_of_minima']:.2f}x")
    for name, value in record.get("low_precision_ratios", {}).items():
        print(f"{name} prefill: {value:.2f}x")
    print(f"ffexport reduced / authors framefusion prefill: {record['ratio_reduced_over_authors']:.2f}x "
          f"(target <= {TARGET:.2f}x)")


# ====================================================================== workers
def _peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM; ``ru_maxrss`` would carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _timed(prefill, inner: int) -> tuple[float, list[float], Any]:
    start = time.perf_counter()
    out = prefill()
    first = time.perf_counter() - start
    samples = []
    for _ in range(inner):
        start = time.perf_counter()
        out = prefill()
        samples.append(time.perf_counter() - start)
    return first, samples, out


def _hide_torchvision() -> None:
    """``framefusion/utils.py`` imports torchvision and matplotlib at module level for its frame-saving
    helpers, which the prefill never calls. The torchvision wheel on this machine's index is a CUDA
    build that does not load beside the CPU torch, so (after transformers has decided torchvision is
    absent) an empty module stands in for it, in this process only."""
    import types

    if "torchvision" in sys.modules:
        return
    try:
        import torchvision  # noqa: F401

        return
    except Exception:  # noqa: BLE001 - a broken install raises RuntimeError, not ImportError
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
    package, transforms = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")
    package.transforms = transforms
    sys.modules["torchvision"], sys.modules["torchvision.transforms"] = package, transforms


def authors_worker(args: argparse.Namespace) -> int:
    """In the authors' venv: build 4.51.3's Qwen2-VL, load the weights, optionally apply the authors'
    FrameFusion, time the prefill; print one JSON line."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    import transformers
    from transformers import DynamicCache, Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.modeling_utils import no_init_weights

    workdir = Path(args.workdir)
    meta = json.loads((workdir / "meta.json").read_text())
    start_load = time.perf_counter()
    config = Qwen2VLConfig(**meta["config"])
    with no_init_weights():
        model = Qwen2VLForConditionalGeneration._from_config(config, attn_implementation="sdpa",
                                                             torch_dtype=torch.float32)
    state = torch.load(workdir / "authors_weights.pt", mmap=True, weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if unexpected or any(not k.startswith("visual.") for k in missing):
        raise SystemExit(f"weights do not fit: unexpected {unexpected[:3]}, missing {[k for k in missing if not k.startswith('visual.')][:3]}")
    model.eval()
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    model.to(dtype)
    attention = type(model.model.layers[0].self_attn).__name__
    if attention != "Qwen2VLSdpaAttention":
        raise SystemExit(f"expected SDPA attention, got {attention}")
    data = np.load(workdir / "inputs.npz")
    embeds = torch.from_numpy(data["inputs_embeds"]).to(dtype)
    positions = torch.from_numpy(data["position_ids"])[:, None, :]  # [3, 1, L] as get_rope_index returns
    start, n, p, length = meta["video_start"], meta["visual_tokens"], meta["patches_per_frame"], meta["length"]

    framefusion = None
    if args.variant == "framefusion":
        _hide_torchvision()
        sys.path.insert(0, args.authors_repo)
        from framefusion.interface import apply_framefusion

        apply_framefusion(model, cost=args.cost, similarity_lower_bound=args.similarity,
                          ratio_lower_bound=args.ratio_lower_bound)
        framefusion = model.framefusion
    load_s = time.perf_counter() - start_load

    def prefill():
        with torch.no_grad():
            if framefusion is not None:  # what the authors' patched Qwen2VLForConditionalGeneration.forward does
                video = torch.tensor(start), torch.tensor(start + n - 1)
                patch_type = [TEXT_TOKEN] * start + list(range(p)) * (n // p) + [TEXT_TOKEN] * (length - start - n)
                framefusion.prepare(torch.tensor([patch_type]), p, video[0], video[1], n, length)
            cache = DynamicCache()
            # a fresh tensor per call, as the authors' forward makes one (masked_scatter): their layer-0
            # merge averages into its input in place (index_add_), which would change the next call's input
            out = model.model(input_ids=None, position_ids=positions, attention_mask=None, past_key_values=cache,
                              inputs_embeds=embeds.clone(), use_cache=True, return_dict=True)
            logits = model.lm_head(out.last_hidden_state[:, -1:, :])
        return logits, out.past_key_values

    profile = None
    if args.profile:
        prefill()
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            start_t = time.perf_counter()
            prefill()
            total = (time.perf_counter() - start_t) * 1e3
        rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        profile = {"method": "torch.profiler, self CPU time per op", "total_ms": total,
                   "top": [{"name": e.key, "ms": e.self_cpu_time_total / 1e3, "calls": e.count,
                            "share": e.self_cpu_time_total / 1e3 / total} for e in rows[:args.profile_top]]}
        first, samples, (logits, cache) = 0.0, [], prefill()
    else:
        first, samples, (logits, cache) = _timed(prefill, args.inner)
    kv = [int(cache.key_cache[i].shape[-2]) for i in range(len(cache.key_cache))]
    name = LOGITS[FULL if framefusion is None else AUTHORS_BF16 if args.bf16 else AUTHORS]
    np.save(workdir / f"{name}.logits.npy", logits.float().numpy())
    extra = {}
    if framefusion is not None:
        extra["framefusion_state"] = {"sparsity_list": [float(x) for x in framefusion.sparsity_list],
                                      "finish_merging": bool(framefusion.finish_merging),
                                      "finish_pruning": bool(framefusion.finish_pruning)}
    print(json.dumps({"load_s": load_s, "first_s": first, "samples": samples, "kv_lengths": kv,
                      "peak_rss_mib": _peak_rss_mib(), "profile": profile, **extra,
                      "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                                   "attention": attention}}))
    return 0


def onnxruntime_worker(args: argparse.Namespace) -> int:
    """In ffexport's venv (torch-free): the reduced prefill graph in an ONNX Runtime session."""
    import numpy as np
    import onnxruntime as ort

    from ffexport.bench.probe import session_options

    workdir = Path(args.workdir)
    meta = json.loads((workdir / "meta.json").read_text())
    with np.load(workdir / "inputs.npz") as data:
        feeds = {k: data[k] for k in data.files}
    start_load = time.perf_counter()
    options = session_options(args.threads, profile_prefix=str(workdir / "ort_profile") if args.profile else None)
    graph = workdir / meta["graph_int8" if args.int8 else "graph"]
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - start_load

    def prefill():
        return session.run(None, feeds)

    profile = None
    if args.profile:
        prefill()
        start_t = time.perf_counter()
        outs = prefill()
        total = (time.perf_counter() - start_t) * 1e3
        profile = _ort_profile(Path(session.end_profiling()), total, args.profile_top)
        first, samples = 0.0, []
    else:
        first, samples, outs = _timed(prefill, args.inner)
    layers = meta["layers"]
    kv = [int(outs[1 + 2 * i].shape[2]) for i in range(layers)]
    np.save(workdir / f"{LOGITS[REDUCED_INT8 if args.int8 else REDUCED]}.logits.npy", outs[0])
    print(json.dumps({"load_s": load_s, "first_s": first, "samples": samples, "kv_lengths": kv,
                      "peak_rss_mib": _peak_rss_mib(), "profile": profile,
                      "versions": {"onnxruntime": ort.__version__, "attention": _attention_ops(graph)}}))
    return 0


def _attention_ops(path: Path) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = sorted({f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in model.graph.node
                  if "Attention" in n.op_type})
    return ",".join(ops) or "none"


def _ort_profile(trace: Path, total_ms: float, top: int) -> dict[str, Any]:
    """Kernel time per operator type of the last run in an ONNX Runtime profile."""
    events = json.loads(trace.read_text())
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    last = runs[-1]
    lo, hi = last["ts"], last["ts"] + last["dur"]
    by_op: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and lo <= e["ts"] <= hi:
            op = e.get("args", {}).get("op_name", "?")
            by_op.setdefault(op, []).append(e["dur"] / 1e3)
    trace.unlink(missing_ok=True)
    rows = sorted(by_op.items(), key=lambda kv: sum(kv[1]), reverse=True)
    return {"method": "ONNX Runtime profiler, kernel time per operator type", "total_ms": total_ms,
            "run_ms": last["dur"] / 1e3,
            "top": [{"name": op, "ms": sum(d), "calls": len(d), "share": sum(d) / total_ms} for op, d in rows[:top]]}


# ====================================================================== command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--authors-repo", help="local clone of thu-nics/FrameFusion")
    parser.add_argument("--authors-python", help="python of a venv with the authors' pins (transformers 4.51.3)")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--bucket", default="32x448x448")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup-rounds", type=int, default=1)
    parser.add_argument("--inner", type=int, default=2, help="timed prefills per process, after one untimed")
    parser.add_argument("--cost", type=float, default=0.3)
    parser.add_argument("--similarity", type=float, default=0.6, help="the authors' similarity_lower_bound")
    parser.add_argument("--ratio-lower-bound", type=float, default=0.1)
    parser.add_argument("--max-text", type=int, default=256)
    parser.add_argument("--workdir", help="scratch directory (weights, graph, inputs; several GiB)")
    parser.add_argument("--json", help="write every number here")
    parser.add_argument("--reuse", action="store_true", help="reuse --workdir's prepared files made with the same settings")
    parser.add_argument("--no-full", action="store_true", help="leave out the transformers sdpa full yardstick")
    parser.add_argument("--profile", action="store_true", help="after the rounds, profile one prefill per side")
    parser.add_argument("--profile-top", type=int, default=15)
    parser.add_argument("--low-precision", action="store_true",
                        help="add ffexport's reduced graph with int8 weight GEMMs and the authors' code in bf16")
    parser.add_argument("--int8", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=["prepare", "authors", "onnxruntime"], help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=["framefusion", "full"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "authors":
        return authors_worker(args)
    if args.worker == "onnxruntime":
        return onnxruntime_worker(args)
    if args.worker == "prepare":
        prepare(args, Path(args.workdir))
        return 0
    if not (args.authors_repo and args.authors_python):
        parser.error("--authors-repo and --authors-python are required")
    if not (Path(args.authors_repo) / "framefusion" / "interface.py").exists():
        parser.error(f"--authors-repo {args.authors_repo}: no framefusion/interface.py there")
    args.authors_repo = str(Path(args.authors_repo).resolve())
    return race(args)


if __name__ == "__main__":
    sys.exit(main())
