"""A hand-written build directory (manifest + tiny ONNX graphs) for runtime tests without `ffexport build`.

The graphs follow ``docs/build-format.md`` (names, shapes, dtypes, shared ``weights.bin``) but
compute something simple and exactly reproducible, so :func:`oracle` can say which tokens the
runtime must produce: every logit row is ``-|arange(V) - target|`` (argmax = ``target``), where
the target is an integer built from everything the graph received:

- prefill: ``(sum(inputs_embeds) + sum(position_ids * [1, 2, 3]) + 7 * video_start) mod V``, and
  layer ``i``'s cache is ``inputs_embeds`` minus its first ``DROP[i]`` tokens (per-layer lengths);
- decode: ``(sum(present.1.key) + sum(present.0.value) + sum(position_ids * [1, 2, 3]) + 3 * token) mod V``
  with ``present = concat(past, embedding of the token)``.

Values stay small integers, so float32 (and float16) arithmetic is exact in any summation order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ffexport.mrope import mrope_position_ids

V, D, LAYERS, KVH, HD = 272, 4, 2, 1, 2
VIDEO, EOS = 263, 258
PATCH, TPATCH, MERGE = 14, 2, 2
PATCH_DIM = 3 * TPATCH * PATCH * PATCH
DROP = (0, 3)  # tokens removed before each layer's attention
AXIS_WEIGHTS = np.array([[1], [2], [3]], dtype=np.int64)


@dataclass(frozen=True)
class ToyBucket:
    frames: int
    height: int
    width: int
    usable: bool = True

    @property
    def name(self) -> str:
        return f"{self.frames}x{self.height}x{self.width}"

    @property
    def grid(self) -> tuple[int, int, int]:
        return (-(-self.frames // TPATCH), self.height // PATCH, self.width // PATCH)

    @property
    def visual_tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w // MERGE**2


def embedding_table(dtype=np.float32) -> np.ndarray:
    v = np.arange(V)
    return np.stack([v % 7, v % 5, v % 3, np.ones(V)], axis=1).astype(dtype)


def vision_weights() -> np.ndarray:
    rows = np.arange(MERGE**2 * PATCH_DIM)[:, None]
    return (rows % 97 == np.arange(D)[None]).astype(np.float32)  # ~48 ones per column


# ---------------------------------------------------------------- graphs
class _Weights:
    """Initializers stored once in ``weights.bin`` (ONNX external data, shared by all graphs)."""

    def __init__(self) -> None:
        self.blob = bytearray()
        self.offsets: dict[str, tuple[int, int]] = {}

    def tensor(self, name: str, array: np.ndarray) -> onnx.TensorProto:
        t = numpy_helper.from_array(np.ascontiguousarray(array), name)
        raw = t.raw_data
        if name not in self.offsets:
            self.blob.extend(b"\0" * (-len(self.blob) % 64))
            self.offsets[name] = (len(self.blob), len(raw))
            self.blob.extend(raw)
        offset, length = self.offsets[name]
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "weights.bin"), ("offset", str(offset)), ("length", str(length))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        return t


def _const(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(array), name + "_v"))


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "toy", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def _target_logits(nodes: list, target: str, out: str) -> None:
    """logits[1, V] = -|arange(V) - target| (float32)."""
    nodes += [
        _const("range", np.arange(V, dtype=np.int64)),
        _const("vocab", np.array(V, dtype=np.int64)),
        helper.make_node("Mod", [target, "vocab"], ["t_mod"]),
        helper.make_node("Sub", ["range", "t_mod"], ["diff"]),
        helper.make_node("Abs", ["diff"], ["adiff"]),
        helper.make_node("Neg", ["adiff"], ["nadiff"]),
        helper.make_node("Cast", ["nadiff"], ["logits_flat"], to=TensorProto.FLOAT),
        _const("logits_shape", np.array([1, V], dtype=np.int64)),
        helper.make_node("Reshape", ["logits_flat", "logits_shape"], [out]),
    ]


def _position_sum(nodes: list, positions: str, out: str) -> None:
    nodes += [
        _const(out + "_w", AXIS_WEIGHTS),
        helper.make_node("Mul", [positions, out + "_w"], [out + "_m"]),
        helper.make_node("ReduceSum", [out + "_m"], [out], keepdims=0),
    ]


def _float_sum(nodes: list, x: str, out: str) -> None:
    nodes += [
        helper.make_node("Cast", [x], [out + "_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", [out + "_f"], [out + "_s"], keepdims=0),
        helper.make_node("Cast", [out + "_s"], [out], to=TensorProto.INT64),
    ]


def embed_graph(w: _Weights, ftype: int) -> onnx.ModelProto:
    table = w.tensor("embed_table", embedding_table(np.float16 if ftype == TensorProto.FLOAT16 else np.float32))
    return _model(
        [helper.make_node("Gather", ["embed_table", "input_ids"], ["inputs_embeds"], axis=0)],
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "L"])],
        [helper.make_tensor_value_info("inputs_embeds", ftype, [1, "L", D])],
        [table],
    )


def vision_graph(w: _Weights, ftype: int, bucket: ToyBucket) -> onnx.ModelProto:
    t, h, wd = bucket.grid
    n = bucket.visual_tokens
    nodes = [
        _const("vshape", np.array([n, MERGE**2 * PATCH_DIM], dtype=np.int64)),
        helper.make_node("Reshape", ["pixel_values_videos", "vshape"], ["grouped"]),
        helper.make_node("MatMul", ["grouped", "vision_w"], ["feat32"]),
        helper.make_node("Cast", ["feat32"], ["video_features"], to=ftype),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("pixel_values_videos", TensorProto.FLOAT, [t * h * wd, PATCH_DIM])],
        [helper.make_tensor_value_info("video_features", ftype, [n, D])],
        [w.tensor("vision_w", vision_weights())],
    )


def prefill_graph(ftype: int) -> onnx.ModelProto:
    nodes: list = []
    _float_sum(nodes, "inputs_embeds", "s_embeds")
    _position_sum(nodes, "position_ids", "s_pos")
    nodes += [
        _const("seven", np.array(7, dtype=np.int64)),
        helper.make_node("Mul", ["video_start", "seven"], ["s_start"]),
        helper.make_node("Add", ["s_embeds", "s_pos"], ["s1"]),
        helper.make_node("Add", ["s1", "s_start"], ["target"]),
    ]
    _target_logits(nodes, "target", "logits")
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, V])]
    for i, drop in enumerate(DROP):
        nodes += [
            _const(f"start{i}", np.array([drop, 0], dtype=np.int64)),
            _const(f"end{i}", np.array([1 << 30, HD], dtype=np.int64)),
            _const(f"vstart{i}", np.array([drop, HD], dtype=np.int64)),
            _const(f"vend{i}", np.array([1 << 30, 2 * HD], dtype=np.int64)),
            _const(f"axes{i}", np.array([1, 2], dtype=np.int64)),
            _const(f"unsq{i}", np.array([1], dtype=np.int64)),
            helper.make_node("Slice", ["inputs_embeds", f"start{i}", f"end{i}", f"axes{i}"], [f"k{i}"]),
            helper.make_node("Slice", ["inputs_embeds", f"vstart{i}", f"vend{i}", f"axes{i}"], [f"v{i}"]),
            helper.make_node("Unsqueeze", [f"k{i}", f"unsq{i}"], [f"present.{i}.key"]),
            helper.make_node("Unsqueeze", [f"v{i}", f"unsq{i}"], [f"present.{i}.value"]),
        ]
        for kind in ("key", "value"):
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", ftype, [1, KVH, f"L{i}", HD]))
    return _model(
        nodes,
        [helper.make_tensor_value_info("inputs_embeds", ftype, [1, "L", D]),
         helper.make_tensor_value_info("position_ids", TensorProto.INT64, [3, "L"]),
         helper.make_tensor_value_info("video_start", TensorProto.INT64, [])],
        outputs,
    )


def decode_graph(w: _Weights, ftype: int) -> onnx.ModelProto:
    table = w.tensor("embed_table", embedding_table(np.float16 if ftype == TensorProto.FLOAT16 else np.float32))
    nodes: list = [
        helper.make_node("Gather", ["embed_table", "input_ids"], ["e"], axis=0),  # [1, 1, D]
        _const("unsq", np.array([1], dtype=np.int64)),
        helper.make_node("Unsqueeze", ["e", "unsq"], ["e4"]),  # [1, 1, 1, D]
        helper.make_node("Split", ["e4"], ["new_k", "new_v"], axis=3, num_outputs=2),
    ]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 1]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, [3, 1])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, V])]
    for i in range(LAYERS):
        for kind, new in (("key", "new_k"), ("value", "new_v")):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", ftype, [1, KVH, f"P{i}", HD]))
            nodes.append(helper.make_node("Concat", [f"past_key_values.{i}.{kind}", new], [f"present.{i}.{kind}"], axis=2))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", ftype, [1, KVH, f"P{i}+1", HD]))
    _float_sum(nodes, "present.1.key", "s_k1")
    _float_sum(nodes, "present.0.value", "s_v0")
    _position_sum(nodes, "position_ids", "s_pos")
    nodes += [
        _const("three", np.array(3, dtype=np.int64)),
        helper.make_node("ReduceSum", ["input_ids"], ["tok"], keepdims=0),
        helper.make_node("Mul", ["tok", "three"], ["s_tok"]),
        helper.make_node("Add", ["s_k1", "s_v0"], ["a1"]),
        helper.make_node("Add", ["a1", "s_pos"], ["a2"]),
        helper.make_node("Add", ["a2", "s_tok"], ["target"]),
    ]
    _target_logits(nodes, "target", "logits")
    return _model(nodes, inputs, outputs, [table])


# ---------------------------------------------------------------- build directory
DEFAULT_BUCKETS = (ToyBucket(8, 112, 112), ToyBucket(4, 112, 224), ToyBucket(16, 112, 112, usable=False))


def write_toy_build(
    out: Path,
    *,
    buckets: tuple[ToyBucket, ...] = DEFAULT_BUCKETS,
    precision: str = "fp32",
    eos: int | list[int] = EOS,
    max_text: int = 128,
) -> Path:
    """Write a complete build directory at ``out`` (manifest last) and return ``out``."""
    from ffexport.models.tiny_tokenizer import build_tiny_tokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ftype = TensorProto.FLOAT16 if precision == "fp16" else TensorProto.FLOAT
    w = _Weights()
    graphs = {"embed.onnx": embed_graph(w, ftype), "decode.onnx": decode_graph(w, ftype)}
    bucket_entries = []
    for b in buckets:
        graphs[f"{b.name}.vision.onnx"] = vision_graph(w, ftype, b)
        graphs[f"{b.name}.prefill.onnx"] = prefill_graph(ftype)
        (out / b.name).mkdir(exist_ok=True)
        (out / b.name / "schedule.json").write_text(json.dumps({"format": "ffexport.schedule/1", "stages": []}))
        (out / b.name / "parity.json").write_text(json.dumps({"passed": b.usable}))
        t, h, wd = b.grid
        bucket_entries.append({
            "name": b.name, "frames": b.frames, "height": b.height, "width": b.width,
            "resized": [b.height, b.width], "grid_thw": [t, h, wd], "visual_tokens": b.visual_tokens,
            "patches_per_frame": h * wd // MERGE**2, "schedule": {"format": "ffexport.schedule/1"},
            "graphs": {"vision": {"file": f"{b.name}.vision.onnx"}, "prefill": {"file": f"{b.name}.prefill.onnx"}},
            "parity": {"file": f"{b.name}/parity.json", "passed": b.usable, "validated": True},
            "usable": b.usable,
        })
    for name, model in graphs.items():
        onnx.save_model(model, str(out / name))
    (out / "weights.bin").write_bytes(bytes(w.blob))
    build_tiny_tokenizer().save_pretrained(str(out / "tokenizer"))
    files = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"):
        data = path.read_bytes()
        files[path.relative_to(out).as_posix()] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {
        "format": "ffexport.manifest/1",
        "created": "2026-11-23T22:00:00Z",
        "model": {"name": "toy", "family": "qwen2_vl", "source": "hand-written test graphs", "num_layers": LAYERS,
                  "hidden_size": D, "vocab_size": V, "num_kv_heads": KVH, "head_dim": HD, "video_token_id": VIDEO,
                  "vision_start_token_id": 259, "vision_end_token_id": 260, "eos_token_id": eos,
                  "spatial_merge_size": MERGE, "patch_size": PATCH, "temporal_patch_size": TPATCH,
                  "video_pixels": [3136, 50176]},
        "precision": precision,
        "max_text": max_text,
        "tokenizer": "tokenizer",
        "graphs": {"embed": {"file": "embed.onnx"}, "decode": {"file": "decode.onnx"}},
        "buckets": bucket_entries,
        "files": files,
        "tools": {"ffexport": "test"},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


# ---------------------------------------------------------------- what the runtime must produce
def oracle(input_ids: np.ndarray, pixels: np.ndarray, grid: np.ndarray, max_new_tokens: int,
           eos: set[int] = frozenset({EOS})) -> tuple[np.ndarray, list[int]]:
    """Prefill logits and greedy tokens of the toy model, computed independently in numpy (int64)."""
    ids = np.asarray(input_ids).reshape(-1)
    length = ids.size
    start = int(np.flatnonzero(ids == VIDEO)[0])
    n = int(np.count_nonzero(ids == VIDEO))
    table = embedding_table().astype(np.int64)
    embeds = table[ids]
    features = np.asarray(pixels).reshape(n, -1).astype(np.float64) @ vision_weights().astype(np.float64)
    embeds[start:start + n] = np.rint(features).astype(np.int64)
    positions, delta = mrope_position_ids(ids, grid, video_token_id=VIDEO, spatial_merge_size=MERGE)
    target = int(embeds.sum() + (positions * AXIS_WEIGHTS).sum() + 7 * start)
    logits = -np.abs(np.arange(V) - target % V).astype(np.float32)[None]
    caches = [[embeds[d:, :HD], embeds[d:, HD:]] for d in DROP]  # per layer: key rows, value rows
    tokens: list[int] = []
    step_logits = logits
    for k in range(max_new_tokens):
        token = int(step_logits[0].argmax())
        tokens.append(token)
        if token in eos or k == max_new_tokens - 1:
            break
        row = table[token]
        caches = [[np.vstack([key, row[None, :HD]]), np.vstack([value, row[None, HD:]])] for key, value in caches]
        position = length + k + delta
        target = int(caches[1][0].sum() + caches[0][1].sum() + 6 * position + 3 * token)
        step_logits = -np.abs(np.arange(V) - target % V).astype(np.float32)[None]
    return logits, tokens


def toy_case(bucket: ToyBucket, text: str = "what happens?", seed: int = 0):
    """A case for ``bucket`` with integer pixels (0 or 1), so the oracle is exact."""
    from ffexport.case import Case
    from ffexport.models.tiny_tokenizer import build_tiny_tokenizer
    from ffexport.prompt import build_video_prompt_ids

    t, h, w = bucket.grid
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 2, size=(t * h * w, PATCH_DIM)).astype(np.float32)
    ids = build_video_prompt_ids(build_tiny_tokenizer(), num_video_tokens=bucket.visual_tokens, prompt=text)
    return Case(ids, pixels, np.array([[t, h, w]], dtype=np.int64))
