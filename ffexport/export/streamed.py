"""The streamed build: models too big to hold in memory (Qwen2-VL-7B on a 24 GiB machine).

A normal build holds the model, an ONNX copy of each graph with its weights inline and ONNX
Runtime sessions at once (about 2.5 times the parameter bytes). The streamed build never
materializes the model:

1. every graph is captured from the meta-device model (like ``--graph-only``): parameters become
   graph inputs; buffers and lifted constants (rotary tables) get their values from a small
   materialized copy (the parity copy below), matched by identity at capture time;
2. each weight input becomes an initializer whose bytes are written to ``weights.bin`` one tensor
   at a time, from a :class:`WeightSource`: :class:`RandomWeights` (deterministic per parameter
   name) or :class:`SafetensorsWeights` (a local checkpoint read with ``safe_open``, one tensor at
   a time). A weight's ``Transpose`` (what a Linear lowers to) is folded by storing the transposed
   tensor under the Transpose's output name, as the optimizer does in a normal build. Tensors are
   stored once per (source key, layout), so the graphs share them; sha256 is computed while writing;
3. the graphs are checked by path (``onnx.checker`` and shape inference work on files of any size);
4. parity runs on a *truncated copy*: the same preset with the first ``PARITY_LAYERS`` decoder
   layers and ``PARITY_VISION_LAYERS`` vision blocks, materialized, its parameters filled from the
   same source by the same names, gated by the normal :class:`~ffexport.export.build.Build` (ONNX
   Runtime vs PyTorch) with its graphs written by this same streamed path (:func:`_copy_build`), at
   the bucket itself or a smaller one of the same frame size (:func:`parity_bucket`). The
   full-depth graphs are never executed, so their buckets are recorded with ``usable: false`` and
   the parity record says what ran. A tower with DeepStack levels (Qwen3-VL) keeps in the copy the
   levels of the blocks it keeps, at least the first (:func:`copy_vision_depth`).

Random weights follow transformers' ``_init_weights`` for Qwen2-VL: Linear/Conv weights and
Embeddings ~ normal(0, initializer_range of the owning text/vision config), biases zero, norms one,
the embedding's padding row zero. They are NOT the values ``LoadModel(random_weights=True)``
gives for the same seed (that one draws from one global stream in module order); here every
parameter has its own streams, seeded by (seed, name, block), so any subset can be regenerated
alone: that is what lets the truncated copy hold exactly the full model's first layers.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
import torch
from torch import nn

from ffexport.errors import CaptureError, InputError, ModelError
from ffexport.export.buckets import Bucket, model_bucket
from ffexport.export.capture import CaptureOnnx, GraphSpec, save_checked
from ffexport.export.manifest import MANIFEST, file_record, graph_io, write_manifest
from ffexport.export.parity import OrtRunner
from ffexport.export.weights import MIN_EXTERNAL_BYTES, WEIGHTS_FILE, append_aligned, save_index
from ffexport.models.loading import LoadedModel

log = logging.getLogger(__name__)

#: depth of the parity copy (decoder layers, vision blocks)
PARITY_LAYERS = 2
PARITY_VISION_LAYERS = 2
#: DeepStack levels (Qwen3-VL) the parity copy keeps at least: its tower goes on to the level's block
PARITY_DEEPSTACK_LEVELS = 1
#: the parity copy runs the requested bucket only up to this many visual tokens; beyond it, the same
#: frame size with fewer frames (PyTorch and ONNX Runtime on CPU, several passes per case)
PARITY_MAX_VISUAL_TOKENS = 1024
#: a streamed build is chosen when the parameters need more than this share of available memory
AUTO_SHARE = 0.4
#: random values are drawn in blocks of this many elements, each from its own seeded stream
BLOCK = 1 << 22
_TORCH_DTYPES = {onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.FLOAT16: torch.float16,
                 onnx.TensorProto.BFLOAT16: torch.bfloat16}


# ====================================================================== when to stream
def parameter_bytes(model: nn.Module) -> int:
    """Bytes of a (meta or real) model's parameters, each shared tensor once."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is no such file)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def should_stream(model: nn.Module) -> tuple[bool, str]:
    """The rule for choosing the streamed build without ``--streamed``: parameters need more than
    ``AUTO_SHARE`` of the memory available now (a normal build peaks near 2.5x the parameters)."""
    need, have = parameter_bytes(model), available_memory()
    if have is None:
        return False, "available memory unknown"
    why = f"parameters {need / 2**30:.1f} GiB, available memory {have / 2**30:.1f} GiB"
    return need > AUTO_SHARE * have, why


