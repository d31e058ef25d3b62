"""Print a :class:`BenchResult`: a rich table on a terminal, plain lines elsewhere, and always the
final line ``prefill speedup: X.XXx (ideal Y.YYx)``."""

from __future__ import annotations

import sys
from typing import TextIO

from ffexport.bench.prefill import BenchResult


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f}"


def _gflop(flops: int) -> str:
    g = flops / 1e9
    return f"{g:,.0f}" if g >= 100 else f"{g:.1f}" if g >= 1 else f"{g:.3g}"


def _load(values) -> str:
    return "-" if not values else " ".join(f"{x:.1f}" for x in values)


def _memory(v) -> tuple[str, str]:
    """(peak, increase during the run) in MiB: a fresh process's figures when there are some."""
    if v.memory is not None:
        return _mb(v.memory.get("run_peak_bytes")), _mb(v.memory.get("run_delta_bytes"))
    record = v.timing.memory
    if record is None:
        return "-", "-"
    return _mb(record.peak), _mb(record.delta)


def rows(result: BenchResult) -> list[list[str]]:
    full = result.variant(result.headline[0]) or result.variant("full")
    out = []
    for v in result.variants:
        peak, delta = _memory(v)
        out.append([v.name, str(v.final_visual_tokens), _gflop(v.flops), f"{v.timing.median * 1e3:,.1f}",
                    f"{v.timing.iqr * 1e3:,.1f}", f"{full.timing.median / v.timing.median:.2f}x",
                    f"{result.flops_full / v.flops:.2f}x", peak, delta])
    return out


HEADER = ["variant", "visual tokens left", "GFLOP", "median ms", "IQR ms", "speed-up", "FLOP ratio",
          "peak MiB", "run +MiB"]


def summary(result: BenchResult) -> list[str]:
    m, lines = result.meta, []
    lines.append(f"model {m['model']} ({m['model_source']}), {m['num_layers']} layers, {m['dtype']}; bucket "
                 f"{m['bucket']}: {m['visual_tokens']} visual + {m['text_tokens']} text tokens; runtime {m['runtime']} "
                 f"on {m.get('gpu') or m['machine']['cpu']} ({m['device']}, {m['threads']} threads); "
                 f"{m['warmup']} warm-up + {m['repeats']} interleaved rounds; load average "
                 f"{_load(m.get('load_average_start'))} at the start, {_load(m.get('load_average_end'))} at the end")
    f = m["fusion"]
    stages = ", ".join(f"L{s.layer} {s.where.split('_')[0]} {s.op} {s.remove}" for s in result.schedule.stages if s.remove)
    lines.append(f"schedule ({m['schedule_source']}; cost {f['cost']}, similarity {f['similarity']}, budget layers "
                 f"{f['budget_layers']}): {result.schedule.visual_tokens} -> {result.schedule.final_visual_tokens} "
                 f"visual tokens [{stages}]")
    if result.dynamic_schedule is not None and result.variant("dynamic") is not None:
        same = result.dynamic_schedule == result.schedule
        lines.append("dynamic reference realizes " + ("the same schedule (same token budget)" if same else
                     f"a different schedule ({result.dynamic_schedule.final_visual_tokens} visual tokens left)"))
    full_name, static_name = result.headline
    ideal = result.ideal
    lines.append(f"ideal speed-up (FLOPs full/static): {ideal:.2f}x; measured ({full_name} / {static_name}): "
                 f"{result.speedup:.2f}x (median per round: {result.paired_speedup:.2f}x); measured/ideal: "
                 f"{result.speedup / ideal:.2f}")
    if result.ideal_full_depth is not None:
        lines.append(f"the same schedule on the preset's full depth implies {result.ideal_full_depth:.2f}x "
                     "(this model is truncated)")
    dyn = result.variant("dynamic")
    if dyn is not None:
        lines.append(f"dynamic reference / static: {dyn.timing.median / result.variant('static').timing.median:.2f}x "
                     "the static prefill's time")
    s = result.share
    if s.get("steps") is not None:
        extra = ""
        if s.get("importance") is not None:
            extra = f", importance {100 * s['importance']:.1f}%"
        if s.get("unattributed"):
            extra += f", unattributed (fused by the runtime) {100 * s['unattributed']:.1f}%"
        lines.append(f"merge/prune steps: {100 * s['steps']:.1f}% of the static prefill{extra} ({s['method']}, "
                     f"median of {s['runs']} runs)")
    if result.export is not None:
        e = result.export
        lines.append(f"export of the static prefill graph: {e['seconds']:.1f} s, peak resident "
                     f"{_mb(e['memory']['peak_bytes'])} MiB (model resident)")
    if result.variants[0].memory is not None:
        loads = ", ".join(f"{v.name} {_mb(v.memory.get('load_peak_bytes'))} MiB" for v in result.variants)
        lines.append("memory: a fresh process loads the graph and runs it once: peak resident during the run "
                     f"(weights included), run +MiB: increase during the run; session creation peaks: {loads}")
    else:
        kind = "CUDA allocated" if result.meta["device"] == "cuda" else "resident (weights already loaded)"
        lines.append(f"memory: peak {kind} during each variant's first call; run +MiB: increase over its start")
    return lines


def final_line(result: BenchResult) -> str:
    return f"prefill speedup: {result.speedup:.2f}x (ideal {result.ideal:.2f}x)"


def render(result: BenchResult, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    table_rows = rows(result)
    if out.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"prefill {result.meta['bucket']} ({result.meta['runtime']}, {result.meta['device']})")
        for i, h in enumerate(HEADER):
            table.add_column(h, justify="left" if i == 0 else "right")
        for r in table_rows:
            table.add_row(*r)
        console = Console(file=out)
        console.print(table)
        for line in summary(result):
            console.print(line, highlight=False, markup=False)
    else:
        widths = [max(len(h), *(len(r[i]) for r in table_rows)) for i, h in enumerate(HEADER)]
        fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                      for i, (c, w) in enumerate(zip(cells, widths)))
        print(fmt(HEADER), file=out)
        for r in table_rows:
            print(fmt(r), file=out)
        for line in summary(result):
            print(line, file=out)
    print(final_line(result), file=out)
