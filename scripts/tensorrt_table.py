"""Generate docs/tensorrt.md's table: every graph ffexport writes, per size, precision and mode, handed to
NVIDIA's own ONNX parser (TensorRT-RTX) and, where asked, built ahead of time for SM89.

    python scripts/tensorrt_table.py --work /tmp/trt-table [--cases tiny-fp32,7b-64-fp16] [--write docs/tensorrt.md]
    python scripts/tensorrt_table.py --render RUN1.json [RUN2.json ...] --write docs/tensorrt.md

Each case makes its graphs with ``ffexport build`` (a full build with weights, or ``--graph-only``: the
structure at real sizes with the weights as graph inputs), then runs ``ffexport check GRAPH [--build-for
SM89]`` once per graph in its own process (peak memory from ``wait4``; one at a time). The raw results go
to ``<work>/tensorrt_table.json``; ``--write`` replaces the table between the markers in docs/tensorrt.md.
Nothing is asserted here: the tests do that (tests/lint/test_check_real_build.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- tensorrt-table:begin -->", "<!-- tensorrt-table:end -->"


@dataclass(frozen=True)
class Case:
    name: str
    size: str  # how the table names the model size
    build_args: tuple[str, ...]
    precision: str
    mode: str  # standard | plugin
    graph_only: bool
    aot_build: bool  # also build an SM89 engine per graph

    @property
    def bucket(self) -> str:
        return self.build_args[self.build_args.index("--bucket") + 1]


def _case(name, size, model_args, bucket, precision, *, mode="standard", graph_only=False, aot_build=True):
    args = (*model_args, "--bucket", bucket, "--precision", precision, "--ops", mode)
    return Case(name, size, args + (("--graph-only",) if graph_only else ()), precision, mode, graph_only, aot_build)


TINY = ("--model", "qwen2vl-tiny")
B2_L2 = ("--model", "qwen2vl-2b", "--random-weights", "--layers", "2", "--vision-layers", "2")
CASES = [
    _case("tiny-fp32", "tiny", TINY, "8x112x112", "fp32"),
    _case("tiny-fp16", "tiny", TINY, "8x112x112", "fp16"),
    _case("tiny-bf16", "tiny", TINY, "8x112x112", "bf16", graph_only=True),
    _case("tiny-fp32-plugin", "tiny", TINY, "8x112x112", "fp32", mode="plugin"),
    # no tokenizer for the 2B preset here: a full build cannot tokenize its parity prompts; --streamed writes the
    # weights (random, per name) and gates a copy with Qwen2-VL's token ids
    _case("2b-l2-16-fp16", "2B width, 2 layers, 2 vision blocks, random weights", B2_L2 + ("--streamed",),
          "16x448x448", "fp16"),
    _case("2b-64-fp16", "2B", ("--model", "qwen2vl-2b"), "64x448x448", "fp16", graph_only=True),
    _case("2b-128-fp16", "2B", ("--model", "qwen2vl-2b"), "128x448x448", "fp16", graph_only=True, aot_build=False),
    _case("7b-64-fp16", "7B", ("--model", "qwen2vl-7b"), "64x448x448", "fp16", graph_only=True),
    _case("7b-64-fp32", "7B", ("--model", "qwen2vl-7b"), "64x448x448", "fp32", graph_only=True),
    _case("7b-64-bf16", "7B", ("--model", "qwen2vl-7b"), "64x448x448", "bf16", graph_only=True),
    _case("7b-128-fp16", "7B", ("--model", "qwen2vl-7b"), "128x448x448", "fp16", graph_only=True),
    _case("7b-64-fp16-plugin", "7B", ("--model", "qwen2vl-7b"), "64x448x448", "fp16", mode="plugin", graph_only=True,
          aot_build=False),
]

LINE = re.compile(r"^(?P<graph>\S+): (?P<rest>.*)$")


def run_measured(command: list[str], timeout: float) -> tuple[int, str, float, float]:
    """(exit status, stdout+stderr, seconds, peak resident MB) of one child process, reaped with ``wait4`` so
    that its own peak memory is known; killed after ``timeout`` seconds."""
    start = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        killed = ""
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > timeout and not killed:
                proc.kill()
                killed = f"\n(killed after {timeout:.0f} s)"
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        return proc.returncode, log.read() + killed, time.perf_counter() - start, usage.ru_maxrss / 1024


def make_graphs(case: Case, work: Path, timeout: float) -> dict:
    out = work / case.name
    shutil.rmtree(out, ignore_errors=True)  # this script's own folder: every run starts from nothing
    command = [sys.executable, "-m", "ffexport", "-q", "build", *case.build_args, "--out", str(out)]
    rc, text, seconds, peak = run_measured(command, timeout)
    return {"command": " ".join(command[2:]), "rc": rc, "seconds": round(seconds, 1), "peak_mb": round(peak),
            "out": str(out), "error": text.strip()[-500:] if rc else ""}


def check_graphs(case: Case, out: Path, timeout: float) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    files = [g["file"] for g in manifest["graphs"].values()] + [
        g["file"] for b in manifest["buckets"] for g in b["graphs"].values()]
    rows = []
    for name in files:
        command = [sys.executable, "-m", "ffexport", "check", str(out / name)]
        if case.aot_build:
            command += ["--build-for", "SM89"]
        rc, text, seconds, peak = run_measured(command, timeout)
        lines = [line for line in text.splitlines() if line.startswith(str(out / name))]
        rows.append({"graph": name, "rc": rc, "line": lines[-1] if lines else text.strip()[-400:],
                     "seconds": round(seconds, 1), "peak_mb": round(peak)})
        print(f"  {rows[-1]['line']}  [{rows[-1]['seconds']} s, {rows[-1]['peak_mb']} MB]", flush=True)
    return rows


def describe(row: dict) -> tuple[str, str, str, str]:
    """(parsed, built, engine bytes, build seconds) for the table."""
    rest = row["line"].split(": ", 1)[1] if ": " in row["line"] else row["line"]
    if rest.startswith("built for"):
        m = re.match(r"built for \S+ \((\d+) bytes, ([\d.]+) s\)", rest)
        return "yes", "yes", f"{int(m.group(1)):,}", m.group(2)
    if rest == "parsed":
        return "yes", "not tried", "", ""
    if rest.startswith("parsed; build for"):
        return "yes", "**no**: " + rest.split("failed: ", 1)[1][:160], "", ""
    if rest.startswith("rejected"):
        return "**no**: " + rest[:200], "", "", ""
    if rest.startswith("not parsed:"):
        return "hand rules (no plugin layers in TensorRT-RTX): " + rest.rsplit("hand rules: ", 1)[1][:120], "", "", ""
    return f"? {rest[:200]}", "", "", ""


def table(results: list[dict]) -> str:
    head = ["| size | bucket | precision | mode | graphs made by | graph | TensorRT-RTX parser | SM89 engine built | "
            "engine bytes | build s | check peak MB |", "|---|---|---|---|---|---|---|---|---:|---:|---:|"]
    rows = []
    for r in results:
        made = ("graph-only" if r["graph_only"] else
                "`--streamed` build (weights written)" if "--streamed" in r["make"]["command"] else "full build")
        if r["make"]["rc"]:
            rows.append(f"| {r['size']} | {r['bucket']} | {r['precision']} | {r['mode']} | {made} | (not made: "
                        f"{r['make']['error'][:120]}) | | | | | |")
            continue
        for g in r["graphs"]:
            parsed, built, nbytes, seconds = describe(g)
            rows.append(f"| {r['size']} | {r['bucket']} | {r['precision']} | {r['mode']} | {made} | `{g['graph']}` | "
                        f"{parsed} | {built} | {nbytes} | {seconds} | {g['peak_mb']} |")
    return "\n".join(head + rows)


def environment() -> dict:
    import tensorrt_rtx

    with open("/proc/meminfo") as f:
        mem = next(line for line in f if line.startswith("MemTotal")).split()[1]
    return {"date": datetime.date.today().isoformat(), "tensorrt_rtx": tensorrt_rtx.__version__,
            "python": platform.python_version(), "cpus": os.cpu_count(), "mem_gib": round(int(mem) / 2**20),
            "load_avg": [round(x, 1) for x in os.getloadavg()],
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                     cwd=ROOT).stdout.strip()}


def write_doc(path: Path, envs: list[dict], body: str) -> None:
    text = path.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    runs = "; ".join(f"{e['date']}, TensorRT-RTX {e['tensorrt_rtx']}, commit `{e['commit']}`, {e['cpus']} CPU cores, "
                     f"{e['mem_gib']} GiB, no GPU, load average at the start {e['load_avg'][0]}" for e in envs)
    header = (f"\nGenerated by `python scripts/tensorrt_table.py --work DIR` and `--render RUN.json ... --write "
              f"docs/tensorrt.md` (raw results: `benchmarks/results/*-tensorrt-rtx/`). Run{'s' if len(envs) > 1 else ''}: "
              f"{runs}. The machine was shared with other work: seconds are noisy.\n\n")
    new = text[:start] + header + body + "\n" + text[end:]
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(new)
    tmp.replace(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="where the builds go")
    parser.add_argument("--render", type=Path, nargs="+", metavar="JSON",
                        help="make no builds: render the table of earlier runs' tensorrt_table.json files")
    parser.add_argument("--cases", default=",".join(c.name for c in CASES), help="comma-separated case names")
    parser.add_argument("--write", type=Path, help="replace the table in this markdown file")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per build or check (default 1800)")
    args = parser.parse_args()
    if args.render:
        runs = [json.loads(p.read_text()) for p in args.render]
        order = {c.name: i for i, c in enumerate(CASES)}
        latest = {r["case"]: r for run in runs for r in run["results"]}  # a later run of a case replaces an earlier
        results = sorted(latest.values(), key=lambda r: order.get(r["case"], len(order)))
        body = table(results)
        print(body)
        if args.write:
            write_doc(args.write, [run["environment"] for run in runs], body)
        return 0
    if args.work is None:
        parser.error("give --work DIR (or --render JSON)")
    wanted = args.cases.split(",")
    unknown = set(wanted) - {c.name for c in CASES}
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; known: {', '.join(c.name for c in CASES)}")
    env = environment()
    args.work.mkdir(parents=True, exist_ok=True)
    results = []
    for case in (c for c in CASES if c.name in wanted):
        print(f"{case.name}: ffexport build {' '.join(case.build_args)}", flush=True)
        make = make_graphs(case, args.work, args.timeout)
        print(f"  made in {make['seconds']} s, peak {make['peak_mb']} MB" + (f": FAILED {make['error']}" if make["rc"]
                                                                               else ""), flush=True)
        graphs = [] if make["rc"] else check_graphs(case, Path(make["out"]), args.timeout)
        results.append({"case": case.name, "size": case.size, "bucket": case.bucket, "precision": case.precision,
                        "mode": case.mode, "graph_only": case.graph_only, "make": make, "graphs": graphs})
        (args.work / "tensorrt_table.json").write_text(json.dumps({"environment": env, "results": results}, indent=1))
    body = table(results)
    print(body)
    if args.write:
        write_doc(args.write, [env], body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
