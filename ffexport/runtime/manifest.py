"""Read and check a build directory's ``manifest.json`` (format ``ffexport.manifest/1``).

:func:`load_manifest` is the only way the runtime learns about a build. It refuses, with one
:class:`~ffexport.errors.InputError` line naming the file, anything that makes the build unsafe to
run: no directory or no ``manifest.json`` (a build writes it last, so without it the build did not
finish), JSON that does not parse, another format, missing fields, and any file listed under
``"files"`` that is missing or has the wrong size. SHA-256 digests are checked for the graphs
(``*.onnx``) and the tokenizer files on every load (they are small) and for every other file,
``weights.bin`` included, with ``verify=True`` (what :class:`~ffexport.runtime.session.Runtime` and
``ffexport run`` do unless told ``--no-verify``). A verified file is remembered in
``.ffexport-verified.json`` by its stat (size, mtime, ctime, inode), so a repeat start does not hash
gigabytes again (:class:`_VerifiedCache` says what that trusts). ``weights.bin`` may be longer than
the manifest says: a build appends to it and commits by rewriting the manifest, so the bytes past
the committed length are not this build's (docs/build-format.md, "Commit protocol"); only the
committed bytes are checked.

Buckets whose ``usable`` flag is false (a graph failed its parity check, or could not be
validated) are kept in :attr:`Manifest.all_buckets` for error messages but never offered:
:attr:`Manifest.buckets` holds only the usable ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ffexport.errors import InputError
from ffexport.video_text import VideoText

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "ffexport.manifest/1"
MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "weights.bin"
REBUILD = "the build is corrupt or incomplete; rebuild it with `ffexport build`"

_HASH_CHUNK = 1 << 20

#: position rules the runtime knows (``model.positions.rule``): M-RoPE (ffexport/mrope.py), M-RoPE with
#: every frame block a (1, h, w) grid (``mrope_blocks``: Qwen3-VL) and 1D (``arange(L)`` on all three rows:
#: fixed-size towers, LLaVA-NeXT-Video)
POSITION_RULES = ("mrope", "1d", "mrope_blocks")
#: video prompts the runtime writes (``model.video_input.prompt``): Qwen3-VL's timestamp before each frame block
VIDEO_PROMPTS = ("timestamped_blocks",)


@dataclass(frozen=True)
class ModelFacts:
    """What the runtime needs to know about the exported model (``manifest["model"]``)."""

    name: str
    family: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    num_kv_heads: int
    head_dim: int
    video_token_id: int
    eos_token_ids: tuple[int, ...]
    spatial_merge_size: int
    patch_size: int
    temporal_patch_size: int
    #: how position ids are built (``model.positions``; builds without it: Qwen2-VL's M-RoPE, step 1)
    position_rule: str = "mrope"
    #: M-RoPE temporal index per grid step of a video (Qwen2.5-VL: seconds_per_grid * tokens_per_second)
    temporal_step: float = 1.0
    #: fixed-size towers (position rule "1d"): FixedFramePreprocess's settings and the chat template
    frame_preprocess: dict[str, Any] | None = None
    prompt_template: tuple[str, str] | None = None
    #: the text a processor writes around and between frame blocks (``model.video_text``; None: the
    #: video is one run of video tokens)
    video_text: VideoText | None = None
    #: video tokens after the last frame's (LLaVA-OneVision's learned newline: 1); text to FrameFusion
    trailing_video_tokens: int = 0
    #: Qwen3-VL (``model.video_input``): pixel mean/std and the timestamped frame-block prompt's fps
    video_input: dict[str, Any] | None = None

    @property
    def patch_dim(self) -> int:
        """Values per row of ``pixel_values_videos``: RGB x temporal patch x patch x patch."""
        return 3 * self.temporal_patch_size * self.patch_size**2


@dataclass(frozen=True)
class Bucket:
    """One static video shape of the build: its own vision and prefill graphs and schedule."""

    name: str
    frames: int
    height: int
    width: int
    resized: tuple[int, int]  # (height, width) every frame is resized to
    grid_thw: tuple[int, int, int]  # patch grid before merging
    visual_tokens: int
    patches_per_frame: int
    vision: str  # graph files, relative to the build directory
    prefill: str
    usable: bool
    parity_passed: bool | None
    #: FrameFusion plugin ops the prefill graph holds (``ffexport build --ops plugin``), by name
    prefill_plugins: tuple[str, ...] = ()
    #: the video's frame blocks ``(offset from the first video token, tokens)`` when text sits between them
    #: (``frame_blocks``: the prefill graph's fixed layout); None: one contiguous run
    frame_blocks: tuple[tuple[int, int], ...] | None = None
    #: the vision graph's input shape (the case's pixels), from the graph's recorded inputs
    pixel_shape: tuple[int, ...] | None = None
    #: the static decode graph (caches preallocated per layer, updated in place) and each layer's rows
    decode_static: str | None = None
    cache_capacities: tuple[int, ...] = ()

    @property
    def aspect(self) -> float:
        """Width over height of the frames the graphs see (after resizing)."""
        return self.resized[1] / self.resized[0]

    def describe(self) -> str:
        """E.g. ``8x112x112 (8 frames, 112x112)``, plus why it is not offered when unusable."""
        text = f"{self.name} ({self.frames} frames, {self.height}x{self.width})"
        if self.usable:
            return text
        return text + (" [not usable: failed its parity check]" if self.parity_passed is False
                       else " [not usable: not validated]")


@dataclass(frozen=True)
class FileEntry:
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """A checked build directory. Paths in it are relative to :attr:`root`."""

    root: Path
    model: ModelFacts
    precision: str
    max_text: int
    tokenizer_file: Path | None  # None: built without a tokenizer (synthetic prompt ids); cases only
    graphs: dict[str, str]  # "embed", "decode" -> file
    all_buckets: tuple[Bucket, ...]
    files: dict[str, FileEntry]
    raw: dict[str, Any]

    @property
    def buckets(self) -> tuple[Bucket, ...]:
        """The usable buckets, in manifest order."""
        return tuple(b for b in self.all_buckets if b.usable)

    def bucket(self, name: str) -> Bucket:
        """The usable bucket called ``name``; :class:`InputError` listing the buckets otherwise."""
        for b in self.all_buckets:
            if b.name == name:
                if not b.usable:
                    raise InputError(f"bucket {name} of {self.root} is not usable (its graphs did not pass the parity "
                                     f"check); buckets: {self.describe_buckets()}")
                return b
        raise InputError(f"{self.root} has no bucket {name!r}; buckets: {self.describe_buckets()}")

    def describe_buckets(self) -> str:
        return ", ".join(b.describe() for b in self.all_buckets) or "none"

    def path(self, relative: str) -> Path:
        return self.root / relative


def load_manifest(build_dir: str | os.PathLike[str], *, verify: bool = False) -> Manifest:
    """Read ``build_dir/manifest.json`` and check the files it lists (see the module docstring).

    ``verify=True`` also checks the SHA-256 of ``weights.bin`` and every other listed file.
    Raises :class:`InputError` (one line naming the file) for anything missing, truncated or altered.
    """
    root = Path(build_dir)
    if not root.is_dir():
        raise InputError(f"{root} is not a build directory (no such directory); build one with `ffexport build`")
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise InputError(f"{root} has no {MANIFEST_NAME}: {REBUILD}")
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{manifest_path} is not valid JSON ({_one_line(e)}): {REBUILD}") from e
    if not isinstance(raw, dict):
        raise InputError(f"{manifest_path} is not a JSON object: {REBUILD}")
    if raw.get("format") != MANIFEST_FORMAT:
        raise InputError(f"{manifest_path} has format {raw.get('format')!r}; this runtime reads {MANIFEST_FORMAT!r}: "
                         f"rebuild it with this version's `ffexport build`")
    reader = _Reader(manifest_path, raw)
    manifest = reader.manifest(root)
    _check_files(manifest, verify=verify)
    log.debug("build %s: model %s, %s, buckets %s", root, manifest.model.name, manifest.precision,
              ", ".join(b.name for b in manifest.buckets))
    return manifest


def sha256_of(path: Path, length: int | None = None) -> str:
    """SHA-256 of ``path``, or of its first ``length`` bytes."""
    digest = hashlib.sha256()
    left = length if length is not None else -1
    with open(path, "rb") as f:
        while left != 0 and (chunk := f.read(_HASH_CHUNK if left < 0 else min(_HASH_CHUNK, left))):
            digest.update(chunk)
            left = left - len(chunk) if left > 0 else left
    return digest.hexdigest()


def check_bytes(manifest: Manifest, relative: str, data: bytes) -> bytes:
    """Return ``data`` (a listed file's content) after checking its size and SHA-256 against the manifest."""
    entry = manifest.files[relative]
    if len(data) != entry.bytes or hashlib.sha256(data).hexdigest() != entry.sha256:
        raise InputError(f"{manifest.path(relative)} changed since the build was checked: {REBUILD}")
    return data


# ---------------------------------------------------------------- parsing
class _Reader:
    """Typed access to the manifest's fields; a missing or mistyped field is a corrupt build."""

    def __init__(self, path: Path, raw: dict[str, Any]) -> None:
        self.path = path
        self.raw = raw

    def fail(self, where: str, problem: str) -> InputError:
        return InputError(f"{self.path}: {where} {problem}: {REBUILD}")

    def get(self, obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
        if not isinstance(obj, dict) or key not in obj:
            raise self.fail(f"{where}.{key}" if where else key, "is missing")
        value = obj[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise self.fail(f"{where}.{key}" if where else key, f"has the wrong type ({type(value).__name__})")
        return value

    def positive(self, obj: dict[str, Any], key: str, where: str) -> int:
        value = self.get(obj, key, int, where)
        if value < 1:
            raise self.fail(f"{where}.{key}", f"must be positive, got {value}")
        return value

    def file(self, obj: dict[str, Any], where: str) -> str:
        name = self.get(obj, "file", str, where)
        return self.relative(name, f"{where}.file")

    def relative(self, name: str, where: str) -> str:
        p = PurePosixPath(name)
        if not name or p.is_absolute() or ".." in p.parts or "\\" in name:
            raise self.fail(where, f"names a path outside the build directory ({name!r})")
        return p.as_posix()

    def manifest(self, root: Path) -> Manifest:
        raw = self.raw
        model = self.model(self.get(raw, "model", dict, ""))
        precision = self.get(raw, "precision", str, "")
        max_text = self.positive(raw, "max_text", "")
        no_tokenizer = raw.get("tokenizer") is None and "prompt_ids" in raw  # a build without a tokenizer
        tokenizer_dir = None if no_tokenizer else self.relative(self.get(raw, "tokenizer", str, ""), "tokenizer")
        graphs_raw = self.get(raw, "graphs", dict, "")
        graphs = {name: self.file(self.get(graphs_raw, name, dict, "graphs"), f"graphs.{name}")
                  for name in ("embed", "decode")}
        buckets_raw = self.get(raw, "buckets", list, "")
        buckets = tuple(self.bucket(b, i) for i, b in enumerate(buckets_raw))
        names = [b.name for b in buckets]
        if len(set(names)) != len(names):
            raise self.fail("buckets", f"repeat a name ({', '.join(names)})")
        files_raw = self.get(raw, "files", dict, "")
        files = {self.relative(name, f"files[{name!r}]"): self.file_entry(entry, name)
                 for name, entry in files_raw.items()}
        needed = [*graphs.values(), *(f for b in buckets for f in (b.vision, b.prefill, b.decode_static) if f)]
        for name in needed:
            if name not in files:
                raise self.fail("files", f"does not list the graph {name}")
        tokenizer_file = None if tokenizer_dir is None else root / tokenizer_dir / "tokenizer.json"
        return Manifest(root=root, model=model, precision=precision, max_text=max_text,
                        tokenizer_file=tokenizer_file, graphs=graphs, all_buckets=buckets, files=files, raw=raw)

    def model(self, m: dict[str, Any]) -> ModelFacts:
        positions = self.positions(m.get("positions"))  # first: it says which facts the family has
        fixed = positions.get("position_rule") == "1d"
        eos = self.get(m, "eos_token_id", (int, list), "model")
        eos_ids = tuple(eos) if isinstance(eos, list) else (eos,)
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in eos_ids):
            raise self.fail("model.eos_token_id", f"must be an integer or a list of integers, got {eos!r}")
        return ModelFacts(
            name=self.get(m, "name", str, "model"),
            family=self.get(m, "family", str, "model"),
            num_layers=self.positive(m, "num_layers", "model"),
            hidden_size=self.positive(m, "hidden_size", "model"),
            vocab_size=self.positive(m, "vocab_size", "model"),
            num_kv_heads=self.positive(m, "num_kv_heads", "model"),
            head_dim=self.positive(m, "head_dim", "model"),
            video_token_id=self.get(m, "video_token_id", int, "model"),
            eos_token_ids=eos_ids,
            spatial_merge_size=1 if fixed else self.positive(m, "spatial_merge_size", "model"),
            patch_size=self.positive(m, "patch_size", "model"),
            temporal_patch_size=1 if fixed else self.positive(m, "temporal_patch_size", "model"),
            **positions,
            **(self.fixed_tower(m) if fixed else {}),
            **({"video_input": self.video_input(m["video_input"])} if m.get("video_input") is not None else {}),
        )

    def video_input(self, record: Any) -> dict[str, Any]:
        """``model.video_input``: how a Qwen3-VL case is made (its prompt kind, fps, mean and std)."""
        where = "model.video_input"
        if not isinstance(record, dict):
            raise self.fail(where, f"must be an object, got {type(record).__name__}")
        kind = self.get(record, "prompt", str, where)
        if kind not in VIDEO_PROMPTS:
            raise InputError(f"{self.path}: {where}.prompt is {kind!r}; this runtime writes {', '.join(VIDEO_PROMPTS)} "
                             "prompts: update ffexport or rebuild with this version")
        fps = self.get(record, "fps", (int, float), where)
        if not 0 < fps < float("inf"):
            raise self.fail(f"{where}.fps", f"must be positive and finite, got {fps}")
        out: dict[str, Any] = {"prompt": kind, "fps": float(fps)}
        for key in ("mean", "std"):
            value = self.get(record, key, list, where)
            if len(value) != 3 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
                raise self.fail(f"{where}.{key}", f"must be three numbers, got {value!r}")
            out[key] = tuple(float(x) for x in value)
        return out

    def fixed_tower(self, m: dict[str, Any]) -> dict[str, Any]:
        """A fixed-size tower's frame preprocessing, chat template and video tokens after the frames
        (``model.frame_preprocess``, ``prompt_template``, ``trailing_video_tokens``)."""
        pre = self.get(m, "frame_preprocess", dict, "model")
        for key, kind in (("size", int), ("mode", str), ("mean", list), ("std", list), ("resample", str)):
            self.get(pre, key, kind, "model.frame_preprocess")
        template = self.get(m, "prompt_template", dict, "model")
        before = self.get(template, "before", str, "model.prompt_template")
        after = self.get(template, "after", str, "model.prompt_template")
        trailing = self.get(m, "trailing_video_tokens", int, "model")
        if trailing < 0:
            raise self.fail("model.trailing_video_tokens", f"must be 0 or more, got {trailing}")
        facts = {"frame_preprocess": pre, "prompt_template": (before, after), "trailing_video_tokens": trailing}
        if m.get("video_text") is not None:
            try:
                facts["video_text"] = VideoText.from_json(m["video_text"])
            except ValueError as e:
                raise self.fail("model.video_text", str(e)) from e
        return facts

    def positions(self, record: Any) -> dict[str, Any]:
        """``model.positions``: the position rule and its numbers (absent in older builds: M-RoPE, step 1)."""
        if record is None:
            return {}
        where = "model.positions"
        rule = self.get(record, "rule", str, where)
        if rule not in POSITION_RULES:
            raise InputError(f"{self.path}: {where}.rule is {rule!r}; this runtime builds positions by "
                             f"{', '.join(POSITION_RULES)}: update ffexport or rebuild with this version")
        if rule in ("1d", "mrope_blocks"):  # no numbers: 1D, or M-RoPE with each frame block a (1, h, w) grid
            return {"position_rule": rule}
        step = self.get(record, "temporal_step", (int, float), where)
        if not step > 0:
            raise self.fail(f"{where}.temporal_step", f"must be positive, got {step}")
        if step == float("inf"):  # json reads 1e999 as inf; positions would be garbage
            raise self.fail(f"{where}.temporal_step", f"must be finite, got {step}")
        return {"position_rule": rule, "temporal_step": float(step)}

    def bucket(self, b: dict[str, Any], index: int) -> Bucket:
        where = f"buckets[{index}]"
        if not isinstance(b, dict):
            raise self.fail(where, "is not an object")
        name = self.get(b, "name", str, where)
        where = f"bucket {name}"
        resized = self.get(b, "resized", list, where)
        grid = self.get(b, "grid_thw", list, where)
        if len(resized) != 2 or len(grid) != 3 or not all(isinstance(x, int) and x > 0 for x in [*resized, *grid]):
            raise self.fail(where, f"has a bad resized {resized} or grid_thw {grid}")
        graphs = self.get(b, "graphs", dict, where)
        parity = b.get("parity")
        passed = parity.get("passed") if isinstance(parity, dict) else None
        usable = self.get(b, "usable", bool, where)
        return Bucket(
            name=name,
            frames=self.positive(b, "frames", where),
            height=self.positive(b, "height", where),
            width=self.positive(b, "width", where),
            resized=(resized[0], resized[1]),
            grid_thw=(grid[0], grid[1], grid[2]),
            visual_tokens=self.positive(b, "visual_tokens", where),
            patches_per_frame=self.positive(b, "patches_per_frame", where),
            vision=self.file(self.get(graphs, "vision", dict, f"{where}.graphs"), f"{where}.graphs.vision"),
            prefill=self.file(self.get(graphs, "prefill", dict, f"{where}.graphs"), f"{where}.graphs.prefill"),
            usable=usable,
            parity_passed=passed if isinstance(passed, bool) else None,
            prefill_plugins=self.plugins(self.get(graphs, "prefill", dict, f"{where}.graphs"), f"{where}.graphs.prefill"),
            frame_blocks=self.frame_blocks(b.get("frame_blocks"), f"{where}.frame_blocks"),
            pixel_shape=self.input_shape(graphs["vision"]),
            **self.static_decode(graphs.get("decode_static"), f"{where}.graphs.decode_static"),
        )

    def frame_blocks(self, record: Any, where: str) -> tuple[tuple[int, int], ...] | None:
        """A bucket's ``frame_blocks`` (``[[offset, tokens], ...]``, first at 0, in order, not overlapping)."""
        if record is None:
            return None
        if not isinstance(record, list) or not record or not all(
                isinstance(x, list) and len(x) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in x)
                for x in record):
            raise self.fail(where, "is not a list of [offset, tokens] pairs")
        end = 0
        for i, (offset, tokens) in enumerate(record):
            if tokens < 1 or offset < end or (i == 0 and offset != 0):
                raise self.fail(where, f"has a block {[offset, tokens]} out of order or overlapping")
            end = offset + tokens
        return tuple((offset, tokens) for offset, tokens in record)

    @staticmethod
    def input_shape(graph: Any) -> tuple[int, ...] | None:
        """The first input's static shape as the build recorded it (None when not recorded or not static)."""
        inputs = graph.get("inputs") if isinstance(graph, dict) else None
        shape = inputs[0].get("shape") if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict) else None
        if not isinstance(shape, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in shape):
            return None
        return tuple(shape)

    def static_decode(self, graph: Any, where: str) -> dict[str, Any]:
        """A bucket's optional static decode graph: its file and per-layer cache rows (older builds have none)."""
        if graph is None:
            return {}
        if not isinstance(graph, dict):
            raise self.fail(where, "is not an object")
        capacities = graph.get("capacities")
        if not isinstance(capacities, list) or not all(isinstance(c, int) and c > 0 for c in capacities):
            raise self.fail(f"{where}.capacities", "is not a list of positive integers")
        return {"decode_static": self.file(graph, where), "cache_capacities": tuple(capacities)}

    def plugins(self, graph: dict[str, Any], where: str) -> tuple[str, ...]:
        """Names of the plugin ops a graph entry lists (``"plugins"``: absent for standard graphs)."""
        listed = graph.get("plugins", [])
        if not isinstance(listed, list) or not all(isinstance(x, dict) and isinstance(x.get("name"), str) for x in listed):
            raise self.fail(f"{where}.plugins", "is not a list of {\"name\", \"version\", \"namespace\"} objects")
        return tuple(x["name"] for x in listed)

    def file_entry(self, entry: Any, name: str) -> FileEntry:
        where = f"files[{name!r}]"
        size = self.get(entry, "bytes", int, where)
        digest = self.get(entry, "sha256", str, where)
        if size < 0 or len(digest) != 64:
            raise self.fail(where, "has a bad size or sha256")
        return FileEntry(bytes=size, sha256=digest.lower())


