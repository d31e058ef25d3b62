"""Peak memory of one ONNX Runtime prefill in a fresh process (run by ``ffexport bench``).

``python -m ffexport.bench.probe GRAPH.onnx FEEDS.npz [--threads N] [--device cpu]`` prints one JSON
line: resident bytes after imports, peak while creating the session, resident after it, and the
peak, increase and wall time of one run. Torch-free.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from ffexport.bench.memory import peak_rss_bytes, reset_peak_rss, rss_bytes
from ffexport.errors import RunError


def session_options(threads: int, *, profile_prefix: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


def providers_for(device: str) -> list[str]:
    import onnxruntime as ort

    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RunError("--runtime onnxruntime --device cuda needs onnxruntime-gpu (CUDAExecutionProvider); "
                           "this ONNX Runtime has only " + ", ".join(ort.get_available_providers()))
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ffexport.bench.probe")
    parser.add_argument("graph")
    parser.add_argument("feeds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    import onnxruntime as ort

    with np.load(args.feeds) as data:
        feeds = {k: data[k] for k in data.files}
    base = rss_bytes()
    resettable = reset_peak_rss()
    session = ort.InferenceSession(args.graph, session_options(args.threads), providers=providers_for(args.device))
    load_peak, loaded = peak_rss_bytes(), rss_bytes()
    reset_peak_rss()
    start = time.perf_counter()
    session.run(None, feeds)
    seconds = time.perf_counter() - start
    run_peak = peak_rss_bytes()
    print(json.dumps({"base_bytes": base, "load_peak_bytes": load_peak, "loaded_bytes": loaded,
                      "run_peak_bytes": run_peak, "run_delta_bytes": run_peak - loaded, "run_seconds": seconds,
                      "peak_bytes": max(load_peak, run_peak), "scope": "call" if resettable else "process"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
