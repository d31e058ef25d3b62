#!/usr/bin/env python
# Usage: PYTHONPATH=. python scripts/qwen3vl_8b_parse.py [OUT.onnx]   (docs/families.md; ~12 min on 2 cores)
"""Qwen3-VL-8B (structure only) static prefill at 64 frames x 448x448 (32 blocks of 196 tokens, timestamps
between; 6272 visual tokens), DeepStack levels as an input: capture on the meta device, then TensorRT-RTX."""
import sys
import time
from pathlib import Path

import torch
import onnx

from ffexport.models import LoadModel
from ffexport.fusion.decoder import ReducedDecoder
from ffexport.fusion.layout import FrameBlock, FrameLayout
from ffexport.fusion.reducers import StaticReducer
from ffexport.fusion.schedule import Schedule, Stage
from ffexport.export.capture import CaptureOnnx, GraphSpec
from ffexport.export.graphs import present_names
from ffexport.export.trt_toolkit import find_toolkit
from ffexport.lint.check import CheckGraph
t0 = time.time()
dtype = torch.float16
loaded = LoadModel("qwen3vl-8b", structure_only=True, dtype="float16")()
P, blocks, gap = 196, 32, 9  # "<|vision_end|><12.3 seconds><|vision_start|>" ~ 9 tokens
layout = FrameLayout(tuple(FrameBlock(i * (P + gap), P, P) for i in range(blocks)))
n = layout.visual_tokens
schedule = Schedule(n, P, (Stage(0, "before_attention", "merge", 2500), Stage(0, "after_attention", "merge", 600),
                           Stage(1, "after_attention", "prune", 2000)), layout).validate(loaded.num_layers)
levels = len(loaded.config.vision_config.deepstack_visual_indexes)
decoder = ReducedDecoder(loaded.adapter.decoder_parts(loaded.model))
class Prefill(torch.nn.Module):
    def __init__(self):
        super().__init__(); self.decoder = decoder
    def forward(self, e, p, s, d):
        r = self.decoder.prefill(e, p, s, n, P, StaticReducer(schedule), layout, d)
        return (r.logits.float(), *[t for kv in r.presents for t in kv])
L = 20 + layout.region_length + 40
meta = dict(device="meta")
args = (torch.zeros(1, L, 4096, dtype=dtype, **meta), torch.zeros(3, L, dtype=torch.int64, **meta),
        torch.zeros((), dtype=torch.int64, **meta), torch.zeros(levels, n, 4096, dtype=dtype, **meta))
length = torch.export.Dim("L", min=layout.region_length + 1, max=layout.region_length + 512)
spec = GraphSpec("prefill", Prefill().eval(), args, ["inputs_embeds", "position_ids", "video_start", "deepstack"],
                 ["logits", *present_names(loaded.num_layers)], ({1: length}, {1: length}, None, None))
proto = CaptureOnnx(structure_only=True)(spec)
path = sys.argv[1] if len(sys.argv) > 1 else "qwen3vl-8b-prefill.onnx"
onnx.save(proto, path)
print(f"captured {len(proto.graph.node)} nodes, {len(proto.graph.input)} inputs in {time.time()-t0:.0f}s", flush=True)
toolkit = find_toolkit(("tensorrt_rtx",))
check = CheckGraph(toolkit=toolkit)(Path(path), None)
print("parse:", check.status, getattr(check, "detail", ""), f"{time.time()-t0:.0f}s", flush=True)