# ---------------------------------------------------------------- files
def _always_hashed(name: str, tokenizer_dir: str) -> bool:
    return name.endswith(".onnx") or name.startswith(tokenizer_dir.rstrip("/") + "/")


def _check_files(manifest: Manifest, *, verify: bool) -> None:
    tokenizer = manifest.tokenizer_file
    tokenizer_dir = "tokenizer" if tokenizer is None else tokenizer.parent.relative_to(manifest.root).as_posix()
    cache = _VerifiedCache(manifest.root) if verify else None
    for name, entry in manifest.files.items():
        path = manifest.path(name)
        if not path.is_file():
            raise InputError(f"{path} is missing: {REBUILD}")
        size = path.stat().st_size
        # weights.bin only grows by appending: bytes past the committed length belong to a build that
        # is adding buckets (or was interrupted doing so); no graph of this manifest points at them
        appended = name == WEIGHTS_NAME and size > entry.bytes
        if size != entry.bytes and not appended:
            what = "truncated" if size < entry.bytes else "larger than built"
            raise InputError(f"{path} is {size} bytes, the manifest says {entry.bytes} ({what}): {REBUILD}")
        if _always_hashed(name, tokenizer_dir):
            if sha256_of(path) != entry.sha256:
                raise InputError(f"{path} does not match its sha256 in the manifest (altered or damaged): {REBUILD}")
        elif cache is not None and not cache.matches(name, path, entry):
            if sha256_of(path, entry.bytes) != entry.sha256:
                raise InputError(f"{path} does not match its sha256 in the manifest (altered or damaged; "
                                 f"`ffexport run --no-verify` skips this check): {REBUILD}")
            cache.add(name, path, entry)
    if cache is not None:
        cache.save()
    if tokenizer is not None and not tokenizer.is_file():
        raise InputError(f"{tokenizer} is missing: {REBUILD}")


