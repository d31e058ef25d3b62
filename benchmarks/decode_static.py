"""Per-token decode time: today's dynamic decode loop vs the static decode graph with in-place caches,
vs transformers' own decode, at the same context (issue 14 item 2). Not a test.

    python benchmarks/decode_static.py [--model qwen2vl-2b] [--layers 4] [--contexts 1024,4096]
                                       [--tokens 16] [--rounds 3] [--threads 2]

Random weights of the preset at its real width (2B: hidden 1536, 2 KV heads of 128), ``--layers``
decoder layers, fp32 on CPU. Each context C is a prompt cache of C rows per layer (random values:
decode time does not depend on them). Variants, timed in interleaved rounds of ``--tokens`` greedy
tokens each (median per token over rounds):

- ``ort dynamic``: ``decode.onnx`` as ``ffexport build`` exports it, driven like ``Runtime._decode``
  today (``session.run``; every present copied out to numpy and fed back);
- ``ort static``: ``StaticDecodeStep`` with capacity C + tokens per layer, driven by
  ``runtime.kv_cache.StaticCacheDecoder`` (IO binding, caches updated in place);
- ``ort static, no spin``: the same with ``session.intra_op.allow_spinning`` 0 (ONNX Runtime's
  intra-op threads sleep between kernels instead of spinning: what a shared, loaded machine may prefer);
- ``transformers``: the model's language model + lm_head with a ``DynamicCache`` of C rows (SDPA),
  what a user runs today.

Host bytes copied per token are computed from the shapes: the dynamic loop copies every present
out of ONNX Runtime (2 x layers x kv_heads x (C + k) x head_dim x 4 bytes); the static one writes the
token, its position and the lengths and reads the logits.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="qwen2vl-2b")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--contexts", default="1024,4096")
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    warnings.simplefilter("ignore")
    import onnx
    import onnxruntime as ort
    import torch

    from ffexport.export.capture import CaptureOnnx, GraphSpec
    from ffexport.export.graphs import DecodeStep, StaticDecodeStep, present_names
    from ffexport.export.weights import SharedWeights
    from ffexport.fusion.decoder import ReducedDecoder
    from ffexport.models import LoadModel
    from ffexport.runtime.kv_cache import StaticCacheDecoder

    torch.set_num_threads(args.threads)
    loaded = LoadModel(args.model, random_weights=True, layers=args.layers, vision_layers=1)()
    parts = loaded.adapter.decoder_parts(loaded.model)
    decoder, embed = ReducedDecoder(parts), loaded.model.get_input_embeddings()
    layers, kvh, hd = decoder.num_layers, parts.num_kv_heads, parts.head_dim
    names, outputs = present_names(layers, "past_key_values"), present_names(layers)
    contexts = [int(c) for c in args.contexts.split(",")]
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    work = Path(tempfile.mkdtemp(prefix="decode_bench_"))
    store, capture = SharedWeights(work), CaptureOnnx()
    dims = tuple({2: torch.export.Dim(f"past{i // 2}", min=1, max=65536)} for i in range(2 * layers))
    small = [torch.zeros(1, kvh, 8, hd) for _ in range(2 * layers)]
    model = capture(GraphSpec("decode", DecodeStep(decoder, embed).eval(), (torch.tensor([[5]]), torch.full((3, 1), 9),
                                                                           *small),
                              ["input_ids", "position_ids", *names], ["logits", *outputs],
                              {"input_ids": None, "position_ids": None, "past": dims}))
    store.externalize(model)
    onnx.save(model, str(work / "decode.onnx"))
    del model  # the weights are in the shared file now; keep the peak memory down
    dynamic = ort.InferenceSession(str(work / "decode.onnx"), options, providers=["CPUExecutionProvider"])
    print(f"# {args.model} width, {layers} layers, fp32, {args.threads} threads, {args.tokens} tokens x {args.rounds} "
          f"rounds; load at start: {os.getloadavg()}")
    print("| context | ort dynamic ms/token | ort static ms/token | ort static, no spin | transformers ms/token | "
          "static / dynamic | static / transformers | no spin / transformers | host bytes/token dynamic | static |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    quiet = ort.SessionOptions()
    quiet.intra_op_num_threads = args.threads
    quiet.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    quiet.add_session_config_entry("session.intra_op.allow_spinning", "0")
    g = torch.Generator().manual_seed(0)
    for context in contexts:
        capacity = context + args.tokens + 1
        empty = [torch.zeros(1, kvh, capacity, hd) for _ in range(2 * layers)]
        static_model = capture(GraphSpec("static decode", StaticDecodeStep(decoder, embed).eval(),
                                         (torch.tensor([[5]]), torch.full((3, 1), 9), torch.full((layers,), context),
                                          *empty),
                                         ["input_ids", "position_ids", "cache_lengths", *names], ["logits", *outputs]))
        store.externalize(static_model)
        onnx.save(static_model, str(work / f"decode_static_{context}.onnx"))
        del static_model
        static = ort.InferenceSession(str(work / f"decode_static_{context}.onnx"), options,
                                      providers=["CPUExecutionProvider"])
        cache = [torch.randn(1, kvh, context, hd, generator=g) * 0.5 for _ in range(2 * layers)]
        presents = {f"{i // 2}.{'key' if i % 2 == 0 else 'value'}": c.numpy() for i, c in enumerate(cache)}
        runner = StaticCacheDecoder(static, [capacity] * layers)
        no_spin = StaticCacheDecoder(ort.InferenceSession(str(work / f"decode_static_{context}.onnx"), quiet,
                                                          providers=["CPUExecutionProvider"]), [capacity] * layers)

        def run_dynamic():
            feeds = {f"past_key_values.{k}": v for k, v in presents.items()}
            token = 5
            for k in range(args.tokens):
                out = dynamic.run(None, {"input_ids": np.array([[token]]), "position_ids": np.full((3, 1), context + k),
                                         **feeds})
                token = int(out[0].argmax())
                feeds = {f"past_key_values.{n[len('present.'):]}": v for n, v in zip(outputs, out[1:])}

        def run_static(runner=runner):
            runner.start(presents)
            token = 5
            for k in range(args.tokens):
                token = int(runner.step(token, context + k).argmax())

        def run_no_spin():
            run_static(no_spin)

        def run_transformers():
            from transformers import DynamicCache

            lm = loaded.model.model.language_model
            kv = DynamicCache(config=loaded.model.config.text_config)
            for i in range(layers):
                kv.update(cache[2 * i].clone(), cache[2 * i + 1].clone(), i)
            token = 5
            with torch.no_grad():
                for k in range(args.tokens):
                    pos = torch.full((3, 1, 1), context + k)
                    h = lm(input_ids=torch.tensor([[token]]), position_ids=pos, past_key_values=kv, use_cache=True)
                    token = int(loaded.model.lm_head(h.last_hidden_state[:, -1]).argmax())

        runs = (("dynamic", run_dynamic), ("static", run_static), ("no spin", run_no_spin),
                ("transformers", run_transformers))
        times = {name: [] for name, _ in runs}
        for _, fn in runs:  # warm-up
            fn()
        for r in range(args.rounds):
            for name, fn in runs[r % len(runs):] + runs[:r % len(runs)]:  # the order rotates
                t0 = time.perf_counter()
                fn()
                times[name].append(1000 * (time.perf_counter() - t0) / args.tokens)
        med = {k: statistics.median(v) for k, v in times.items()}
        copied = 2 * layers * kvh * hd * 4 * (context + args.tokens / 2)
        tiny = 8 * (1 + 3 + layers) + 4 * loaded.config.text_config.vocab_size
        print(f"# samples ms/token {times}")
        print(f"| {context} | {med['dynamic']:.1f} | {med['static']:.1f} | {med['no spin']:.1f} | "
              f"{med['transformers']:.1f} | {med['static'] / med['dynamic']:.2f} | "
              f"{med['static'] / med['transformers']:.2f} | {med['no spin'] / med['transformers']:.2f} | "
              f"{copied / 2**20:.1f} MiB + logits | {tiny / 2**10:.0f} KiB |")
    print(f"# load at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
