"""The streamed build (``ffexport build --streamed``) on the tiny model: per-name weights, graphs that
compute what PyTorch computes with those weights, sha256 taken while writing, parity on a truncated copy."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch

from ffexport.cli import main
from ffexport.export.buckets import parse_bucket
from ffexport.export.capture import CaptureOnnx, GraphSpec
from ffexport.export.graphs import EmbedTokens, PrefillGraph
from ffexport.export.parity import OrtRunner
from ffexport.export.streamed import (
    BLOCK, RandomWeights, SafetensorsWeights, WeightFile, fill_graph, parity_bucket, truncated_copy,
)
from ffexport.export.vision import VisionEncoder
from ffexport.fusion.decoder import ReducedDecoder
from ffexport.fusion.schedule import Schedule
from ffexport.models import LoadModel

BUCKET = "8x112x112"


@pytest.fixture(scope="module")
def meta():
    return LoadModel("qwen2vl-tiny", structure_only=True)()


@pytest.fixture(scope="module")
def streamed_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("streamed") / "b"
    assert main(["-q", "build", "--streamed", "--bucket", BUCKET, "--out", str(out), "--max-text", "128"]) == 0
    return out


def test_random_weights_are_deterministic_per_name(meta):
    source = RandomWeights(meta.model, seed=0)
    key = "model.language_model.layers.1.self_attn.q_proj.weight"
    first = source(key, (64, 64), torch.float32)
    source("model.language_model.layers.0.mlp.up_proj.weight", (128, 64), torch.float32)  # other draws between
    assert torch.equal(first, source(key, (64, 64), torch.float32))
    assert not torch.equal(first, RandomWeights(meta.model, seed=1)(key, (64, 64), torch.float32))
    assert not torch.equal(first, source("model.language_model.layers.2.self_attn.q_proj.weight", (64, 64),
                                         torch.float32))
    assert abs(float(first.std()) - 0.1) < 0.01  # the tiny configs' initializer_range
    # transformers' _init_weights rules: norms one, biases zero, the embedding's padding row zero
    assert torch.equal(source("model.language_model.norm.weight", (64,), torch.float16), torch.ones(64, dtype=torch.float16))
    assert not source("model.visual.blocks.0.attn.qkv.bias", (96,), torch.float32).any()
    embed = source("model.language_model.embed_tokens.weight", (272, 64), torch.float32)
    assert not embed[256].any() and embed[255].any()
    # fp16 is the fp32 draw rounded, so a truncated copy in either dtype holds the same values
    assert torch.equal(source(key, (64, 64), torch.float16), first.half())


def test_random_weights_blocks_do_not_depend_on_the_tensor_around_them(meta):
    source = RandomWeights(meta.model, seed=0)
    key = "model.language_model.embed_tokens.weight"
    rows = BLOCK // 64 + 3  # more than one block of the stream
    big = source(key, (rows, 64), torch.float32)
    assert torch.equal(big.view(-1)[:BLOCK], source(key, (BLOCK // 64, 64), torch.float32).view(-1))
    assert not torch.equal(big.view(-1)[BLOCK:BLOCK + 64], big.view(-1)[:64])


def test_weight_file_hashes_while_writing_and_stores_each_key_once(tmp_path):
    weights = WeightFile(tmp_path)
    a = weights.add("1:a", torch.arange(300, dtype=torch.float32))
    assert weights.get("1:a") == a and weights.get("1:b") is None
    weights.add("1:b", torch.ones(7, dtype=torch.float16))
    record = weights.close()
    data = (tmp_path / "weights.bin").read_bytes()
    assert record == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    offset, length = json.loads((tmp_path / "weights.index.json").read_text())["tensors"]["1:b"]
    assert offset % 64 == 0 and np.frombuffer(data[offset:offset + length], np.float16).tolist() == [1.0] * 7


def test_parity_bucket_keeps_the_frame_size_and_cuts_frames():
    vision = SimpleNamespace(patch_size=14, temporal_patch_size=2, spatial_merge_size=2)
    loaded = SimpleNamespace(adapter=SimpleNamespace(), config=SimpleNamespace(vision_config=vision),
                             video_pixels=(56 * 56, 28 * 28 * 16384))  # a patch-grid family, per-frame limits
    big = parse_bucket("64x448x448", patch_size=14, temporal_patch_size=2, merge_size=2,
                       video_pixels=loaded.video_pixels)
    small = parity_bucket(big, loaded)
    assert (small.name, small.visual_tokens, small.patches_per_frame) == ("8x448x448", 1024, 256)
    tiny = parse_bucket(BUCKET, patch_size=14, temporal_patch_size=2, merge_size=2, video_pixels=loaded.video_pixels)
    assert parity_bucket(tiny, loaded) is tiny


@pytest.mark.slow
def test_safetensors_source_reads_one_tensor_in_either_layout(meta, tmp_path):
    from safetensors.torch import save_file

    random = RandomWeights(meta.model, seed=3)
    embed = random("model.language_model.embed_tokens.weight", (272, 64), torch.float32)
    q = random("model.language_model.layers.0.self_attn.q_proj.weight", (64, 64), torch.float32)
    # the released checkpoints' names (transformers 4 layout) in one shard, bf16 like the real files
    save_file({"model.embed_tokens.weight": embed.bfloat16(), "model.layers.0.self_attn.q_proj.weight": q},
              str(tmp_path / "model-00001-of-00001.safetensors"))
    source = SafetensorsWeights(tmp_path)
    assert torch.equal(source("model.language_model.embed_tokens.weight", (272, 64), torch.float32),
                       embed.bfloat16().float())
    assert torch.equal(source("model.language_model.layers.0.self_attn.q_proj.weight", (64, 64), torch.float16),
                       q.half())
    from ffexport.errors import ModelError

    with pytest.raises(ModelError, match="no tensor"):
        source("lm_head.weight", (272, 64), torch.float32)
    with pytest.raises(ModelError, match="shape"):
        source("model.language_model.embed_tokens.weight", (64, 272), torch.float32)

    # a meta-captured graph filled from the checkpoint computes with the checkpoint's values
    spec = GraphSpec("embed", EmbedTokens(meta.model.model.language_model.embed_tokens),
                     (torch.zeros(1, 5, dtype=torch.int64, device="meta"),), ["input_ids"], ["inputs_embeds"])
    model = CaptureOnnx(structure_only=True)(spec)
    weights = WeightFile(tmp_path)
    assert fill_graph(model, {"embed_tokens.weight": "model.language_model.embed_tokens.weight"}, source, weights) == 1
    weights.close()
    onnx.save(model, str(tmp_path / "embed.onnx"))
    ids = np.array([[0, 5, 256, 271, 9]], dtype=np.int64)
    got = OrtRunner().run(tmp_path / "embed.onnx", {"input_ids": ids})["inputs_embeds"]
    np.testing.assert_array_equal(got, embed.bfloat16().float()[torch.from_numpy(ids)].numpy())


@pytest.mark.slow
def test_streamed_manifest_records_what_parity_ran_on(streamed_dir):
    manifest = json.loads((streamed_dir / "manifest.json").read_text())
    (bucket,) = manifest["buckets"]
    parity = bucket["parity"]
    assert parity["on"] == "truncated copy: first 2 decoder layers, first 2 vision blocks"
    assert parity["validated"] and parity["passed"] and parity["full_depth_run"] is False
    assert parity["bucket"] == BUCKET and "not run" in parity["note"]
    assert bucket["usable"] is False  # the full-depth graphs were never executed
    report = json.loads((streamed_dir / parity["file"]).read_text())
    assert report["passed"] and {g["graph"] for g in report["graphs"]} == {"vision", "prefill"}
    # the parity contract on the copy: static graphs (written by the streamed path) with the schedules the
    # dynamic reference realizes on the copy equal it; the oracle runs where the copy is fp32
    contract = parity["contract"]
    assert contract["passed"] and contract["compared"] == 3 and contract["on"] == parity["on"]
    assert report["contract"]["videos"][0]["logits"]["max_abs"] <= 1e-5
    assert contract["oracle"]["passed"] and contract["oracle"]["compared"] + contract["oracle"]["ambiguous"] + \
        contract["oracle"]["not_run"] == 3
    copy = json.loads((streamed_dir / BUCKET / "parity-copy" / "manifest.json").read_text())
    assert copy["model"]["num_layers"] == 2 and "first 2 decoder layers" in copy["model"]["source"]
    assert manifest["lint"]["findings"] == 0 and manifest["lint"]["graphs"] == 4
    assert set(manifest["stages"]) >= {"export (capture + stream weights)", "parity (truncated copy)", "lint"}
    assert all(v["seconds"] >= 0 and v["peak_rss_gib_so_far"] > 0 for v in manifest["stages"].values())
    # sha256 recorded while writing equals the file's
    data = (streamed_dir / "weights.bin").read_bytes()
    assert manifest["files"]["weights.bin"] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert not list(streamed_dir.glob(".parity-copy-*"))  # the scratch build is gone


@pytest.mark.slow
def test_streamed_graphs_compute_what_pytorch_computes_with_the_same_weights(streamed_dir, meta):
    manifest = json.loads((streamed_dir / "manifest.json").read_text())
    (bucket,) = manifest["buckets"]
    for name in [g["file"] for g in manifest["graphs"].values()] + [g["file"] for g in bucket["graphs"].values()]:
        model = onnx.load(str(streamed_dir / name), load_external_data=False)
        inits = {t.name for t in model.graph.initializer}
        # no weight left as an input; no runtime Transpose of a stored weight (folded like a normal build)
        assert [i.name for i in model.graph.input] == [x["name"] for x in
                                                       (manifest["graphs"].get(name.split(".")[0]) or
                                                        bucket["graphs"][name.split(".")[-2]])["inputs"]]
        assert not [n for n in model.graph.node if n.op_type == "Transpose" and n.input[0] in inits]
    # the full-depth model, materialized with the same per-name weights (4 decoder layers, 2 vision blocks)
    full = truncated_copy(meta, RandomWeights(meta.model, seed=0), layers=4, vision_layers=2)
    runner = OrtRunner()
    grid = tuple(bucket["grid_thw"])
    vision = VisionEncoder(full.model.model.visual, grid).eval()
    pixels = vision.example_input(seed=1)
    got = runner.run(streamed_dir / bucket["graphs"]["vision"]["file"], {"pixel_values_videos": pixels.numpy()})
    with torch.no_grad():
        expected = vision(pixels).numpy()
    np.testing.assert_allclose(got["video_features"], expected, atol=1e-4, rtol=0)
    decoder = ReducedDecoder(full.adapter.decoder_parts(full.model))
    prefill = PrefillGraph(decoder, Schedule.from_json(bucket["schedule"])).eval()
    length = bucket["visual_tokens"] + 20
    gen = torch.Generator().manual_seed(2)
    embeds = torch.randn(1, length, 64, generator=gen)
    positions = torch.arange(length).repeat(3, 1)
    start = torch.tensor(5)
    got = runner.run(streamed_dir / bucket["graphs"]["prefill"]["file"],
                     {"inputs_embeds": embeds.numpy(), "position_ids": positions.numpy(), "video_start": start.numpy()})
    with torch.no_grad():
        logits, *presents = prefill(embeds, positions, start)
    np.testing.assert_allclose(got["logits"], logits.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["present.3.value"], presents[-1].numpy(), atol=1e-4, rtol=0)
    ids = np.array([[1, 2, 3, 260]], dtype=np.int64)
    got = runner.run(streamed_dir / "embed.onnx", {"input_ids": ids})["inputs_embeds"]
    np.testing.assert_array_equal(got, full.model.model.language_model.embed_tokens(torch.from_numpy(ids))
                                  .detach().numpy())


def test_streamed_refuses_plugin_ops(tmp_path, error_line):
    code = main(["-q", "build", "--streamed", "--ops", "plugin", "--out", str(tmp_path / "b")])
    assert code != 0
    assert "standard ops only" in error_line()
