"""Run a build with ONNX Runtime: pick a bucket, prepare a video and a prompt, generate greedily.

::

    from ffexport.runtime import Runtime

    rt = Runtime("build/")                       # checks the manifest and the files it lists
    rt.buckets                                   # ('8x112x112',): the usable buckets' names
    result = rt.run_video("clip.mp4", "What happens?", max_new_tokens=64)
    print(result.text)

    # or step by step
    bucket = rt.pick_bucket(num_frames=120, height=360, width=640)
    case = rt.prepare_video(frames, "What happens?", bucket=bucket)    # uint8 [T, H, W, 3] -> Case
    result = rt.generate(case, max_new_tokens=64)                        # Result(logits, generated_ids, text)

Steps of :meth:`Runtime.generate` (graph names and shapes: ``docs/build-format.md``): ``embed`` on
``input_ids``, the bucket's ``vision`` graph on the pixels, the features written over the video
tokens in order (one span, or the bucket's frame blocks with text between them: ``frame_blocks``),
the bucket's ``prefill`` (with the vision graph's DeepStack levels, Qwen3-VL) with M-RoPE positions (:mod:`ffexport.mrope`, with the temporal step the
manifest records: 1 for Qwen2-VL, ``seconds_per_grid * tokens_per_second`` for Qwen2.5-VL), then greedy decoding
with the bucket's static decode graph (caches preallocated and updated in place through IO binding,
:mod:`ffexport.runtime.kv_cache`) or, in builds without one, ``decode`` (each step's ``present.*`` fed
back as ``past_key_values.*``), generated token ``k`` at position ``L + k + delta``, until an EOS
token or the token budget. The first generated token is
the argmax of the prefill logits.

This module imports neither torch nor transformers; ONNX Runtime sessions are created on first
use and cached.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ffexport.case import Case
from ffexport.errors import InputError, RunError
from ffexport.mrope import block_position_ids, mrope_position_ids, video_spans
from ffexport.runtime.defaults import DEFAULT_MAX_NEW_TOKENS
from ffexport.runtime.manifest import REBUILD, Bucket, Manifest, ModelFacts, check_bytes, load_manifest
from ffexport.runtime.tokenizer import BuildTokenizer
from ffexport.runtime.video import probe_video, read_video, sample_frames

log = logging.getLogger(__name__)


#: What runs the graphs: ONNX Runtime on the .onnx files, or TensorRT on the engines built from them.
BACKENDS = ("onnxruntime", "tensorrt")

#: A bucket fits a video when their aspect ratios (width / height) differ by at most this factor.
ASPECT_TOLERANCE = 1.25

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
                "tensor(int32)": np.int32, "tensor(double)": np.float64}

# Inputs every graph of the format must take (decode also takes past_key_values.{i}.key/value).
_GRAPH_INPUTS = {
    "embed": ("input_ids",),
    "vision": ("pixel_values_videos",),
    "prefill": ("inputs_embeds", "position_ids", "video_start"),
    "decode": ("input_ids", "position_ids"),
}
_PAST, _PRESENT = "past_key_values.", "present."
#: the vision graph's second output and the prefill graph's fourth input in Qwen3-VL builds (DeepStack levels)
_DEEPSTACK = "deepstack_features"


def position_ids(model: ModelFacts, input_ids: np.ndarray, video_grid_thw: np.ndarray | None) -> tuple[np.ndarray, int]:
    """The prefill's position ids [3, L] and the delta for generated tokens, by the rule the build
    recorded (``model.positions``: M-RoPE with the family's temporal step, :mod:`ffexport.mrope`;
    ``mrope_blocks``: M-RoPE with every frame block a ``(1, h, w)`` grid, Qwen3-VL; or 1D: ``arange(L)``
    on all three rows, delta 0)."""
    if model.position_rule == "1d":
        length = np.asarray(input_ids).shape[-1]
        return np.broadcast_to(np.arange(length, dtype=np.int64), (3, length)).copy(), 0
    if model.position_rule == "mrope_blocks":  # Qwen3-VL: one (1, h, w) grid per frame block
        return block_position_ids(input_ids, video_grid_thw, video_token_id=model.video_token_id,
                                  spatial_merge_size=model.spatial_merge_size)
    return mrope_position_ids(input_ids, video_grid_thw, video_token_id=model.video_token_id,
                              spatial_merge_size=model.spatial_merge_size, temporal_step=model.temporal_step)


@dataclass(frozen=True)
class Result:
    """The answer to one case."""

    logits: np.ndarray  # [1, V] float32: the prefill's last position
    generated_ids: np.ndarray  # [1, n] int64, greedy; ends with the EOS token when one was generated
    text: str  # generated_ids decoded, special tokens skipped
    bucket: str  # the bucket that ran

    def arrays(self) -> dict[str, np.ndarray]:
        """What ``ffexport run --out`` saves (the same names as ``ffexport reference``)."""
        return {"logits": self.logits, "generated_ids": self.generated_ids}


class Runtime:
    """A build directory ready to run with ONNX Runtime.

    ``providers``: ONNX Runtime execution providers in order of preference (default: CUDA when this
    onnxruntime has it, then CPU). ``verify`` (default) also checks the SHA-256 of ``weights.bin`` and
    the engines, recorded at build time (the graphs' digests and every size are always checked); a
    repeat start of an unchanged build uses the recorded result (runtime/manifest.py).
    ``verify=False`` skips it (a start in milliseconds instead of about 1 s per 1.5 GB of weights).
    """

    def __init__(
        self,
        build_dir: str | os.PathLike[str],
        *,
        providers: Sequence[str] | None = None,
        verify: bool = True,
        backend: str = "onnxruntime",
        plugins: Sequence[str | os.PathLike[str]] = (),
    ) -> None:
        if backend not in BACKENDS:
            raise InputError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        self.manifest: Manifest = load_manifest(build_dir, verify=verify)
        self.backend = backend
        self.plugins = tuple(plugins)
        self.providers = _resolve_providers(providers) if backend == "onnxruntime" else []
        self._tokenizer: BuildTokenizer | None = None
        self._graphs: dict[str, _Graph] = {}

    # ------------------------------------------------------------------ buckets
    @property
    def buckets(self) -> tuple[str, ...]:
        """Names of the buckets this build offers (usable ones only), in manifest order."""
        return tuple(b.name for b in self.manifest.buckets)

    def bucket(self, name: str | Bucket) -> Bucket:
        """The usable bucket called ``name`` (a :class:`Bucket` passes through after a check)."""
        return self.manifest.bucket(name.name if isinstance(name, Bucket) else name)

    def pick_bucket(self, num_frames: int, height: int, width: int) -> Bucket:
        """The bucket for a video of ``num_frames`` frames of ``height`` x ``width`` pixels.

        Rule: among usable buckets whose frame aspect ratio (width / height, after resizing) is within
        25% of the video's (the larger ratio over the smaller at most 1.25), take the one with the
        most frames not above ``num_frames`` (no frame is repeated); when every candidate needs more
        frames than the video has, the one with the fewest frames (frames will repeat). Ties go to
        the closer aspect ratio, then to manifest order. No candidate: :class:`InputError` listing
        the buckets.
        """
        if min(num_frames, height, width) < 1:
            raise InputError(f"a video needs at least one frame and a positive size, got {num_frames} frames "
                             f"of {height}x{width}")
        aspect = width / height
        distance = {b.name: abs(math.log(b.aspect / aspect)) for b in self.manifest.buckets}
        candidates = [b for b in self.manifest.buckets if distance[b.name] <= math.log(ASPECT_TOLERANCE) + 1e-12]
        if not candidates:
            raise InputError(
                f"no bucket of {self.manifest.root} fits a video of {num_frames} frames at {height}x{width} "
                f"(aspect {aspect:.2f}; a bucket's must be within 25%); buckets: {self.manifest.describe_buckets()}; "
                "build a bucket of this shape with `ffexport build --bucket FRAMESxHEIGHTxWIDTH`"
            )
        order = {b.name: i for i, b in enumerate(self.manifest.buckets)}
        fitting = [b for b in candidates if b.frames <= num_frames]
        if fitting:
            return min(fitting, key=lambda b: (-b.frames, distance[b.name], order[b.name]))
        return min(candidates, key=lambda b: (b.frames, distance[b.name], order[b.name]))

    # ------------------------------------------------------------------ inputs
    @property
    def tokenizer(self) -> BuildTokenizer:
        if self.manifest.tokenizer_file is None:
            raise InputError(f"{self.manifest.root} has no tokenizer (built without one: synthetic prompt ids), so it "
                             "cannot tokenize a prompt; run it on a prepared case (--inputs CASE.npz)")
        if self._tokenizer is None:
            self._tokenizer = BuildTokenizer(self.manifest.tokenizer_file)
        return self._tokenizer

    def prepare_video(self, frames: np.ndarray, prompt: str, bucket: str | Bucket | None = None) -> Case:
        """Turn uint8 RGB frames ``[T, H, W, 3]`` and a prompt into a :class:`Case` for ``bucket``.

        Without ``bucket`` one is picked (:meth:`pick_bucket`). The frames are sampled to the
        bucket's count (repeated, with a warning, when the video is shorter), resized to the
        bucket's size and patchified like the Qwen2-VL processor; the prompt becomes the chat
        prompt around the video span.
        """
        from ffexport.prompt import build_video_prompt_ids, group_timestamps, timestamped_video_prompt_ids
        from ffexport.video import preprocess_video

        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1 or frames.dtype != np.uint8:
            raise InputError(f"frames must be uint8 RGB [T, H, W, 3] with T >= 1, got {frames.dtype} {list(frames.shape)}")
        total, height, width = frames.shape[:3]
        b = self.bucket(bucket) if bucket is not None else self.pick_bucket(total, height, width)
        sampled, repeated = sample_frames(frames, b.frames)
        if repeated:
            log.warning("video has %d frames; bucket %s needs %d: frames repeated", total, b.name, b.frames)
        m = self.manifest.model
        if m.position_rule == "1d":  # a fixed-size tower (LLaVA-NeXT-Video, LLaVA-OneVision)
            case = self._fixed_tower_case(sampled, prompt, b)
            self._check_text_length(case, b.visual_tokens)
            return case
        norm = {} if m.video_input is None else {"image_mean": m.video_input["mean"], "image_std": m.video_input["std"]}
        pixels, grid = preprocess_video(sampled, patch_size=m.patch_size, temporal_patch_size=m.temporal_patch_size,
                                        merge_size=m.spatial_merge_size, size=b.resized, **norm)
        if tuple(int(x) for x in grid.reshape(-1)) != b.grid_thw:
            raise InputError(f"bucket {b.name}: frames resized to {b.resized} give the patch grid {grid.reshape(-1).tolist()}, "
                             f"the manifest says {list(b.grid_thw)}: {REBUILD}")
        try:
            if m.video_input is not None:  # Qwen3-VL: one block per temporal group, its timestamp before it
                stamps = group_timestamps(np.arange(len(sampled)), m.video_input["fps"], m.temporal_patch_size)
                ids = timestamped_video_prompt_ids(self.tokenizer, tokens_per_block=b.visual_tokens // b.grid_thw[0],
                                                   timestamps=stamps, prompt=prompt)
            else:
                ids = build_video_prompt_ids(self.tokenizer, num_video_tokens=b.visual_tokens, prompt=prompt)
        except ValueError as e:
            raise InputError(f"cannot build the prompt: {e}") from e
        case = Case(ids.astype(np.int64), pixels, grid.reshape(1, 3).astype(np.int64))
        self._check_text_length(case, b.visual_tokens)
        log.debug("prepared %d frames for bucket %s: %d prompt tokens", total, b.name, ids.shape[1])
        return case

    def _fixed_tower_case(self, frames: np.ndarray, prompt: str, bucket: Bucket) -> Case:
        """Frames at the tower's size (the manifest's ``frame_preprocess``) and the family's chat template
        around the video tokens, tokenized in one piece with the tokenizer's special tokens (as the
        family's processor does; ffexport/models/llava_style.py)."""
        from ffexport.video.fixed import FixedFramePreprocess

        m = self.manifest.model
        pre = m.frame_preprocess
        pixels = FixedFramePreprocess(int(pre["size"]), mode=pre["mode"], mean=tuple(pre["mean"]), std=tuple(pre["std"]),
                                      resample=pre["resample"])(frames)
        if bucket.pixel_shape is not None:  # the family's case layout (InternVL: [T, C, S, S], the image path)
            pixels = pixels.reshape(bucket.pixel_shape)
        before, after = m.prompt_template
        token = self.tokenizer.convert_ids_to_tokens(m.video_token_id)
        count = bucket.visual_tokens + m.trailing_video_tokens  # OneVision: the frames' tokens, then its newline
        if m.video_text is not None and bucket.frame_blocks is not None:  # text between frame blocks
            video = m.video_text.text(token, [tokens for _, tokens in bucket.frame_blocks])
        else:
            video = token * count
        text = before + video + after.format(prompt=prompt)
        ids = np.asarray(self.tokenizer.encode(text, add_special_tokens=True), dtype=np.int64).reshape(1, -1)
        if int(np.count_nonzero(ids == m.video_token_id)) != count:
            raise InputError(f"cannot build the prompt: the build's tokenizer does not keep {token!r} as one token: "
                             f"{REBUILD}")
        case = Case(ids, pixels, None, attention_mask=np.ones_like(ids))
        if bucket.frame_blocks is not None and _blocks(case, m.video_token_id) != bucket.frame_blocks:
            raise InputError(f"cannot build the prompt: the build's tokenizer writes the text between frames in other "
                             f"lengths than the graphs take ({_blocks(case, m.video_token_id)} vs "
                             f"{list(bucket.frame_blocks)}): {REBUILD}")
        return case

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        case: Case,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        *,
        bucket: str | Bucket | None = None,
    ) -> Result:
        """Prefill ``case`` and decode up to ``max_new_tokens`` tokens greedily (0: prefill only).

        The case's ``video_grid_thw`` must equal a usable bucket's grid (``bucket`` picks among
        buckets of the same grid; default: the first). Raises :class:`InputError` for a case this
        build cannot take (no bucket for its grid, too much text, NaN or infinite pixels, ids out of
        the vocabulary, a malformed video span).
        """
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
            raise InputError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
        b = self._check_case(case, bucket)
        m = self.manifest.model
        ids = case.input_ids
        length = ids.shape[1]
        # the video tokens (one run, or frame blocks with text between: checked against the bucket's)
        rows = np.flatnonzero(ids[0] == m.video_token_id)
        start, video = int(rows[0]), int(rows.size)

        t0 = time.perf_counter()
        embeds = self._graph("embed", self.manifest.graphs["embed"]).run(input_ids=ids)["inputs_embeds"]
        vision = self._graph("vision", b.vision, b.name).run(pixel_values_videos=case.pixel_values_videos)
        features = vision["video_features"]
        if embeds.shape != (1, length, m.hidden_size) or features.shape != (video, m.hidden_size):
            raise RunError(f"the graphs of {self.manifest.root} returned embeddings {list(embeds.shape)} and video features "
                             f"{list(features.shape)} for {length} tokens ({video} video): {REBUILD}")
        embeds = np.array(embeds, copy=True)
        embeds[0, rows] = features.astype(embeds.dtype, copy=False)
        positions, delta = position_ids(m, ids, case.video_grid_thw)
        # Qwen3-VL: the vision graph's DeepStack levels go to the prefill graph as they are
        deepstack = {k: vision[k] for k in (_DEEPSTACK,) if k in vision}
        out = self._graph("prefill", b.prefill, b.name).run(inputs_embeds=embeds, position_ids=positions,
                                                     video_start=np.array(start, dtype=np.int64), **deepstack)
        logits = np.asarray(out["logits"], dtype=np.float32).reshape(1, -1)
        t1 = time.perf_counter()
        log.info("bucket %s: prefill of %d tokens (%d video) in %.0f ms", b.name, length, video, 1000 * (t1 - t0))

        tokens = self._decode(logits, _presents(out), max_new_tokens, first_position=length + delta, bucket=b)
        if tokens:
            t2 = time.perf_counter()
            log.info("generated %d tokens in %.0f ms (%.1f tokens/s)", len(tokens), 1000 * (t2 - t1),
                     len(tokens) / max(t2 - t1, 1e-9))
        generated = np.array(tokens, dtype=np.int64).reshape(1, -1)
        text = self.tokenizer.decode(tokens) if tokens and self.manifest.tokenizer_file is not None else ""
        return Result(logits=logits, generated_ids=generated, text=text, bucket=b.name)

    def run_video(
        self,
        path: str | os.PathLike[str],
        prompt: str,
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        bucket: str | Bucket | None = None,
    ) -> Result:
        """Read a video file, pick a bucket (unless given), and answer ``prompt`` about the video.

        Only the frames the bucket needs are kept while decoding the file.
        """
        self.tokenizer  # noqa: B018 (a build without a tokenizer refuses before reading the video)
        info = probe_video(path)
        b = self.bucket(bucket) if bucket is not None else self.pick_bucket(info.frames, info.height, info.width)
        log.info("%s: %d frames of %dx%d -> bucket %s", path, info.frames, info.height, info.width, b.name)
        frames = read_video(path, wanted=b.frames)
        if info.frames < b.frames:
            log.warning("video has %d frames; bucket %s needs %d: frames repeated", info.frames, b.name, b.frames)
        case = self.prepare_video(frames, prompt, b)
        return self.generate(case, max_new_tokens, bucket=b)

    # ------------------------------------------------------------------ internals
    def _decode(self, logits: np.ndarray, presents: dict[str, np.ndarray], budget: int, *, first_position: int,
                bucket: Bucket | None = None) -> list[int]:
        """Greedy tokens: the first from the prefill logits, each next one from the bucket's static decode
        graph (caches preallocated and updated in place: :mod:`ffexport.runtime.kv_cache`) when the build
        has one and ONNX Runtime runs it, else from ``decode.onnx`` (every cache back through numpy)."""
        eos = set(self.manifest.model.eos_token_ids)
        tokens: list[int] = []
        static = self._static_decoder(bucket, presents) if budget > 1 else None
        if static is not None and static.room() < budget - 1:  # more tokens asked than the build sized for
            static = None
        for k in range(budget):
            token = int(np.argmax(logits[0]))
            tokens.append(token)
            if token in eos or k == budget - 1:
                break
            if static is not None:
                logits = static.step(token, first_position + k)
                continue
            decode = self._graph("decode", self.manifest.graphs["decode"])
            feeds: dict[str, np.ndarray] = {
                "input_ids": np.array([[token]], dtype=np.int64),
                "position_ids": np.full((3, 1), first_position + k, dtype=np.int64),
            }
            feeds.update({_PAST + name: value for name, value in presents.items()})
            out = decode.run(**feeds)
            logits, presents = out["logits"], _presents(out)
        return tokens

    def _static_decoder(self, bucket: Bucket | None, presents: dict[str, np.ndarray]):
        """The bucket's :class:`~ffexport.runtime.kv_cache.StaticCacheDecoder` (one per bucket, reused across
        prompts), started on ``presents``; None without a static decode graph or on another backend."""
        if bucket is None or bucket.decode_static is None or self.backend != "onnxruntime":
            return None
        from ffexport.runtime.kv_cache import StaticCacheDecoder

        key = "static decode " + bucket.decode_static
        decoder = self._graphs.get(key)
        if decoder is None:
            graph = _Graph(self.manifest, bucket.decode_static, "decode", self.providers)
            device = "cuda" if graph.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
            decoder = StaticCacheDecoder(graph.session, bucket.cache_capacities, device=device)
            self._graphs[key] = decoder
        decoder.start(presents)
        return decoder

    def _check_case(self, case: Case, bucket: str | Bucket | None) -> Bucket:
        if not isinstance(case, Case):
            raise InputError(f"expected an ffexport.case.Case, got {type(case).__name__}")
        m = self.manifest.model
        if not np.isfinite(case.pixel_values_videos).all():
            raise InputError("pixel_values_videos contains NaN or infinite values")
        if m.position_rule == "1d":
            b = self._fixed_tower_bucket(case, bucket)
        else:
            b = self._grid_bucket(case, bucket)
        ids = case.input_ids
        if int(ids.min()) < 0 or int(ids.max()) >= m.vocab_size:
            raise InputError(f"input_ids hold token ids outside the model's vocabulary [0, {m.vocab_size})")
        self._check_text_length(case, b.visual_tokens)
        return b

    def _fixed_tower_bucket(self, case: Case, bucket: str | Bucket | None) -> Bucket:
        """The bucket of a fixed-size-tower case: its frame count (pixels as the vision graph takes them:
        ``[1, T, C, S, S]``, InternVL's ``[T, C, S, S]``) and its video tokens (one span, or the bucket's
        frame blocks)."""
        m = self.manifest.model
        pixels, size = case.pixel_values_videos, int(m.frame_preprocess["size"])
        # the vision graphs' input rank: 5 ([1, T, C, S, S]) unless the build records InternVL's 4 ([T, C, S, S])
        ndim = min((len(b.pixel_shape) for b in self.manifest.all_buckets if b.pixel_shape is not None), default=5)
        if pixels.ndim != ndim or pixels.shape[:-4] != (1,) * (ndim - 4) or tuple(pixels.shape[-3:]) != (3, size, size):
            wanted = ", ".join(["1"] * (ndim - 4) + ["frames", "3", str(size), str(size)])
            raise InputError(f"{_pixels_name(ndim)} must have shape [{wanted}] for this build, got {list(pixels.shape)}")
        frames = pixels.shape[-4]
        candidates = [self.bucket(bucket)] if bucket is not None else self.manifest.buckets
        b = next((c for c in candidates if c.frames == frames), None)
        if b is None:
            raise InputError(f"the case has {frames} frames; no usable bucket of {self.manifest.root} takes that many: "
                             f"{self.manifest.describe_buckets()}")
        if b.frame_blocks is not None:
            blocks = _blocks(case, m.video_token_id)
            if blocks != b.frame_blocks:
                raise InputError(f"the case's video tokens sit in the frame blocks {list(blocks)} ([offset, tokens]); "
                                 f"bucket {b.name}'s graphs take {list(b.frame_blocks)} (the family's text between "
                                 "frames, tokenized by the build's tokenizer)")
            return b
        start, end = case.video_span(m.video_token_id)
        count = b.visual_tokens + m.trailing_video_tokens
        if end - start != count:
            raise InputError(f"the video span in input_ids has {end - start} tokens; {frames} frames give {count}")
        return b

    def _grid_bucket(self, case: Case, bucket: str | Bucket | None) -> Bucket:
        m = self.manifest.model
        if m.position_rule == "mrope_blocks":  # Qwen3-VL: one run of video tokens per temporal group
            self._check_block_case(case)
        else:
            case.check(video_token_id=m.video_token_id, spatial_merge_size=m.spatial_merge_size, patch_dim=m.patch_dim)
        grid = case.grid
        if bucket is not None:
            b = self.bucket(bucket)
            if b.grid_thw != grid:
                raise InputError(f"the case's video grid {_grid(grid)} is not bucket {b.name}'s ({_grid(b.grid_thw)})")
        else:
            matches = [b for b in self.manifest.buckets if b.grid_thw == grid]
            if not matches:
                listing = ", ".join(f"{b.describe()} grid {_grid(b.grid_thw)}" for b in self.manifest.all_buckets) or "none"
                raise InputError(f"the case's video grid {_grid(grid)} matches no usable bucket of {self.manifest.root}; "
                                 f"buckets: {listing}")
            b = matches[0]
        if b.frame_blocks is not None and _blocks(case, m.video_token_id) != b.frame_blocks:
            raise InputError(f"the case's video tokens sit in the frame blocks {list(_blocks(case, m.video_token_id))} "
                             f"([offset, tokens]); bucket {b.name}'s graphs take {list(b.frame_blocks)} (the text "
                             "between blocks, tokenized by the build's tokenizer)")
        return b

    def _check_block_case(self, case: Case) -> None:
        """A grid case whose video is one frame block per temporal group: a valid grid, pixels of its size,
        and ``t`` runs of ``h*w/merge**2`` video tokens."""
        m = self.manifest.model
        t, h, w = case.grid
        merge = m.spatial_merge_size
        if min(t, h, w) <= 0 or h % merge or w % merge:
            raise InputError(f"video_grid_thw {t}x{h}x{w} is not a valid grid for {merge}x{merge} patch merging")
        if case.pixel_values_videos.shape != (t * h * w, m.patch_dim):
            raise InputError(f"pixel_values_videos has shape {list(case.pixel_values_videos.shape)}; video_grid_thw "
                             f"{t}x{h}x{w} needs [{t * h * w}, {m.patch_dim}]")
        runs = [tokens for _, tokens in _blocks(case, m.video_token_id)]
        if runs != [h * w // merge**2] * t:
            raise InputError(f"input_ids hold video token runs of {runs}; video_grid_thw {t}x{h}x{w} gives {t} blocks "
                             f"of {h * w // merge**2}")

    def _check_text_length(self, case: Case, visual_tokens: int) -> None:
        text = case.input_ids.shape[1] - visual_tokens
        if text > self.manifest.max_text:
            raise InputError(f"prompt is {text} tokens; this build takes at most {self.manifest.max_text}")
        if text < 1:
            raise InputError("the case has no text tokens around the video")

    def _graph(self, kind: str, relative: str, bucket: str | None = None):
        """The session for one graph: ONNX Runtime over the ``.onnx`` file, or (backend ``tensorrt``)
        the engine built from it, after checking it was built for this TensorRT and GPU."""
        graph = self._graphs.get(relative)
        if graph is None:
            if self.backend == "tensorrt":
                from ffexport.runtime.engines import EngineGraph, engine_record

                graph = EngineGraph(self.manifest, engine_record(self.manifest, kind, bucket), plugins=self.plugins)
            else:
                plugins = any(b.prefill == relative and b.prefill_plugins for b in self.manifest.all_buckets)
                graph = _Graph(self.manifest, relative, kind, self.providers, plugins=plugins)
            self._graphs[relative] = graph
        return graph


class _Graph:
    """One ONNX Runtime session over a graph file of the build, loaded from the checked bytes."""

    def __init__(self, manifest: Manifest, relative: str, kind: str, providers: Sequence[str], *,
                 plugins: bool = False) -> None:
        import onnxruntime as ort

        path = manifest.path(relative)
        data = check_bytes(manifest, relative, path.read_bytes())
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only; warnings would clutter the one-line CLI output
        # The graph was read from bytes: tell ONNX Runtime where its external data (weights.bin) lives.
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(path.parent))
        if plugins:  # FrameFusion plugin nodes (--ops plugin): numpy kernels through onnxruntime-extensions
            from ffexport.runtime.plugins import session_options

            session_options(options)
        t0 = time.perf_counter()
        try:
            self.session = ort.InferenceSession(data, sess_options=options, providers=list(providers))
        except Exception as e:  # onnxruntime's errors (Fail, InvalidProtobuf, ...) derive from Exception only
            raise RunError(f"ONNX Runtime cannot load {path} ({_one_line(e)}): {REBUILD}") from e
        log.debug("loaded %s in %.0f ms (%s)", path, 1000 * (time.perf_counter() - t0), ", ".join(self.session.get_providers()))
        self.path = path
        self.inputs = {i.name: _NUMPY_TYPES.get(i.type) for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        missing = [n for n in _GRAPH_INPUTS[kind] if n not in self.inputs]
        if kind == "decode" and not any(n.startswith(_PAST) for n in self.inputs):
            missing.append(_PAST + "*")
        if missing:
            raise RunError(f"{path} lacks the inputs {', '.join(missing)} of a {kind} graph: {REBUILD}")

    def run(self, **feeds: np.ndarray) -> dict[str, np.ndarray]:
        missing = sorted(set(self.inputs) - set(feeds))
        extra = sorted(set(feeds) - set(self.inputs))
        if missing or extra:
            raise RunError(f"{self.path} takes inputs {', '.join(self.inputs)}; the runtime has "
                             f"{', '.join(feeds)}: {REBUILD}")
        typed = {name: np.ascontiguousarray(value, dtype=self.inputs[name]) for name, value in feeds.items()}
        try:
            values = self.session.run(self.outputs, typed)
        except Exception as e:  # onnxruntime's errors derive from Exception only
            shapes = ", ".join(f"{name} {list(value.shape)}" for name, value in typed.items() if not name.startswith(_PAST))
            raise RunError(f"ONNX Runtime failed running {self.path} on {shapes} ({_one_line(e)}); "
                             f"if the build was modified, {REBUILD}") from e
        return dict(zip(self.outputs, values))


def _blocks(case: Case, video_token_id: int) -> tuple[tuple[int, int], ...]:
    """The runs of video tokens in ``case.input_ids`` as ``(offset from the first, tokens)``."""
    spans = video_spans(case.input_ids, video_token_id)
    if not spans:
        raise InputError(f"input_ids hold no video token (id {video_token_id})")
    first = spans[0][0]
    return tuple((start - first, end - start) for start, end in spans)


def _pixels_name(ndim: int) -> str:
    """The processor's name for a case's frames: InternVL's image path returns ``pixel_values``."""
    return "pixel_values_videos" if ndim == 5 else "pixel_values"


def _presents(outputs: dict[str, Any]) -> dict[str, np.ndarray]:
    """``present.{i}.key`` -> ``{i}.key`` (the suffix the next step's ``past_key_values.`` takes)."""
    return {name[len(_PRESENT):]: value for name, value in outputs.items() if name.startswith(_PRESENT)}


def _resolve_providers(providers: Sequence[str] | None) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if providers is None:
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    chosen = list(providers)
    unknown = [p for p in chosen if p not in available]
    if unknown or not chosen:
        raise InputError(f"ONNX Runtime here has no provider {', '.join(unknown) or '(none given)'}; "
                         f"available: {', '.join(available)}")
    return chosen


def _grid(grid: Sequence[int]) -> str:
    return "x".join(str(int(x)) for x in grid)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]
