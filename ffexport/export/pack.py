"""``ffexport pack BUILD --out DIR``: a deployment folder with only what the runtimes read.

A build directory keeps more than a deployment needs: an int8 build keeps the fp32 graphs its int8
ones were quantized from (gated, kept for replay) and their fp32 weights in ``weights.bin``; every build
keeps ``<bucket>/parity/`` (the saved inputs and outputs of its parity check) and ``weights.bin`` may hold
tensors of buckets rebuilt since. ``pack`` copies:

- ``manifest.json``, with ``files`` recomputed for the packed folder and a ``packed`` record (the build it
  came from, that manifest's SHA-256, what was left out);
- every graph the manifest runs (``graphs.*`` and each bucket's ``graphs.*``: for int8 builds the int8
  files, not their fp32 sources), with its external data pointed at a new ``weights.bin`` that holds
  only the tensors those graphs read, each once;
- engines, the tokenizer, and each bucket's records (``schedule.json``, ``parity.json``, ...; not
  ``parity/``).

Each packed graph is then checked against the build's: the same graph once the external data
locations are cleared, and every tensor it reads byte for byte equal (read back from the new
``weights.bin``, SHA-256 per tensor); the packed folder must pass ``load_manifest(verify=True)``, the
runtime's own check. The folder is written beside ``DIR`` under a temporary name and renamed into place
only when complete: an interrupted pack leaves no ``DIR`` (or, with ``--overwrite``, the old one as it was).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ffexport.errors import InputError
from ffexport.faults import fault_point

log = logging.getLogger(__name__)

STAGING = ".{name}.ffexport-pack-"
#: commit points a fault can be injected at (``FFEXPORT_FAULT=ACTION@POINT``, ffexport/faults.py)
PACK_POINTS = ("pack weights written", "pack before rename")


def add_pack_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    pack = subparsers.add_parser(
        "pack", help="copy a build into a deployment folder with only what the runtimes read",
        description="Copy the build directory BUILD into --out DIR with only what `ffexport run` and the C++ runtime "
                    "read: the manifest, the graphs it runs (an int8 build's int8 graphs, not the fp32 graphs they "
                    "were quantized from), engines, the tokenizer, each bucket's schedule and parity records, and a "
                    "weights.bin holding only the tensors those graphs use. Every packed graph is checked against "
                    "the build's (same graph, every tensor byte for byte) and the folder against its manifest; DIR "
                    "appears only when complete.")
    pack.add_argument("build", metavar="BUILD", help="a build directory (holds manifest.json)")
    pack.add_argument("--out", required=True, metavar="DIR", help="the deployment folder to write (must not exist, "
                                                                   "or be empty; --overwrite replaces a packed folder)")
    pack.add_argument("--overwrite", action="store_true", help="replace DIR when it holds a packed build")
    pack.set_defaults(func=_cmd_pack)
    return pack


def _cmd_pack(args) -> int:
    result = pack_build(Path(args.build), Path(args.out), overwrite=args.overwrite)
    saved = result["source_bytes"] - result["packed_bytes"]
    log.info("packed %s -> %s: %d files, %.1f MiB (%.1f MiB left out: %s)", args.build, args.out, len(result["files"]),
             result["packed_bytes"] / 2**20, saved / 2**20, ", ".join(result["left_out"]) or "nothing")
    return 0


# ============================================================================ what to copy
def graph_files(raw: dict[str, Any]) -> list[str]:
    """The ONNX graphs the manifest runs: ``graphs.*`` and every bucket's ``graphs.*``, in order, once."""
    names = [g["file"] for g in raw.get("graphs", {}).values()]
    for bucket in raw.get("buckets", []):
        names += [g["file"] for g in bucket.get("graphs", {}).values()]
    return list(dict.fromkeys(n for n in names if n.endswith(".onnx")))


def quantized_sources(raw: dict[str, Any]) -> set[str]:
    """The fp32 graphs an int8 build's graphs were quantized from (``quantized.from``)."""
    graphs = [*raw.get("graphs", {}).values(), *(g for b in raw.get("buckets", []) for g in b.get("graphs", {}).values())]
    return {g["quantized"]["from"] for g in graphs if isinstance(g.get("quantized"), dict) and "from" in g["quantized"]}


