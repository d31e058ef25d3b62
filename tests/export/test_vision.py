"""VisionEncoder: the fixed-grid Qwen2-VL vision encoder computes what transformers computes, and
exports to a static ONNX graph that attends per frame (no all-patches mask)."""

from __future__ import annotations

import copy
import warnings
from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch

from ffexport.export.vision import INPUT_NAME, OUTPUT_NAME, VisionEncoder
from ffexport.video import synthetic_video

PATCH_DIM = 3 * 2 * 14 * 14  # C * temporal_patch_size * patch_size**2 of the tiny model

#: grids (t, h, w) in patches beside the real video's 4x8x8
RANDOM_GRIDS = [(1, 4, 6), (2, 8, 8), (3, 6, 10)]


@pytest.fixture(scope="module")
def case(tiny):
    return tiny.case_from_video(synthetic_video("pan", frames=8), "hi")


def _reference(tiny, pixels: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    with torch.no_grad():
        return tiny.adapter.video_features(tiny.model, pixels, torch.tensor([grid]))


def _random_pixels(grid: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    t, h, w = grid
    return torch.randn(t * h * w, PATCH_DIM, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------- PyTorch
def test_matches_transformers_on_a_real_video(tiny, case):
    pixels = torch.from_numpy(case.pixel_values_videos)
    encoder = VisionEncoder(tiny.model.model.visual, case.grid)
    with torch.no_grad():
        got = encoder(pixels)
    expected = _reference(tiny, pixels, case.grid)
    assert got.shape == expected.shape == (encoder.num_tokens, tiny.config.vision_config.hidden_size)
    # measured: 0.0 (bit-identical: transformers 5.23 runs SDPA per frame; the batch gives the same numbers)
    assert (got - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("grid", RANDOM_GRIDS, ids=lambda g: "x".join(map(str, g)))
def test_matches_transformers_on_other_grids(tiny, grid):
    pixels = _random_pixels(grid)
    encoder = VisionEncoder(tiny.model.model.visual, grid)
    with torch.no_grad():
        got = encoder(pixels)
    expected = _reference(tiny, pixels, grid)
    assert got.shape == expected.shape == (grid[0] * grid[1] * grid[2] // 4, 64)
    assert (got - expected).abs().max().item() <= 1e-5  # measured: 0.0 on all three grids


def test_rotary_tables_are_transformers_for_every_patch(tiny):
    from transformers.vision_utils import get_vision_position_ids

    visual = tiny.model.model.visual
    grid = (3, 6, 10)
    encoder = VisionEncoder(visual, grid)
    positions = get_vision_position_ids(torch.tensor([grid]), visual.spatial_merge_size)  # processor order
    cos, sin = visual.rotary_pos_emb(torch.zeros(1), positions)
    t = grid[0]
    assert torch.equal(encoder.rotary_cos.repeat(t, 1), cos)  # one frame's table, repeated per frame
    assert torch.equal(encoder.rotary_sin.repeat(t, 1), sin)
    assert encoder.rotary_cos.dtype == torch.float32


def test_reuses_the_models_modules_and_saves_no_tables(tiny):
    visual = tiny.model.model.visual
    encoder = VisionEncoder(visual, (2, 4, 4))
    assert encoder.patch_embed is visual.patch_embed and encoder.blocks is visual.blocks
    assert encoder.merger is visual.merger
    own = {p.data_ptr() for p in encoder.parameters()}
    assert own <= {p.data_ptr() for p in visual.parameters()}
    assert not any("rotary" in k for k in encoder.state_dict())  # non-persistent buffers
    assert encoder.num_patches == 32 and encoder.num_tokens == 8 and encoder.patch_dim == PATCH_DIM


def test_half_precision_keeps_rotary_float32_and_stays_close(tiny, case):
    visual = copy.deepcopy(tiny.model.model.visual)
    encoder = VisionEncoder(visual, case.grid).to(torch.float16)
    assert encoder.dtype == torch.float16 and encoder.rotary_cos.dtype == torch.float32
    pixels = torch.from_numpy(case.pixel_values_videos)
    with torch.no_grad():
        got = encoder(pixels)
    assert got.dtype == torch.float16
    # measured: 2.6e-3 vs the fp32 reference (transformers' own fp16 path: 2.6e-3)
    assert (got.float() - _reference(tiny, pixels, case.grid)).abs().max().item() <= 2e-2


@pytest.mark.parametrize("grid", [(2, 5, 8), (2, 4, 7), (0, 4, 4), (2, 4)])
def test_invalid_grid_is_rejected(tiny, grid):
    with pytest.raises(ValueError, match="grid"):
        VisionEncoder(tiny.model.model.visual, grid)


def test_pixels_that_do_not_fit_the_grid_are_rejected(tiny, case):
    encoder = VisionEncoder(tiny.model.model.visual, (2, 8, 8))  # 128 rows; the case has 4x8x8 = 256
    with pytest.raises(ValueError, match=r"grid 2x8x8 and needs \[128, 1176\]"):
        encoder(torch.from_numpy(case.pixel_values_videos))
    with pytest.raises(ValueError, match="t\\*h\\*w rows"):
        encoder(torch.zeros(128, PATCH_DIM - 1))


# ---------------------------------------------------------------------- ONNX
def _export(encoder: VisionEncoder, pixels: torch.Tensor, path) -> onnx.ModelProto:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # torch's own LeafSpec deprecation notice
        program = torch.onnx.export(
            encoder, (pixels,), dynamo=True, opset_version=18, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], verbose=False,
        )
    program.save(str(path))
    return onnx.load(str(path))


def _dims(value: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in value.type.tensor_type.shape.dim]


@pytest.fixture(scope="module")
def exported(tiny, case, tmp_path_factory):
    encoder = VisionEncoder(tiny.model.model.visual, case.grid)
    pixels = torch.from_numpy(case.pixel_values_videos)
    path = tmp_path_factory.mktemp("vision") / "vision.onnx"
    return encoder, pixels, path, _export(encoder, pixels, path)


def test_exported_graph_is_valid_static_and_matches_pytorch(exported):
    import onnxruntime as ort

    encoder, pixels, path, model = exported
    onnx.checker.check_model(str(path), full_check=True)
    onnx.shape_inference.infer_shapes(model, strict_mode=True)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, _dims(inp)) == (INPUT_NAME, [encoder.num_patches, encoder.patch_dim])
    assert (out.name, _dims(out)) == (OUTPUT_NAME, [encoder.num_tokens, encoder.out_dim])
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {INPUT_NAME: pixels.numpy()})
    with torch.no_grad():
        expected = encoder(pixels).numpy()
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4  # measured: 2.5e-6


def test_exported_graph_attends_per_frame_without_a_dense_mask(exported):
    encoder, _, _, model = exported
    t, h, w = encoder.grid_thw
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    values = list(inferred.value_info) + list(inferred.input) + list(inferred.output)
    shapes = {v.name: _dims(v) for v in values}
    shapes.update({i.name: list(i.dims) for i in inferred.initializer})
    assert all(None not in s and all(isinstance(d, int) for d in s) for s in shapes.values()), "a dynamic dim"
    all_patches = t * h * w
    dense = {n: s for n, s in shapes.items() if s.count(all_patches) >= 2}
    assert not dense, f"a [t*h*w, t*h*w] tensor: {dense}"
    ops = [n.op_type for n in inferred.node]
    assert not {"Loop", "If", "Scan", "NonZero"} & set(ops)
    assert "Conv" not in ops  # the patch embedding is one matrix product (ONNX Runtime's CPU Conv: im2col, 10x slower)
    softmax_inputs = [shapes[n.input[0]] for n in inferred.node if n.op_type == "Softmax"]
    heads = encoder.num_heads
    assert softmax_inputs == [[t, heads, h * w, h * w]] * len(encoder.blocks)


def test_half_precision_graph_keeps_float32_softmax_and_norm_statistics(tiny, case, tmp_path):
    # torch.onnx exports torch.softmax(x, dtype=float32) as Softmax(x in fp16) -> Cast: the module
    # must cast first (see VisionEncoder._attention); this catches a regression
    encoder = VisionEncoder(copy.deepcopy(tiny.model.model.visual), case.grid).to(torch.float16)
    model = _export(encoder, torch.from_numpy(case.pixel_values_videos), tmp_path / "vision16.onnx")
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.value_info}
    softmax = [n for n in inferred.node if n.op_type == "Softmax"]
    assert softmax and all(types[n.input[0]] == onnx.TensorProto.FLOAT for n in softmax)
    norms = [n for n in inferred.node if n.op_type == "LayerNormalization"]
    assert norms and all(
        next((a.i for a in n.attribute if a.name == "stash_type"), 1) == onnx.TensorProto.FLOAT for n in norms
    )
    assert inferred.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "vision16.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {INPUT_NAME: case.pixel_values_videos})
    with torch.no_grad():
        expected = encoder(torch.from_numpy(case.pixel_values_videos)).float().numpy()
    assert np.abs(got.astype(np.float32) - expected).max() <= 2e-2  # measured: 2.9e-3


# ------------------------------------------------------------ Qwen2.5-VL's windowed tower
@pytest.fixture(scope="module")
def qwen25():
    from ffexport.models import LoadModel

    return LoadModel("qwen2.5vl-tiny")()


def _windowed(qwen25, grid) -> VisionEncoder:
    visual = qwen25.model.model.visual
    return VisionEncoder(visual, grid, qwen25.adapter.vision_tower(visual.config)).eval()


#: (t, h, w) in patches; the tiny tower's windows are 2x2 merged tokens (4x4 patches), so 8x8 and
#: 8x12 cut evenly, the others leave smaller windows at the right / bottom edge (a block mask)
WINDOW_GRIDS = [(4, 8, 8), (2, 8, 12), (1, 4, 6), (3, 6, 10), (1, 10, 10)]


@pytest.mark.parametrize("grid", WINDOW_GRIDS, ids=lambda g: "x".join(map(str, g)))
def test_windowed_tower_matches_transformers(qwen25, grid):
    encoder = _windowed(qwen25, grid)
    pixels = torch.randn(grid[0] * grid[1] * grid[2], PATCH_DIM, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = encoder(pixels)
        expected = qwen25.adapter.video_features(qwen25.model, pixels, torch.tensor([grid]))
        # the same tower attending to whole frames everywhere is far off: the windows are what matter
        tower = qwen25.adapter.vision_tower(qwen25.model.model.visual.config)
        plain = VisionEncoder(qwen25.model.model.visual, grid, replace(tower, window=None))(pixels)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-5  # measured: 0.0 (even), 7e-7 (masked)
    assert (plain - expected).abs().max().item() > 1e-2


@pytest.mark.parametrize("grid, even", [((2, 8, 12), True), ((2, 6, 10), False)], ids=["even", "edges"])
def test_windowed_graph_is_static_and_matches_pytorch(qwen25, grid, even, tmp_path):
    import onnxruntime as ort

    encoder = _windowed(qwen25, grid)
    t, h, w = grid
    pixels = torch.randn(t * h * w, PATCH_DIM, generator=torch.Generator().manual_seed(2))
    model = _export(encoder, pixels, tmp_path / "vision.onnx")
    onnx.checker.check_model(str(tmp_path / "vision.onnx"), full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    shapes = {v.name: _dims(v) for v in [*inferred.value_info, *inferred.input, *inferred.output]}
    assert all(None not in s and all(isinstance(d, int) for d in s) for s in shapes.values()), "a dynamic dim"
    assert not {"Loop", "If", "Scan", "NonZero"} & {n.op_type for n in inferred.node}
    softmax = [shapes[n.input[0]] for n in inferred.node if n.op_type == "Softmax"]
    heads, windows = encoder.num_heads, encoder.windows
    full = [t, heads, h * w, h * w]
    window = [t * windows.count, heads, windows.size, windows.size] if even else full  # masked per frame
    assert softmax == [full if i in encoder.full_blocks else window for i in range(len(encoder.blocks))]
    session = ort.InferenceSession(str(tmp_path / "vision.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {INPUT_NAME: pixels.numpy()})
    with torch.no_grad():
        expected = encoder(pixels).numpy()
    assert np.abs(got - expected).max() <= 1e-4  # measured: ~2e-6


def test_windowed_half_precision_graph_stays_close(qwen25, tmp_path):
    import onnxruntime as ort

    grid = (2, 6, 10)  # edge windows: the masked fp16 path
    visual = copy.deepcopy(qwen25.model.model.visual)
    encoder = VisionEncoder(visual, grid, qwen25.adapter.vision_tower(visual.config)).eval().to(torch.float16)
    pixels = torch.randn(2 * 6 * 10, PATCH_DIM, generator=torch.Generator().manual_seed(3))
    model = _export(encoder, pixels, tmp_path / "vision16.onnx")
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    assert all(types[n.input[0]] == onnx.TensorProto.FLOAT for n in model.graph.node if n.op_type == "Softmax")
    session = ort.InferenceSession(str(tmp_path / "vision16.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {INPUT_NAME: pixels.numpy()})
    with torch.no_grad():
        expected = qwen25.adapter.video_features(qwen25.model, pixels, torch.tensor([grid])).numpy()
    assert np.abs(got.astype(np.float32) - expected).max() <= 2e-2


# ------------------------------------------------------------ Qwen3-VL's tower: learned positions, DeepStack
QWEN3_PATCH_DIM = 3 * 2 * 16 * 16

#: (t, h, w) in patches: square, wide, tall, a frame smaller than the 8x8 position table, one merged token
QWEN3_GRIDS = [(2, 8, 8), (2, 16, 12), (3, 6, 10), (1, 4, 6), (1, 2, 2)]


@pytest.fixture(scope="module")
def qwen3():
    from ffexport.models import LoadModel

    return LoadModel("qwen3vl-tiny")()


def _qwen3_encoder(qwen3, grid, **changes) -> VisionEncoder:
    visual = qwen3.model.model.visual
    return VisionEncoder(visual, grid, replace(qwen3.adapter.vision_tower(visual.config), **changes)).eval()


def _qwen3_pixels(grid, seed: int = 0) -> torch.Tensor:
    t, h, w = grid
    return torch.randn(t * h * w, QWEN3_PATCH_DIM, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("grid", QWEN3_GRIDS, ids=lambda g: "x".join(map(str, g)))
def test_qwen3_tower_matches_transformers_features_and_deepstack(qwen3, grid):
    """Features and every DeepStack level == transformers' ``get_video_features``; the same tower without
    its learned positions is far off (the interpolated table matters)."""
    encoder = _qwen3_encoder(qwen3, grid)
    pixels = _qwen3_pixels(grid)
    with torch.no_grad():
        features, deepstack = encoder(pixels)
        expected, expected_deepstack = qwen3.adapter.video_features(qwen3.model, pixels, torch.tensor([grid]))
        plain, _ = _qwen3_encoder(qwen3, grid, position_grid=None)(pixels)
    assert encoder.output_names == ["video_features", "deepstack_features"]
    assert features.shape == expected.shape and deepstack.shape == expected_deepstack.shape == (2, *expected.shape)
    assert (features - expected).abs().max().item() <= 1e-5  # measured: 0.0
    assert (deepstack - expected_deepstack).abs().max().item() <= 1e-5  # measured: 0.0
    assert (plain - expected).abs().max().item() > 1e-2


def test_qwen3_position_taps_are_transformers_interpolation(qwen3):
    """The constant taps and weights equal transformers' bilinear indices for the grid (corners aligned)."""
    from transformers.vision_utils import get_vision_interpolation_indices_and_weights

    from ffexport.export.vision import position_taps

    for grid in QWEN3_GRIDS:
        index, weight = position_taps(grid[1], grid[2], 2, 8)
        theirs_index, theirs_weight = get_vision_interpolation_indices_and_weights(
            torch.tensor([[1, grid[1], grid[2]]]), 8, mode="bilinear", align_corners=True, spatial_merge_size=2)
        assert torch.equal(index, theirs_index) and torch.equal(weight, theirs_weight)


def test_qwen3_half_precision_keeps_position_weights_float32(qwen3):
    visual = copy.deepcopy(qwen3.model.model.visual)
    encoder = VisionEncoder(visual, (2, 8, 8), qwen3.adapter.vision_tower(visual.config)).eval().to(torch.float16)
    assert encoder.position_weight.dtype == torch.float32 and encoder.rotary_cos.dtype == torch.float32
    pixels = _qwen3_pixels((2, 8, 8))
    with torch.no_grad():
        features, deepstack = encoder(pixels)
        expected, expected_deepstack = qwen3.adapter.video_features(qwen3.model, pixels, torch.tensor([(2, 8, 8)]))
    assert features.dtype == torch.float16
    assert (features.float() - expected).abs().max().item() <= 2e-2
    assert (deepstack.float() - expected_deepstack).abs().max().item() <= 2e-2


@pytest.mark.parametrize("grid", [(2, 8, 8), (3, 6, 10)], ids=lambda g: "x".join(map(str, g)))
def test_qwen3_graph_is_static_matches_pytorch_and_builds_for_sm89(qwen3, grid, tmp_path):
    """The graph (two outputs: features [N, D], DeepStack [k, N, D]) in ONNX Runtime == PyTorch and ==
    transformers, every dim static, per-frame attention; TensorRT-RTX parses and AOT-builds it for SM89."""
    import onnxruntime as ort

    from ffexport.export.capture import CaptureOnnx, GraphSpec
    from ffexport.export.trt_toolkit import find_toolkit
    from ffexport.export.vision import DEEPSTACK_NAME
    from ffexport.lint.check import CheckGraph

    encoder = _qwen3_encoder(qwen3, grid)
    t, h, w = grid
    pixels = _qwen3_pixels(grid, seed=4)
    proto = CaptureOnnx()(GraphSpec("vision", encoder, (pixels,), [INPUT_NAME], encoder.output_names))
    path = tmp_path / "vision.onnx"
    path.write_bytes(proto.SerializeToString())
    onnx.checker.check_model(str(path), full_check=True)
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True).graph
    shapes = {v.name: _dims(v) for v in [*inferred.value_info, *inferred.input, *inferred.output]}
    assert all(None not in s and all(isinstance(d, int) for d in s) for s in shapes.values()), "a dynamic dim"
    assert not {"Loop", "If", "Scan", "NonZero"} & {n.op_type for n in inferred.node}
    n = encoder.num_tokens
    assert [(o.name, _dims(o)) for o in inferred.output] == [
        (OUTPUT_NAME, [n, encoder.out_dim]), (DEEPSTACK_NAME, [2, n, encoder.out_dim])]
    # one attention per block, one batch entry per frame (the build's default capture: the fused ONNX Attention)
    queries = [shapes[node.input[0]] for node in inferred.node if node.op_type == "Attention"]
    assert queries == [[t, encoder.num_heads, h * w, encoder.head_dim]] * len(encoder.blocks)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {INPUT_NAME: pixels.numpy()})
    with torch.no_grad():
        expected = encoder(pixels)
        theirs = qwen3.adapter.video_features(qwen3.model, pixels, torch.tensor([grid]))
    for g, e, th in zip(got, expected, theirs, strict=True):
        assert g.shape == tuple(e.shape)
        assert np.abs(g - e.numpy()).max() <= 1e-4  # measured: ~1e-6
        assert np.abs(g - th.numpy()).max() <= 1e-4
    toolkit = find_toolkit(("tensorrt_rtx",))
    if toolkit is None:
        pytest.skip("TensorRT-RTX (tensorrt_rtx) is not installed: the SM89 build is not checked")
    check = CheckGraph(toolkit=toolkit, build_for=("SM89",))(path, None)
    assert check.status == "built", check