class _VerifiedCache:
    """``.ffexport-verified.json`` in the build directory: files whose SHA-256 was checked, each with
    what ``stat`` said then (size, mtime_ns, ctime_ns, inode, device). A file whose stat is unchanged
    is not hashed again. Honest within its limits: any write through the file system changes the
    ctime (which, unlike the mtime, no program can set back); corruption below it (the disk, a
    bit flip in the page cache) does not, and is not seen on a cached start. Delete the file to force a
    full check. Best effort: a read-only build directory just hashes every time."""

    NAME = ".ffexport-verified.json"

    def __init__(self, root: Path) -> None:
        self.path = root / self.NAME
        try:
            self.entries: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(self.entries, dict):
                self.entries = {}
        except (OSError, ValueError):
            self.entries = {}
        self.changed = False

    @staticmethod
    def _key(path: Path, entry: FileEntry) -> dict[str, Any]:
        st = path.stat()
        return {"sha256": entry.sha256, "bytes": entry.bytes, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                "ctime_ns": st.st_ctime_ns, "inode": st.st_ino, "device": st.st_dev}

    def matches(self, name: str, path: Path, entry: FileEntry) -> bool:
        return self.entries.get(name) == self._key(path, entry)

    def add(self, name: str, path: Path, entry: FileEntry) -> None:
        self.entries[name] = self._key(path, entry)
        self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        tmp = self.path.with_name(f"{self.NAME}.{os.getpid()}.partial")
        try:
            tmp.write_text(json.dumps(self.entries), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as e:  # a read-only build: verified, just not remembered
            log.debug("cannot record the verification in %s (%s)", self.path, e)
            tmp.unlink(missing_ok=True)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())