def _all_tensors(graph) -> Iterator[Any]:
    """Every initializer of ``graph`` and of the subgraphs its nodes hold (Loop/If bodies)."""
    import onnx

    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _all_tensors(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for g in attribute.graphs:
                    yield from _all_tensors(g)


def _external(tensor) -> dict[str, str] | None:
    import onnx

    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return None
    return {e.key: e.value for e in tensor.external_data}


# ============================================================================ packing
def pack_build(build: Path, out: Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Pack ``build`` into ``out`` (see the module docstring); returns the ``packed`` record."""
    from ffexport.export.builddir import LOCK_FILE, DirectoryLock, exchange, remove_stale_siblings
    from ffexport.runtime.manifest import load_manifest

    build, out = Path(build), Path(out)
    if out.resolve() == build.resolve():
        raise InputError(f"--out {out} is the build itself; pack into another folder")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir()):
        if not overwrite:
            raise InputError(f"--out {out} is not empty; pass --overwrite to replace a packed build there")
        if not _is_packed(out):
            raise InputError(f"--out {out} holds something other than a packed build; choose another folder "
                             "(--overwrite replaces only a folder `ffexport pack` wrote)")
    locks, created = [], not out.exists()
    try:
        locks.append(_ReadLock(build))  # no build may write the source meanwhile (a rebuilt bucket rewrites graphs)
        manifest = load_manifest(build, verify=True)  # a damaged build is refused before anything is written
        locks.append(DirectoryLock(out).acquire())  # one pack into out at a time
        remove_stale_siblings(out, STAGING.format(name=out.name), "an interrupted pack")
        staging = out.parent / (STAGING.format(name=out.name) + str(os.getpid()))
        shutil.rmtree(staging, ignore_errors=True)
        locks.append(DirectoryLock(staging).acquire())
        try:
            record = _write(build, manifest.raw, staging)
            fault_point("pack before rename")
            exchange(staging, out)  # out: the new folder; staging: the old one (empty, or the old pack)
            created = False
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        if created and out.is_dir() and not any(p.name != LOCK_FILE for p in out.iterdir()):
            shutil.rmtree(out, ignore_errors=True)  # the empty folder this pack made for its lock
        raise
    finally:
        for lock in reversed(locks):
            lock.release()
    load_manifest(out, verify=True)
    return record


class _ReadLock:
    """A shared ``flock`` on the build's lock file: builds (exclusive) are kept out, other packs are not."""

    def __init__(self, build: Path) -> None:
        import fcntl

        from ffexport.export.builddir import LOCK_FILE

        try:
            self._fd: int | None = os.open(build / LOCK_FILE, os.O_RDONLY | os.O_CREAT, 0o644)
        except OSError:  # a read-only build (no lock file, none can be made): no build can write it either
            self._fd = None
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            raise InputError(f"{build} is being written by an ffexport build; pack it when the build is done") from None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def _is_packed(directory: Path) -> bool:
    try:
        return "packed" in json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return False


def _write(build: Path, raw: dict[str, Any], staging: Path) -> dict[str, Any]:
    import onnx

    from ffexport.export.manifest import file_record
    from ffexport.export.weights import WEIGHTS_FILE, append_aligned

    graphs = graph_files(raw)
    left_out = sorted(quantized_sources(raw) - set(graphs))
    copied = [n for n in raw["files"] if n != WEIGHTS_FILE and n not in graphs and n not in left_out]
    # the new weights.bin: each tensor range the packed graphs read, once, in the order first read
    moved: dict[tuple[int, int], int] = {}
    size = 0
    source = open(build / WEIGHTS_FILE, "rb")
    with source, open(staging / WEIGHTS_FILE, "wb") as target:
        for name in graphs:
            model = onnx.load(str(build / name), load_external_data=False)
            for tensor in _all_tensors(model.graph):
                info = _external(tensor)
                if info is None:
                    continue
                if info.get("location") != WEIGHTS_FILE:
                    raise InputError(f"{build / name}: tensor {tensor.name} reads {info.get('location')!r}, not "
                                     f"{WEIGHTS_FILE}: not a graph `ffexport build` wrote")
                span = (int(info.get("offset", 0)), int(info["length"]))
                if span not in moved:
                    source.seek(span[0])
                    data = source.read(span[1])
                    if len(data) != span[1]:
                        raise InputError(f"{build / WEIGHTS_FILE} ends before tensor {tensor.name} of {name}")
                    moved[span], size = append_aligned(target, data, size)
                _point(tensor, moved[span], span[1])
            onnx.save(model, str(staging / name))
        target.flush()
        os.fsync(target.fileno())
    fault_point("pack weights written")
    for name in graphs:
        _same_graph(build, staging, name)
    for name in copied:
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(build / name, staging / name)
    for bucket in raw.get("buckets", []):  # the bucket's records (schedule, parity, fidelity): not parity/
        folder = build / bucket["name"]
        if folder.is_dir():
            (staging / bucket["name"]).mkdir(exist_ok=True)
            for p in folder.iterdir():
                if p.is_file():
                    shutil.copy2(p, staging / bucket["name"] / p.name)
    files = {n: file_record(staging, n) for n in [WEIGHTS_FILE, *graphs, *copied]}
    source_bytes = sum(int(r["bytes"]) for r in raw["files"].values())
    record = {
        "from": str(build.resolve()),
        "manifest_sha256": hashlib.sha256((build / "manifest.json").read_bytes()).hexdigest(),
        "left_out": [*left_out, *sorted({f"{b['name']}/parity/" for b in raw.get("buckets", [])
                                         if (build / b["name"] / "parity").is_dir()})],
        "weights_bytes": {"build": int(raw["files"][WEIGHTS_FILE]["bytes"]), "packed": size},
        "checked": "every packed graph == the build's with its tensors read back byte for byte; the folder "
                   "passes the runtime's manifest check (sizes, SHA-256)",
        "source_bytes": source_bytes, "packed_bytes": sum(int(r["bytes"]) for r in files.values()),
        "files": sorted(files),
    }
    packed = {**raw, "files": files, "packed": {k: v for k, v in record.items() if k != "files"}}
    (staging / "manifest.json.partial").write_text(json.dumps(packed, indent=2) + "\n")
    os.replace(staging / "manifest.json.partial", staging / "manifest.json")
    return record


def _point(tensor, offset: int, length: int) -> None:
    """Point ``tensor``'s external data at ``[offset, offset + length)`` of the packed ``weights.bin``."""
    from ffexport.export.weights import WEIGHTS_FILE, _point_to

    _point_to(tensor, WEIGHTS_FILE, offset, length)


def _same_graph(build: Path, packed: Path, name: str) -> None:
    """The packed graph is the build's: equal once external data entries are cleared, and every tensor it
    reads equal byte for byte (SHA-256 of the bytes each one points at, in each folder's weights.bin)."""
    import onnx

    from ffexport.export.weights import WEIGHTS_FILE

    a = onnx.load(str(build / name), load_external_data=False)
    b = onnx.load(str(packed / name), load_external_data=False)
    with open(build / WEIGHTS_FILE, "rb") as fa, open(packed / WEIGHTS_FILE, "rb") as fb:
        ta, tb = list(_all_tensors(a.graph)), list(_all_tensors(b.graph))
        if len(ta) != len(tb):
            raise InputError(f"packing {name} changed its tensors ({len(ta)} -> {len(tb)})")
        for x, y in zip(ta, tb):
            ix, iy = _external(x), _external(y)
            if (ix is None) != (iy is None) or x.name != y.name:
                raise InputError(f"packing {name} changed tensor {x.name}")
            if ix is not None and _digest(fa, ix) != _digest(fb, iy):
                raise InputError(f"packing {name}: tensor {x.name}'s bytes differ from the build's")
            del x.external_data[:], y.external_data[:]
    if a.SerializeToString() != b.SerializeToString():
        raise InputError(f"packing {name} changed the graph")


def _digest(f, info: dict[str, str]) -> str:
    f.seek(int(info.get("offset", 0)))
    left, h = int(info["length"]), hashlib.sha256()
    while left > 0:
        block = f.read(min(left, 1 << 22))
        if not block:
            break
        h.update(block)
        left -= len(block)
    return h.hexdigest() if left == 0 else "truncated"