# ====================================================================== weight sources
class WeightSource(Protocol):
    description: str

    def __call__(self, key: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor: ...


@dataclass(frozen=True)
class InitRule:
    kind: str  # "normal", "zeros" or "ones"
    std: float = 0.0
    padding_idx: int | None = None


def init_rules(model: nn.Module) -> dict[str, InitRule]:
    """Per parameter name, the distribution transformers' ``_init_weights`` draws it from."""
    stds: dict[str, float] = {}
    for name, module in model.named_modules():
        cfg = getattr(module, "config", None)
        if cfg is not None and hasattr(module, "_init_weights"):
            std = getattr(cfg, "initializer_range", None)
            if std is None and hasattr(cfg, "get_text_config"):
                std = getattr(cfg.get_text_config(), "initializer_range", None)
            stds[name] = std or 0.02

    def std_of(name: str) -> float:
        owner = max((p for p in stds if p == "" or name == p or name.startswith(p + ".")), key=len)
        return stds[owner]

    rules: dict[str, InitRule] = {}
    for mod_name, module in model.named_modules():
        cls = type(module).__name__
        for pname, _ in module.named_parameters(recurse=False):
            full = f"{mod_name}.{pname}" if mod_name else pname
            if full in rules:
                continue
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                rules[full] = InitRule("normal", std_of(mod_name)) if pname == "weight" else InitRule("zeros")
            elif isinstance(module, nn.Embedding):
                rules[full] = InitRule("normal", std_of(mod_name), module.padding_idx)
            elif isinstance(module, nn.LayerNorm) or "LayerNorm" in cls or "RMSNorm" in cls:
                rules[full] = InitRule("ones") if pname == "weight" else InitRule("zeros")
            else:
                raise ModelError(f"no random-weight rule for parameter {full} of a {cls}; the streamed build "
                                 "knows Linear, Conv, Embedding and norm layers")
    return rules


def _stream_seed(seed: int, key: str, block: int) -> int:
    digest = hashlib.sha256(f"ffexport:{seed}:{key}:{block}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class RandomWeights:
    """``RandomWeights(model, seed)(key, shape, dtype)``: parameter ``key`` (the Hugging Face model's
    name) drawn deterministically from (seed, key), block by block, whatever else is drawn."""

    def __init__(self, model: nn.Module, seed: int = 0) -> None:
        self.seed = seed
        self.rules = init_rules(model)
        self.description = f"random weights (seed {seed}, one stream per parameter name)"

    def __call__(self, key: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        rule = self.rules.get(key)
        if rule is None:
            raise ModelError(f"no parameter {key} in the model")
        if rule.kind == "zeros":
            return torch.zeros(shape, dtype=dtype)
        if rule.kind == "ones":
            return torch.ones(shape, dtype=dtype)
        numel = int(np.prod(shape)) if shape else 1
        out = torch.empty(numel, dtype=dtype)
        for b, start in enumerate(range(0, numel, BLOCK)):
            n = min(BLOCK, numel - start)
            gen = torch.Generator().manual_seed(_stream_seed(self.seed, key, b))
            out[start:start + n] = torch.randn(n, generator=gen).mul_(rule.std).to(dtype)
        out = out.view(shape)
        if rule.padding_idx is not None:
            out[rule.padding_idx] = 0
        return out


#: checkpoint layouts older than transformers 5's module tree (the released Qwen2-VL files)
_LEGACY_PREFIXES = (("model.language_model.", "model."), ("model.visual.", "visual."))


class SafetensorsWeights:
    """``SafetensorsWeights(directory)(key, shape, dtype)``: one tensor read from the checkpoint's
    ``*.safetensors`` files (``safe_open``, nothing else loaded), cast to ``dtype``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        from safetensors import safe_open

        self.directory = Path(directory)
        self.files: dict[str, Path] = {}
        shards = sorted(self.directory.glob("*.safetensors"))
        if not shards:
            raise ModelError(f"{self.directory} has no *.safetensors weights")
        for shard in shards:
            with safe_open(str(shard), framework="pt") as f:
                for k in f.keys():
                    self.files[k] = shard
        self.description = f"weights from {self.directory} (safetensors, streamed)"

    def checkpoint_key(self, key: str) -> str:
        if key in self.files:
            return key
        for new, old in _LEGACY_PREFIXES:
            if key.startswith(new) and old + key[len(new):] in self.files:
                return old + key[len(new):]
        raise ModelError(f"{self.directory}: no tensor for parameter {key} in its safetensors files")

    def __call__(self, key: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        from safetensors import safe_open

        ck = self.checkpoint_key(key)
        with safe_open(str(self.files[ck]), framework="pt") as f:
            tensor = f.get_tensor(ck)
        if tuple(tensor.shape) != tuple(shape):
            raise ModelError(f"{self.directory}: {ck} has shape {tuple(tensor.shape)}, the model needs {tuple(shape)}")
        return tensor.to(dtype)


def fill_parameters(model: nn.Module, source: WeightSource) -> None:
    """Overwrite every parameter of a materialized model with ``source``'s value for its name."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(source(name, tuple(p.shape), p.dtype))


# ====================================================================== weights.bin
class WeightFile:
    """``weights.bin`` written front to back, one tensor at a time, hashed while written. Tensors are
    keyed by where they came from (source key, layout, dtype), so each is generated and stored once."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / WEIGHTS_FILE
        self.index: dict[str, list[int]] = {}
        self.size = 0
        self.sha = hashlib.sha256()
        self._file = open(self.path, "wb")

    def get(self, key: str) -> list[int] | None:
        return self.index.get(key)

    def add(self, key: str, tensor: torch.Tensor) -> list[int]:
        data = tensor.contiguous().view(-1).view(torch.uint8).numpy()
        offset, self.size = append_aligned(self._file, data, self.size, self.sha)
        self.index[key] = [offset, int(data.size)]
        return self.index[key]

    def flush(self) -> None:
        """Make what was written readable (graphs are checked and run from the file) and save the index."""
        self._file.flush()
        save_index(self.directory, self.index)

    def close(self) -> dict[str, Any]:
        """Flush, save the index beside it; return the manifest record (bytes, sha256)."""
        self.flush()
        self._file.close()
        if self.path.stat().st_size != self.size:
            raise CaptureError(f"{self.path} has {self.path.stat().st_size} bytes, {self.size} were written")
        return {"bytes": self.size, "sha256": self.sha.hexdigest()}


def fill_graph(model: onnx.ModelProto, keys: dict[str, str], source: WeightSource, weights: WeightFile) -> int:
    """Turn the weight inputs of a meta-captured graph (``keys``: input name -> source key) into
    initializers backed by ``weights``; fold each weight's 2-D Transpose into a stored transposed
    tensor. Returns the number of tensors newly written."""
    graph = model.graph
    inputs = {i.name: i for i in graph.input if i.name in keys}
    transposes = []
    for node in graph.node:
        if node.op_type == "Transpose" and node.input[0] in inputs:
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            if len(inputs[node.input[0]].type.tensor_type.shape.dim) == 2 and perm in (None, [1, 0]):
                transposes.append(node)
    for node in transposes:
        graph.node.remove(node)
    used = {x for node in graph.node for x in node.input} | {o.name for o in graph.output}
    written = 0
    cache: tuple[str, torch.Tensor] | None = None

    def value(name: str) -> tuple[torch.Tensor, onnx.ValueInfoProto]:
        nonlocal cache
        info = inputs[name]
        t = info.type.tensor_type
        dtype = _TORCH_DTYPES.get(t.elem_type)
        if dtype is None:
            raise CaptureError(f"weight {name}: ONNX type {t.elem_type} is not a float type the streamed build writes")
        shape = tuple(d.dim_value for d in t.shape.dim)
        if cache is None or cache[0] != name:
            cache = (name, source(keys[name], shape, dtype))
        return cache[1], info

    def initializer(out_name: str, in_name: str, transposed: bool) -> None:
        nonlocal written
        info = inputs[in_name]
        elem = info.type.tensor_type.elem_type
        dims = [d.dim_value for d in info.type.tensor_type.shape.dim]
        if transposed:
            dims = dims[::-1]
        store_key = f"{elem}:{keys[in_name]}{':T' if transposed else ''}"
        nbytes = int(np.prod(dims)) * _TORCH_DTYPES[elem].itemsize if dims else _TORCH_DTYPES[elem].itemsize
        tensor = onnx.TensorProto(name=out_name, data_type=elem, dims=dims)
        if nbytes < MIN_EXTERNAL_BYTES:
            data, _ = value(in_name)
            tensor.raw_data = (data.t() if transposed else data).contiguous().view(-1).view(torch.uint8).numpy().tobytes()
        else:
            place = weights.get(store_key)
            if place is None:
                data, _ = value(in_name)
                place = weights.add(store_key, data.t() if transposed else data)
                written += 1
            for k, v in (("location", WEIGHTS_FILE), ("offset", str(place[0])), ("length", str(place[1]))):
                entry = tensor.external_data.add()
                entry.key, entry.value = k, v
            tensor.data_location = onnx.TensorProto.EXTERNAL
        graph.initializer.append(tensor)

    for node in transposes:
        initializer(node.output[0], node.input[0], True)
    for name in inputs:
        if name in used:
            initializer(name, name, False)
    kept = [i for i in graph.input if i.name not in inputs]
    del graph.input[:]
    graph.input.extend(kept)
    return written


def _weight_names(module: nn.Module, names: dict[int, str]) -> dict[str, str]:
    """Graph input name (the module's parameter path) -> source key (the model's parameter name)."""
    return {n: names[id(p)] for n, p in module.named_parameters(remove_duplicate=False) if id(p) in names}


# ====================================================================== the parity copy
def truncated_copy(loaded: LoadedModel, source: WeightSource, *, layers: int = PARITY_LAYERS,
                   vision_layers: int = PARITY_VISION_LAYERS) -> LoadedModel:
    """The same model with its first ``layers`` decoder layers and ``vision_layers`` vision blocks,
    materialized on the CPU, every parameter from ``source`` under the full model's names.

    A tower with DeepStack levels (Qwen3-VL) keeps the levels whose block it keeps, and at least
    ``PARITY_DEEPSTACK_LEVELS`` of them: the copy keeps blocks through the first level's block when
    ``vision_layers`` stops before it (Qwen3-VL-8B: 9 blocks, level 0 at block 8). The kept levels are
    the first ones, so their mergers (``deepstack_merger_list.i``) have the full model's names; the
    copy's decoder adds level ``i`` after its layer ``i`` as the full model does."""
    config = copy.deepcopy(loaded.config)
    text, vision = config.text_config, config.vision_config
    layers = min(layers, text.num_hidden_layers)
    text.num_hidden_layers = layers
    if getattr(text, "layer_types", None) is not None:
        text.layer_types = text.layer_types[:layers]
    levels = list(getattr(vision, "deepstack_visual_indexes", None) or ())
    vision_layers = copy_vision_depth(vision.depth, levels, vision_layers)
    vision.depth = vision_layers
    note = f"{source.description}, first {layers} decoder layers, first {vision_layers} vision blocks"
    if levels:
        vision.deepstack_visual_indexes = [i for i in levels if i < vision_layers]
        note += f", DeepStack levels {deepstack_note(levels, vision_layers)}"
    dtype = next(loaded.model.parameters()).dtype
    model = loaded.adapter.model_class._from_config(config, dtype=dtype).eval()
    fill_parameters(model, source)
    return LoadedModel(loaded.name, loaded.adapter, model, loaded.tokenizer, note, loaded.video_pixels,
                       loaded.processor)


def copy_vision_depth(depth: int, deepstack: list[int], vision_layers: int = PARITY_VISION_LAYERS) -> int:
    """Vision blocks the parity copy keeps out of ``depth``: ``vision_layers``, or through the block of
    the ``PARITY_DEEPSTACK_LEVELS``-th DeepStack level (``deepstack``: the levels' blocks, ascending)."""
    kept = min(vision_layers, depth)
    if deepstack:
        wanted = sorted(deepstack)[:PARITY_DEEPSTACK_LEVELS]
        kept = max(kept, min(wanted[-1] + 1, depth))
    return kept


def deepstack_note(deepstack: list[int], vision_layers: int) -> str:
    """``"0-1 of 3 (blocks 8, 16)"``-style words for the DeepStack levels a copy of ``vision_layers`` blocks keeps."""
    kept = [i for i in deepstack if i < vision_layers]
    which = f"0-{len(kept) - 1}" if len(kept) > 1 else ("0" if kept else "none")
    return f"{which} of {len(deepstack)} (blocks {', '.join(map(str, kept)) or '-'})"


def parity_bucket(bucket: Bucket, loaded: LoadedModel) -> Bucket:
    """The bucket the parity copy is built at: ``bucket`` itself up to ``PARITY_MAX_VISUAL_TOKENS``,
    else the same frame size with as many frames as fit (at least one temporal group)."""
    if bucket.visual_tokens <= PARITY_MAX_VISUAL_TOKENS:
        return bucket
    vision = loaded.config.vision_config
    groups = max(1, PARITY_MAX_VISUAL_TOKENS // bucket.patches_per_frame)
    frames = groups * vision.temporal_patch_size
    return model_bucket(loaded.adapter, loaded.config, f"{frames}x{bucket.height}x{bucket.width}",
                        video_pixels=loaded.video_pixels)


class _StandInPrompt(LoadedModel):
    """A model with no tokenizer (a random-weight preset whose tokenizer is not in the local cache):
    parity prompts are the tiny tokenizer's byte ids with its special tokens mapped to the model's
    Qwen2-VL ids. Only ids matter to the graphs."""

    #: Qwen2-VL's special token ids, in the tiny tokenizer's order (ffexport.models.tiny_tokenizer)
    QWEN_IDS = (151643, 151644, 151645, 151652, 151653, 151654, 151655, 151656)

    def case_from_video(self, frames, prompt: str):
        from ffexport.case import Case, case_from_video
        from ffexport.models.tiny_tokenizer import NUM_BYTE_TOKENS, build_tiny_tokenizer

        vision = self.config.vision_config
        case = case_from_video(frames, prompt, tokenizer=build_tiny_tokenizer(), patch_size=vision.patch_size,
                               temporal_patch_size=vision.temporal_patch_size, merge_size=vision.spatial_merge_size,
                               video_pixels=self.video_pixels)
        if self.config.video_token_id != self.QWEN_IDS[-1] or self.config.text_config.vocab_size <= max(self.QWEN_IDS):
            raise InputError(f"{self.name} has no tokenizer here and not Qwen2-VL's token ids; add its tokenizer")
        table = np.arange(NUM_BYTE_TOKENS + len(self.QWEN_IDS), dtype=np.int64)
        table[NUM_BYTE_TOKENS:] = self.QWEN_IDS
        return Case(table[case.input_ids], case.pixel_values_videos, case.video_grid_thw)


# ====================================================================== the streamed build
class StreamedBuild:
    """``StreamedBuild(build, source)() -> BuildReport`` for a :class:`Build` made on a meta-device
    model (``LoadModel(..., structure_only=True)``). When the copy fails its parity gate, the manifest
    is written (saying so) and :class:`ValidationError` is raised (exit code 7), like a normal build."""

    def __init__(self, build, source: WeightSource) -> None:
        if build.config.backend != "onnxruntime" or getattr(build.config, "ops", "standard") != "standard":
            raise InputError("a streamed build writes ONNX graphs with standard ops only (--backend onnxruntime, "
                             "--ops standard); build engines from its graphs separately")
        self.build = build
        self.source = source
        self.loaded: LoadedModel = build.loaded
        self.config = build.config
        self.out: Path = build.out
        self.timings: dict[str, float] = {}
        self.peaks: dict[str, float] = {}

    def __call__(self) -> Any:
        """Locked, and with ``--overwrite`` built beside the old build and swapped in (builddir.py)."""
        from ffexport.export.builddir import BuildDirectory

        with BuildDirectory(self.out, overwrite=self.config.overwrite) as directory:
            self.out = self.build.out = directory.path
            try:
                report = self._run()
            finally:
                self.out = self.build.out = directory.out
            directory.commit()
        report.out = self.out
        return report

    def _run(self) -> Any:
        from ffexport.export.build import BuildReport
        from ffexport.progress import Steps

        manifest = self.build._open_directory()
        if manifest["buckets"] or manifest["graphs"]:
            raise InputError(f"{self.out} holds a build; a streamed build starts afresh: pass --overwrite")
        if self.loaded.tokenizer is None and hasattr(self.loaded.adapter, "bucket_layout"):
            raise ModelError(f"{self.loaded.name}: no tokenizer here, and the text between this family's frame blocks "
                             "comes from it (the graphs' layout); put the checkpoint's tokenizer in the Hugging Face cache")
        report = BuildReport(self.out)
        meta = self.loaded.model
        t0 = time.perf_counter()
        copy_model = truncated_copy(self.loaded, self.source)
        if copy_model.tokenizer is None:
            copy_model = _StandInPrompt(**copy_model.__dict__)
        self._stage("parity copy (materialize)", t0)
        self._pairs: list[tuple[nn.Module, nn.Module]] = [(meta, copy_model.model)]
        self._names = {id(p): n for n, p in meta.named_parameters()}
        manifest["streamed"] = {
            "weights": self.source.description,
            "rule": "weights streamed tensor by tensor into weights.bin from a meta-device capture "
                    "(ffexport/export/streamed.py)",
        }
        weights = WeightFile(self.out)
        capture = CaptureOnnx(structure_only=True, constants=self._constant, attention=self.build.capture.attention)
        try:
            with Steps(len(self.build.buckets) * 2 + 2, "streamed build", quiet=self.config.quiet) as steps:
                t0 = time.perf_counter()
                entries = [self._bucket(b, capture, weights, steps) for b in self.build.buckets]
                self._shared(manifest, capture, weights, steps)
                self._stage("export (capture + stream weights)", t0)
        finally:
            record = weights.close()
        t0 = time.perf_counter()
        parity = self._parity(copy_model, entries)
        self._stage("parity (truncated copy)", t0)
        del copy_model, self._pairs
        t0 = time.perf_counter()
        lint = self._lint(manifest, entries)
        self._stage("lint", t0)
        for entry in entries:
            entry["parity"] = parity[entry["name"]]
            entry["usable"] = False
            report.built.append(entry["name"])
        manifest["buckets"] = entries
        manifest["lint"] = lint
        manifest["stages"] = {k: {"seconds": round(v, 1), "peak_rss_gib_so_far": round(self.peaks[k], 2)}
                              for k, v in self.timings.items()}
        files = {WEIGHTS_FILE: record}
        for g in [*manifest["graphs"].values(), *(x for e in entries for x in e["graphs"].values())]:
            files[g["file"]] = file_record(self.out, g["file"])
        manifest["files"] = files
        write_manifest(self.out, manifest)
        for stage, seconds in self.timings.items():
            log.info("stage %-36s %7.1f s  (peak resident memory so far %.2f GiB)", stage, seconds, self.peaks[stage])
        if lint["findings"]:
            log.warning("ffexport lint found %d issue(s) in the streamed graphs (see manifest.json)", lint["findings"])
        failed = [e["name"] for e in entries if not e["parity"]["passed"]]
        if failed:
            from ffexport.errors import ValidationError

            raise ValidationError(f"bucket(s) {', '.join(failed)}: the truncated copy failed the parity gate "
                                  "(see <bucket>/parity-copy/parity.json)")
        return report

    def _stage(self, name: str, t0: float) -> None:
        """Record a stage's wall time and the process's peak resident memory at its end."""
        import resource

        self.timings[name] = time.perf_counter() - t0
        self.peaks[name] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux

    # ---------------------------------------------------------------- capture + weights
    def _constant(self, tensor: torch.Tensor) -> torch.Tensor | None:
        """The real value of a meta buffer / lifted constant: the same-named one of the copy."""
        for meta_module, real_module in self._pairs:
            for name, buf in meta_module.named_buffers():
                if buf is tensor:
                    return real_module.get_buffer(name)
        return None

    def _save(self, spec: GraphSpec, filename: str, capture: CaptureOnnx, weights: WeightFile) -> dict[str, Any]:
        model = capture(spec)
        fill_graph(model, _weight_names(spec.module, self._names), self.source, weights)
        _no_loose_inputs(model, spec)
        weights.flush()
        save_checked(model, self.out, filename)
        return {"file": filename, **graph_io(self.out / filename)}

    def _bucket(self, b: Bucket, capture: CaptureOnnx, weights: WeightFile, steps) -> dict[str, Any]:
        """A bucket's vision and prefill graphs as a graph-only build captures them (the tower's outputs,
        the frame blocks from the adapter, the DeepStack input where the tower has levels), weights streamed."""
        from ffexport.export.build import PRECISIONS, TorchInputs, _blocks_record, _vision_outputs
        from ffexport.export.policy import nominal_schedule
        from ffexport.export.vision import VisionEncoder

        layout = self.build._nominal_layout(b)
        self.build._check_text_between_blocks(layout, b)
        if self.config.schedule is not None:
            schedule, source = self.config.schedule, self.config.schedule_source or "given"
            self.build._check_schedule_blocks(schedule, layout, b)
        else:
            nominal = nominal_schedule(b, self.config.fusion, self.loaded.num_layers, layout)
            schedule, source = nominal.schedule, nominal.source
        meta = {"device": "meta"}
        steps.start(f"{b.name}: vision graph")
        tower = self.loaded.adapter.vision_tower(self.loaded.config.vision_config)  # the family's tower, as data
        vision = VisionEncoder(self.loaded.model.model.visual, b.grid_thw, tower).eval().to("meta")
        copy_visual = self._pairs[0][1].model.visual  # its buffers (rotary and position tables) hold the values
        twin = VisionEncoder(copy_visual, b.grid_thw, dataclasses.replace(
            tower, deepstack=tuple(i for i in tower.deepstack if i < len(copy_visual.blocks)))).eval()
        self._pairs.append((vision, twin))
        pixels = torch.zeros(vision.num_patches, vision.patch_dim, dtype=torch.float32, **meta)
        graphs = {"vision": self._save(GraphSpec("vision", vision, (pixels,), ["pixel_values_videos"],
                                                 _vision_outputs(vision)), f"{b.name}.vision.onnx", capture, weights)}
        self._pairs.pop()
        steps.advance()
        steps.start(f"{b.name}: prefill graph")
        dtype = PRECISIONS[self.config.precision]
        hidden = self.loaded.config.text_config.hidden_size
        # the text between frame blocks is part of the prompt's text (at least one token after them)
        length = max(b.visual_tokens + min(64, self.config.max_text), layout.region_length + 1)
        example = TorchInputs(torch.zeros(1, length, hidden, dtype=dtype, **meta),
                              torch.zeros(3, length, dtype=torch.int64, **meta),
                              torch.zeros((), dtype=torch.int64, **meta), 0,
                              deepstack=self.build._example_deepstack(b, dtype, device="meta"))
        spec = self.build._prefill_spec(self.build._prefill_module(schedule), b, example)
        graphs["prefill"] = self._save(spec, f"{b.name}.prefill.onnx", capture, weights)
        steps.advance()
        return {"name": b.name, "frames": b.frames, "height": b.height, "width": b.width,
                "resized": list(b.resized), "grid_thw": list(b.grid_thw), "visual_tokens": b.visual_tokens,
                "patches_per_frame": b.patches_per_frame, **_blocks_record(layout), "schedule": schedule.to_json(),
                "schedule_source": source, "graphs": graphs}

    def _shared(self, manifest: dict[str, Any], capture: CaptureOnnx, weights: WeightFile, steps) -> None:
        from ffexport.export.build import PRECISIONS
        from ffexport.export.graphs import DecodeStep, EmbedTokens, present_names

        meta = {"device": "meta"}
        layers = self.loaded.num_layers
        parts = self.loaded.adapter.decoder_parts(self.loaded.model)
        dtype = PRECISIONS[self.config.precision]
        steps.start("embed graph")
        ids = torch.zeros(1, 8, dtype=torch.int64, **meta)
        manifest["graphs"]["embed"] = self._save(
            GraphSpec("embed", EmbedTokens(self.build.embed), (ids,), ["input_ids"], ["inputs_embeds"],
                      ({1: torch.export.Dim("L", min=2, max=32768)},)), "embed.onnx", capture, weights)
        steps.advance()
        steps.start("decode graph")
        past = [torch.zeros(1, parts.num_kv_heads, 16 + i, parts.head_dim, dtype=dtype, **meta)
                for i in range(layers) for _ in range(2)]
        dims = [torch.export.Dim(f"past_{i}", min=1, max=32768) for i in range(layers)]
        dynamic = {"input_ids": None, "position_ids": None, "past": tuple({2: dims[i // 2]} for i in range(2 * layers))}
        token, position = torch.zeros(1, 1, dtype=torch.int64, **meta), torch.zeros(3, 1, dtype=torch.int64, **meta)
        manifest["graphs"]["decode"] = self._save(
            GraphSpec("decode", DecodeStep(self.build.decoder, self.build.embed), (token, position, *past),
                      ["input_ids", "position_ids", *present_names(layers, "past_key_values")],
                      ["logits", *present_names(layers)], dynamic), "decode.onnx", capture, weights)
        steps.advance()
        note = "streamed (full depth): not executed here; see the buckets' parity (truncated copy)"
        for name in ("embed", "decode"):
            manifest["graphs"][name]["parity"] = {"passed": False, "validated": False, "note": note}

    # ---------------------------------------------------------------- parity, lint
    def _parity(self, copy_model: LoadedModel, entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Build and gate each bucket (or its smaller stand-in) on the truncated copy with the normal
        build, in a scratch folder; keep its parity reports under ``<bucket>/parity-copy/``."""
        from ffexport.export.build import Build, BuildConfig
        from ffexport.export.policy import nominal_schedule
        from ffexport.fusion.schedule import Schedule

        copy_layers = copy_model.num_layers
        vision_blocks = len(copy_model.model.model.visual.blocks)
        on = f"truncated copy: first {copy_layers} decoder layers, first {vision_blocks} vision blocks"
        tower = getattr(self.loaded.adapter, "vision_tower", None)
        deepstack = list(tower(self.loaded.config.vision_config).deepstack) if tower is not None else []
        if deepstack:
            on += f", DeepStack levels {deepstack_note(deepstack, vision_blocks)}"
        results = {}
        for entry, bucket in zip(entries, self.build.buckets):
            small = parity_bucket(bucket, copy_model)
            full = Schedule.from_json(entry["schedule"]) if small == bucket else nominal_schedule(
                small, self.config.fusion, self.loaded.num_layers, self.build._nominal_layout(small)).schedule
            stages = tuple(s for s in full.stages if s.layer < copy_layers)
            schedule = Schedule(full.visual_tokens, full.patches_per_frame, stages, full.layout)
            scratch = Path(tempfile.mkdtemp(prefix=".parity-copy-", dir=self.out))
            record: dict[str, Any] = {
                "on": on, "bucket": small.name, "schedule": schedule.to_json(),
                "full_depth_run": False,
                "note": ("the full-depth graphs were not run (too big for this machine); the copy's graphs have the "
                         "same structure per layer and weights from the same writer, by the same names"
                         + ("" if small == bucket else f"; the copy was built at {small.name} "
                            f"({small.visual_tokens} visual tokens, same frame size) instead of {bucket.name}")
                         + ("" if len(stages) == len(full.stages) else
                            f"; schedule steps at layers >= {copy_layers} were dropped for the copy")
                         + ("; no tokenizer here: prompts are byte ids with Qwen2-VL's special token ids"
                            if isinstance(copy_model, _StandInPrompt) else "")),
            }
            try:
                # the copy's dynamic reference (the contract check) budgets for the full model's depth, so
                # its first layers decide what the full model's would
                fusion = dataclasses.replace(self.config.fusion,
                                             budget_layers=self.config.fusion.layers_for(self.loaded.num_layers))
                config = BuildConfig(buckets=(small.name,), out=scratch / "build", schedule=schedule,
                                     schedule_source="streamed build's schedule, truncated to the copy",
                                     fusion=fusion, precision=self.config.precision,
                                     max_text=self.config.max_text, quiet=True)
                from ffexport.errors import ValidationError

                try:
                    _copy_build(Build)(copy_model, config, self.source)()
                except ValidationError as e:
                    log.warning("parity on the truncated copy failed: %s", e)
                built = json.loads((scratch / "build" / MANIFEST).read_text())
                (copy_entry,) = built["buckets"]
                target = self.out / entry["name"] / "parity-copy"
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(scratch / "build" / small.name / "parity.json", target / "parity.json")
                shutil.copy(scratch / "build" / MANIFEST, target / "manifest.json")
                record.update({"file": f"{entry['name']}/parity-copy/parity.json", "passed": bool(copy_entry["usable"]),
                               "validated": True, "shared_graphs": {k: v["parity"]["passed"]
                                                                    for k, v in built["graphs"].items()}})
                if "contract" in copy_entry["parity"]:  # the parity contract and the oracle, on the copy
                    record["contract"] = {**copy_entry["parity"]["contract"], "on": on}
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            results[entry["name"]] = record
            log.info("bucket %s: parity on the %s at %s: %s", entry["name"], on, small.name,
                     "passed" if record["passed"] else "FAILED")
        return results

    def _lint(self, manifest: dict[str, Any], entries: list[dict[str, Any]]) -> dict[str, Any]:
        from ffexport.lint.core import lint_model, load_graph
        from ffexport.lint.tables import TARGETS

        files = [g["file"] for g in manifest["graphs"].values()] + [g["file"] for e in entries
                                                                    for g in e["graphs"].values()]
        found: dict[str, list[str]] = {}
        for f in files:
            model = load_graph(self.out / f)
            for target in TARGETS:
                findings = lint_model(model, target=target)
                if findings:
                    found.setdefault(f, []).extend(f"{target}: {x}" for x in findings)
        return {"targets": list(TARGETS), "graphs": len(files), "findings": sum(len(v) for v in found.values()),
                "details": found}


def stream_source(loaded: LoadedModel, *, random_weights: bool, seed: int, directory: Path | None) -> WeightSource:
    """The weights a streamed build writes: per-name random ones, or a local checkpoint's."""
    if random_weights or directory is None:
        return RandomWeights(loaded.model, seed)
    return SafetensorsWeights(directory)



def _no_loose_inputs(model: onnx.ModelProto, spec: GraphSpec) -> None:
    leftover = [i.name for i in model.graph.input if i.name not in spec.input_names]
    if leftover:
        raise CaptureError(f"the {spec.name} graph has inputs with no value: {', '.join(leftover[:5])}")


class _OneSession(OrtRunner):
    """An :class:`OrtRunner` that keeps only the session it ran last (memory over speed)."""

    def session(self, path: str | Path):
        if str(path) not in self._sessions and self._sessions:
            import gc

            self._sessions.clear()
            gc.collect()
        return super().session(path)


def _copy_build(build_class):
    """:class:`~ffexport.export.build.Build` whose graphs are written by the streamed path (parameters
    captured as graph inputs, then filled from the source by name, transposes stored), so the parity
    gate checks exactly what the full-depth graphs went through, and no graph ever holds its weights
    inline (a normal capture of the 7B copy would peak near 10 GB)."""

    class StreamedCopyBuild(build_class):
        def __init__(self, loaded: LoadedModel, config, source: WeightSource) -> None:
            super().__init__(loaded, config)
            self.source = source
            self._names = {id(p): n for n, p in loaded.model.named_parameters()}
            self._weights: WeightFile | None = None
            self._streamed_capture = CaptureOnnx(structure_only=True, attention=self.capture.attention,
                                                 constants=lambda t: None if id(t) in self._names else t)
            # ONNX Runtime's CPU build widens fp16 weights to fp32 when it loads a session: four cached
            # sessions of the 7B copy held 10 GB; one at a time bounds the gate by the largest graph
            self.runner = self.gate.runner = _OneSession()

        def _save_graph(self, spec: GraphSpec, filename: str, store) -> Path:
            if self._weights is None:
                self._weights = WeightFile(self.out)
            model = self._streamed_capture(spec)
            fill_graph(model, _weight_names(spec.module, self._names), self.source, self._weights)
            _no_loose_inputs(model, spec)
            self._weights.flush()
            return save_checked(model, self.out, filename)

        def _save_contract_graph(self, spec: GraphSpec, directory: Path, filename: str) -> Path:
            """The contract check's extra prefill graphs (:mod:`ffexport.export.contract`) go through the same
            streamed path as the copy's own graphs, with a weight file of their own in ``directory``."""
            directory.mkdir(parents=True, exist_ok=True)
            weights = WeightFile(directory)
            try:
                model = self._streamed_capture(spec)
                fill_graph(model, _weight_names(spec.module, self._names), self.source, weights)
                _no_loose_inputs(model, spec)
            finally:
                weights.close()
            return save_checked(model, directory, filename)

    return StreamedCopyBuild


# ====================================================================== CLI wiring
def streamed_model(*, model: str, random_weights: bool, weights: str | None, dtype: str, layers: int | None,
                   vision_layers: int | None, seed: int = 0, force: bool = False
                   ) -> tuple[LoadedModel, WeightSource] | None:
    """For ``ffexport build``: the meta-device model and its weight source when the build should be
    streamed (``force``, or :func:`should_stream`), else None (load the model normally)."""
    from ffexport.models import LoadModel
    from ffexport.models.loading import PRESETS, _load_tokenizer

    preset = PRESETS.get(model)
    if preset is not None and preset.tiny and not force:
        return None  # a test model: never worth streaming unless asked
    directory: Path | None = None
    if preset is not None and not (preset.tiny or random_weights):
        if layers is not None or vision_layers is not None:
            raise ModelError("--layers/--vision-layers truncate random-weight models only (add --random-weights)")
        loader = LoadModel(model, weights=weights, dtype=dtype)
        directory = loader.weights or loader._find_weights(preset)
    elif preset is None:
        directory = Path(model)
        if not (directory / "config.json").is_file():
            return None  # LoadModel says what is wrong
    if directory is not None:
        loaded = _meta_from_directory(directory, dtype=dtype, name=preset.name if preset else directory.name)
    else:
        loaded = LoadModel(model, dtype=dtype, structure_only=True, layers=layers, vision_layers=vision_layers)()
        if preset is not None and preset.tiny:
            from ffexport.models.tiny_tokenizer import build_tiny_tokenizer

            loaded.tokenizer = build_tiny_tokenizer()
        elif preset is not None and preset.hub_id:
            from ffexport.models.loading import _hub_snapshot

            snapshot = _hub_snapshot(preset.hub_id)
            loaded.tokenizer = _load_tokenizer(snapshot) if snapshot is not None else None
    stream, why = should_stream(loaded.model)
    if not (force or stream):
        return None
    log.info("streamed build (%s): %s", "--streamed" if force else "too big to hold in memory", why)
    source = SafetensorsWeights(directory) if directory is not None else RandomWeights(loaded.model, seed)
    loaded.source = source.description + (loaded.source.partition(")")[2] if directory is None else "")
    return loaded, source


def _meta_from_directory(directory: Path, *, dtype: str, name: str) -> LoadedModel:
    from ffexport.models.loading import DTYPES, FAMILIES, _load_tokenizer

    try:
        data = json.loads((directory / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"{directory}/config.json is not readable JSON ({e})") from e
    adapter = FAMILIES.get(data.get("model_type"))
    if adapter is None:
        raise ModelError(f"{directory}: model_type {data.get('model_type')!r} is not supported "
                         f"(supported: {', '.join(FAMILIES.names())})")
    config = adapter.model_class.config_class.from_pretrained(directory, local_files_only=True)
    config._attn_implementation = "sdpa"
    with torch.device("meta"):
        model = adapter.model_class._from_config(config, dtype=DTYPES[dtype]).eval()
    from ffexport.video.processor_config import read_processor_config

    processor = read_processor_config(directory)  # the directory's pixel limits, as transformers reads them
    return LoadedModel(name, adapter, model, _load_tokenizer(directory), str(directory), processor.pixels, processor)
