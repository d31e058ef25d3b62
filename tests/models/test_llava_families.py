"""LLaVA-style families (fixed-size vision tower, contiguous frames, 1D RoPE): the same proofs as Qwen2-VL.

Per family, on its tiny preset (deterministic random weights, a few frames):

* the adapter's plain prefill (no reduction) == transformers' own forward of the same model (last
  logits <= 1e-4 fp32) and greedy tokens == ``generate``;
* the dynamic FrameFusion reference == the spec-derived oracle (same realized steps, logits <= 1e-5);
  the oracle gets the 1D rotary layout as data (one section of ``head_dim // 2`` frequencies) and,
  for InternVL, the frame blocks (one per frame, ``</img>\\nFrameN: <img>`` text between them);
* the static decoder on the realized schedule == the dynamic one (<= 1e-5);
* the static prefill captured to ONNX and run in ONNX Runtime == PyTorch (<= 1e-4), and TensorRT-RTX
  parses it and builds it ahead of time for SM89;
* InternVL: the text rows between frame blocks are never merged or pruned and keep their positions;
* ``case.npz`` holds exactly the processor's names and transformers' forward takes it unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ffexport.case import FIXED_TOWER_CASE_KEYS, FRAMES_AS_IMAGES_CASE_KEYS, load_case
from ffexport.errors import InputError, ScheduleError
from ffexport.fusion.config import FusionConfig
from ffexport.fusion.reducers import StaticReducer
from ffexport.oracle import NaiveFrameFusion
from ffexport.reference import Reference
from ffexport.video import synthetic_video

LOGITS_ATOL_HF = 1e-4
LOGITS_ATOL = 1e-5
ORT_ATOL = 1e-4
FAMILIES = ["llava-next-video-tiny", "llava-onevision-tiny", "internvl-tiny"]
#: families FrameFusion runs on (all: InternVL's frames are blocks with text between them)
REDUCING = FAMILIES
#: the names each family's transformers processor returns for a video prompt
PROCESSOR_KEYS = {"llava-next-video-tiny": FIXED_TOWER_CASE_KEYS, "llava-onevision-tiny": FIXED_TOWER_CASE_KEYS,
                  "internvl-tiny": FRAMES_AS_IMAGES_CASE_KEYS}
#: merges at this threshold on the tiny models' features of a moving-object clip (checked below)
FUSION = FusionConfig(similarity=0.95, ratio_lower_bound=0.05, budget_layers=28)


@pytest.fixture(scope="session")
def loaded_models():
    from ffexport.models import LoadModel

    return {name: LoadModel(name)() for name in FAMILIES}


@pytest.fixture(scope="session")
def cases(loaded_models):
    clip = synthetic_video("moving_object", frames=4, height=96, width=128, seed=3)
    return {name: m.case_from_video(clip, "What moves?") for name, m in loaded_models.items()}


@pytest.fixture(scope="session")
def dynamic_runs(loaded_models, cases):
    return {name: Reference(loaded_models[name], fusion=FUSION)(cases[name]) for name in REDUCING}


def _hf_inputs(case) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(getattr(case, k)) for k in case.keys}


@pytest.mark.parametrize("name", FAMILIES)
def test_plain_prefill_equals_transformers(name, loaded_models, cases):
    loaded, case = loaded_models[name], cases[name]
    result = Reference(loaded, max_new_tokens=4)(case)
    with torch.no_grad():
        hf = loaded.model(**_hf_inputs(case)).logits[0, -1].numpy()
        generated = loaded.model.generate(**_hf_inputs(case), max_new_tokens=4, do_sample=False,
                                          eos_token_id=None, pad_token_id=0)
    assert np.abs(result.logits[0] - hf).max() <= LOGITS_ATOL_HF
    np.testing.assert_array_equal(result.generated_ids[0], generated[0, case.input_ids.shape[1]:].numpy())


@pytest.mark.parametrize("name", FAMILIES)
def test_decode_steps_continue_the_1d_positions(name, loaded_models, cases):
    """Two decode steps over the prefill's caches == transformers' forward of the prompt plus the new tokens
    (the k-th new token sits at position L + k on all three rows)."""
    loaded, case = loaded_models[name], cases[name]
    reference = Reference(loaded)
    inputs = reference.prepare(case)
    length = case.input_ids.shape[1]
    with torch.no_grad():
        state = reference.decoder.prefill(inputs.inputs_embeds, inputs.position_ids, inputs.video_start,
                                          inputs.visual_tokens, inputs.patches_per_frame)
        tokens = []
        for k in range(2):
            token = int(state.logits[0].argmax()) if k == 0 else 5 + k  # a forced token too
            tokens.append(token)
            embeds = loaded.adapter.embed_tokens(loaded.model, torch.tensor([[token]]))
            positions = torch.full((3, 1), length + inputs.rope_delta + k, dtype=torch.int64)
            state = reference.decoder.decode(embeds, positions, state.presents)
        hf_inputs = _hf_inputs(case)
        hf_inputs["input_ids"] = torch.cat([hf_inputs["input_ids"], torch.tensor([tokens])], dim=1)
        hf_inputs["attention_mask"] = torch.ones_like(hf_inputs["input_ids"])
        hf = loaded.model(**hf_inputs).logits[0, -1]
    assert (state.logits[0] - hf).abs().max() <= LOGITS_ATOL_HF


@pytest.mark.parametrize("name", REDUCING)
def test_dynamic_reference_matches_oracle(name, loaded_models, cases, dynamic_runs):
    loaded, case, result = loaded_models[name], cases[name], dynamic_runs[name]
    inputs = Reference(loaded).prepare(case)
    text = loaded.config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    oracle = NaiveFrameFusion(loaded.model, cost=FUSION.cost, similarity=FUSION.similarity,
                              ratio_lower_bound=FUSION.ratio_lower_bound, budget_layers=FUSION.budget_layers,
                              mrope_section=[head_dim // 2])  # 1D RoPE: every frequency reads row 0
    blocks = None if inputs.layout is None else inputs.layout.to_json()
    with torch.no_grad():
        naive = oracle.prefill(inputs.inputs_embeds[0], inputs.position_ids, int(inputs.video_start),
                               inputs.visual_tokens, inputs.patches_per_frame, blocks=blocks)
    realized = [(r.stage.layer, r.stage.where, r.stage.op, r.stage.remove) for r in result.realized]
    assert {op for _, _, op, remove in realized if remove} == {"merge", "prune"}, realized  # not vacuous
    assert realized == naive.steps
    assert np.abs(result.logits[0] - naive.logits.numpy()).max() <= LOGITS_ATOL
    assert list(result.kv_lengths) == [k.shape[1] for k, _ in naive.kv]


@pytest.mark.parametrize("name", REDUCING)
def test_static_equals_dynamic_on_the_realized_schedule(name, loaded_models, cases, dynamic_runs):
    loaded, dynamic = loaded_models[name], dynamic_runs[name]
    static = Reference(loaded, schedule=dynamic.schedule)(cases[name])
    assert np.abs(static.logits - dynamic.logits).max() <= LOGITS_ATOL
    np.testing.assert_array_equal(static.kv_lengths, dynamic.kv_lengths)


@pytest.fixture(scope="session")
def prefill_graphs(loaded_models, cases, dynamic_runs):
    """Per reducing family: the static prefill (realized schedule) captured to ONNX once, its inputs and
    PyTorch's outputs."""
    from ffexport.export.capture import CaptureOnnx, GraphSpec
    from ffexport.export.graphs import PrefillGraph, present_names

    graphs = {}
    for name in REDUCING:
        loaded, schedule = loaded_models[name], dynamic_runs[name].schedule
        reference = Reference(loaded, schedule=schedule)
        inputs = reference.prepare(cases[name])
        module = PrefillGraph(reference.decoder, schedule)
        args = (inputs.inputs_embeds, inputs.position_ids, inputs.video_start)
        names = ["inputs_embeds", "position_ids", "video_start"]
        spec = GraphSpec("prefill", module, args, names, ["logits", *present_names(loaded.num_layers)])
        with torch.no_grad():
            expected = [t.numpy() for t in module(*args)]
        graphs[name] = (CaptureOnnx()(spec), {n: a.numpy() for n, a in zip(names, args)}, expected)
    return graphs


@pytest.mark.parametrize("name", REDUCING)
def test_static_prefill_in_onnx_runtime_equals_pytorch(name, loaded_models, prefill_graphs):
    import onnxruntime as ort

    proto, feeds, expected = prefill_graphs[name]
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, feeds)
    assert len(got) == len(expected) == 1 + 2 * loaded_models[name].num_layers
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        assert np.abs(g - e).max() <= ORT_ATOL


@pytest.mark.parametrize("name", REDUCING)
def test_static_prefill_parses_and_builds_with_tensorrt_rtx(name, prefill_graphs, tensorrt_rtx, tmp_path):
    """NVIDIA's real ONNX parser takes the graph and builds an engine ahead of time for SM89, as
    ``ffexport check --build-for SM89`` does (ONNX Runtime's fused attention checked as ONNX Attention)."""
    import onnx

    from ffexport.lint.check import CheckGraph

    path = tmp_path / "prefill.onnx"
    onnx.save(prefill_graphs[name][0], path)
    check = CheckGraph(toolkit=tensorrt_rtx, build_for=("SM89",))(path, None)
    assert check.status == "built", check


@pytest.mark.parametrize("name", FAMILIES)
def test_case_npz_holds_the_processor_names(name, loaded_models, cases, tmp_path):
    loaded, case = loaded_models[name], cases[name]
    path = case.save(tmp_path / "case.npz")
    with np.load(path) as data:
        assert sorted(data.files) == sorted(PROCESSOR_KEYS[name])
        arrays = {k: torch.from_numpy(data[k]) for k in data.files}
    back = load_case(path)
    np.testing.assert_array_equal(back.pixel_values_videos, case.pixel_values_videos)
    frames = case.grid[0]
    span = np.count_nonzero(case.input_ids == loaded.adapter.video_token_id(loaded.config))
    assert span == loaded.adapter.video_tokens(loaded.config, frames)
    with torch.no_grad():  # transformers takes the file's arrays unchanged
        logits = loaded.model(**arrays).logits[0, -1].numpy()
    assert np.abs(Reference(loaded)(back).logits[0] - logits).max() <= LOGITS_ATOL_HF


def test_internvl_text_between_frame_blocks_is_never_reduced_and_keeps_its_positions(loaded_models, cases):
    """Every reduction step of the dynamic reference keeps each text row between frame blocks, with its
    own value (never averaged into a merge); and a text row's layer-0 key (its embedding rotated at its
    position, nothing else) is the unreduced run's at the same original row: its position is kept."""
    loaded, case = loaded_models["internvl-tiny"], cases["internvl-tiny"]
    reference = Reference(loaded, fusion=FUSION)
    inputs = reference.prepare(case)
    start, layout = int(inputs.video_start), inputs.layout
    assert len(layout.blocks) == case.grid[0] and layout.text_tokens > 0
    text_rows = start + np.flatnonzero(layout.text_mask())  # original rows of the text between blocks
    seen = []

    class Watch:
        def __init__(self, reducer):
            self.reducer = reducer

        def __getattr__(self, name):
            return getattr(self.reducer, name)

        def step(self, layer, where, rows, span, importance):
            reduction = self.reducer.step(layer, where, rows, span, importance)
            if reduction is not None:
                text = torch.nonzero(span.text).flatten()
                assert text.numel() == layout.text_tokens
                kept = reduction.kept.tolist()
                assert set(text.tolist()) <= set(kept), (layer, where)
                if reduction.values is not None:  # a merge: the text rows keep their own values
                    at = [kept.index(r) for r in text.tolist()]
                    assert torch.equal(reduction.values[at], rows[text])
                seen.append((layer, where, "merge" if reduction.values is not None else "prune",
                             span.length - len(kept)))
            return reduction

    result = reference(case, observe=lambda reducer, n: Watch(reducer))
    assert {op for *_, op, removed in seen if removed} == {"merge", "prune"}, seen  # not vacuous
    assert seen[0][:2] == (0, "before_attention") and seen[0][3] > 0, seen  # layer 0's keys see a merge
    with torch.no_grad():
        full = reference.decoder.prefill(inputs.inputs_embeds, inputs.position_ids, inputs.video_start,
                                         inputs.visual_tokens, inputs.patches_per_frame)
        reduced = reference.decoder.prefill(inputs.inputs_embeds, inputs.position_ids, inputs.video_start,
                                            inputs.visual_tokens, inputs.patches_per_frame,
                                            reference._reducer(inputs), layout)
    key_full, key_reduced = full.presents[0][0][0], reduced.presents[0][0][0]  # [kv_heads, rows, head_dim]
    assert key_reduced.shape[1] == key_full.shape[1] - seen[0][3]
    for t in text_rows:  # a key rotated at another position (or from a merged value) would match none
        matches = [r for r in range(key_reduced.shape[1]) if torch.equal(key_reduced[:, r], key_full[:, t])]
        assert len(matches) == 1
    np.testing.assert_array_equal(result.kv_lengths, [k.shape[2] for k, _ in reduced.presents])


def test_a_schedule_for_other_frame_blocks_is_refused(loaded_models, cases, dynamic_runs):
    """A static schedule whose blocks are not the prompt's (same token counts, text of other lengths)
    is one ScheduleError, not a silently misplaced reduction."""
    from ffexport.fusion.layout import FrameBlock, FrameLayout
    from ffexport.fusion.schedule import Schedule

    realized = dynamic_runs["internvl-tiny"].schedule
    shifted = FrameLayout(tuple(FrameBlock(b.start + i, b.length, b.patches_per_frame)
                                for i, b in enumerate(realized.layout.blocks)))
    other = Schedule(realized.visual_tokens, realized.patches_per_frame, realized.stages, shifted)
    with pytest.raises(ScheduleError, match="frame blocks"):
        Reference(loaded_models["internvl-tiny"], schedule=other)(cases["internvl-tiny"])


def test_case_command_writes_a_llava_case(tmp_path, capsys):
    from ffexport.cli import main

    out = tmp_path / "c.npz"
    assert main(["case", "--model", "llava-next-video-tiny", "--frames", "4", "--out", str(out)]) == 0
    with np.load(out) as data:
        assert sorted(data.files) == sorted(FIXED_TOWER_CASE_KEYS)
        assert data["pixel_values_videos"].shape == (1, 4, 3, 112, 112)


def test_unsupported_architecture_is_one_line_naming_the_supported_ones(tmp_path, error_line):
    from ffexport.cli import main
    from ffexport.models import FAMILIES

    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "mllama", "architectures": ["MllamaForConditionalGeneration"]}')
    assert main(["reference", "--model", str(model), "--out", str(tmp_path / "r.npz")]) == 3
    line = error_line()
    assert "'mllama' is not supported" in line
    for name, adapter in FAMILIES.items():
        assert f"{adapter.model_class.__name__} ({name})" in line


@pytest.mark.parametrize("preset, billions, per_frame, layers", [
    ("llava-next-video-7b", 7.06, 144, 32),  # published: 7.06B parameters
    ("llava-video-7b", 8.03, 196, 28),  # published: 8.03B
    ("internvl3-8b", 7.94, 256, 28),  # published: 7.94B
])
def test_real_size_presets_have_the_released_architecture(preset, billions, per_frame, layers):
    from ffexport.models import LoadModel

    loaded = LoadModel(preset, structure_only=True)()  # meta device: shapes only, no weights
    params = sum(p.numel() for p in loaded.model.parameters())
    assert round(params / 1e9, 2) == billions
    assert loaded.adapter.tokens_per_frame(loaded.config) == per_frame
    assert loaded.num_layers == layers
    parts = loaded.adapter.decoder_parts(loaded.model)
    assert parts.mrope_section == (parts.head_dim // 2,)  # 1D RoPE: one band table read from row 0


@pytest.mark.parametrize("name", FAMILIES)
def test_tiny_presets_are_deterministic(name, loaded_models):
    from ffexport.models import LoadModel

    again = LoadModel(name)()
    pairs = zip(loaded_models[name].model.state_dict().items(), again.model.state_dict().items(), strict=True)
    for (key, a), (key_again, b) in pairs:
        assert key == key_again and torch.equal(a, b), key


def test_npy_case_folders_hold_llava_and_internvl_cases(tmp_path):
    """A LLaVA-style case as a folder of .npy files (for the C++ runtime) reads back as the case.npz of the same
    command; so does InternVL's, whose frames keep its processor's name (`pixel_values.npy` [T, 3, S, S])."""
    from ffexport.case import load_case
    from ffexport.cli import main

    base = ["-q", "case", "--model", "llava-next-video-tiny", "--frames", "2"]
    assert main([*base, "--format", "npy", "--out", str(tmp_path / "case")]) == 0
    assert main([*base, "--out", str(tmp_path / "case.npz")]) == 0
    folder, npz = load_case(tmp_path / "case"), load_case(tmp_path / "case.npz")
    assert sorted(p.name for p in (tmp_path / "case").iterdir()) == [
        "attention_mask.npy", "input_ids.npy", "pixel_values_videos.npy"]
    assert folder.keys == npz.keys and all(np.array_equal(getattr(folder, k), getattr(npz, k)) for k in npz.keys)
    base = ["-q", "case", "--model", "internvl-tiny", "--frames", "2"]
    assert main([*base, "--format", "npy", "--out", str(tmp_path / "internvl")]) == 0
    assert main([*base, "--out", str(tmp_path / "internvl.npz")]) == 0
    folder, npz = load_case(tmp_path / "internvl"), load_case(tmp_path / "internvl.npz")
    assert sorted(p.name for p in (tmp_path / "internvl").iterdir()) == [
        "attention_mask.npy", "input_ids.npy", "pixel_values.npy"]
    assert folder.keys == npz.keys and folder.pixel_values_videos.ndim == 4
    assert all(np.array_equal(getattr(folder, k), getattr(npz, k)) for k in npz.keys)


@pytest.mark.parametrize("name", FAMILIES)
def test_cases_that_do_not_fit_are_one_input_error(name, loaded_models, cases):
    from dataclasses import replace

    loaded, case = loaded_models[name], cases[name]
    reference = Reference(loaded)
    bad_ids = case.input_ids.copy()
    bad_ids[0, 0] = loaded.config.text_config.vocab_size
    fewer_frames = case.pixel_values_videos[..., :-1, :, :, :]  # one frame fewer than the prompt's tokens
    smaller = case.pixel_values_videos[..., :-2, :-2]
    for bad, words in [(replace(case, input_ids=bad_ids), "vocabulary"),
                       (replace(case, pixel_values_videos=fewer_frames), "frames give"),
                       (replace(case, pixel_values_videos=smaller), "must have shape")]:
        with pytest.raises(InputError, match=words):
            reference(bad)


@pytest.mark.parametrize("name, text_between", [("llava-next-video-tiny", False), ("llava-onevision-tiny", False),
                                                ("internvl-tiny", True)])
def test_frame_blocks_describe_the_prompt_layout(name, text_between, loaded_models, cases):
    """The frame blocks each adapter declares (:class:`FrameLayout`) match the processor-style prompt."""
    loaded, case = loaded_models[name], cases[name]
    adapter, config = loaded.adapter, loaded.config
    start, layout = adapter.layout(config, case.input_ids)
    blocks = [(start + b.start, b.length) for b in layout.blocks]
    frames, per_frame = case.grid[0], adapter.tokens_per_frame(config)
    assert layout.frames == frames and layout.patches_per_frame == per_frame
    if text_between:
        assert [length for _, length in blocks] == [per_frame] * frames
    else:
        assert blocks == [(start, frames * per_frame)]
    ids = case.input_ids[0]
    token = adapter.video_token_id(config)
    for first, length in blocks:
        assert (ids[first:first + length] == token).all()
    gaps = [b[0] - (a[0] + a[1]) for a, b in zip(blocks, blocks[1:])]
    assert all(g > 0 for g in gaps) and layout.text_tokens == sum(gaps) if text_between else layout.is_contiguous
    if text_between:  # InternVL: "</img>\nFrame2: <img>" between blocks
        between = ids[blocks[0][0] + per_frame: blocks[1][0]]
        assert bytes(int(i) for i in between).decode() == "</img>\nFrame2: <img>"


def test_internvl_bucket_layout_is_the_prompts_and_without_a_tokenizer_qwen2s_gaps():
    """The frame blocks a build takes for a bucket without running the model (``--graph-only``): from the
    tokenized video text with a tokenizer (== ``layout`` of a real prompt's ids); without one, the gaps
    Qwen2's tokenizer gives (7 tokens before frames 2-9, 8 before frames 10-99)."""
    from ffexport.export.policy import nominal_schedule
    from ffexport.export.buckets import parse_fixed_bucket
    from ffexport.fusion.config import FusionConfig
    from ffexport.models.internvl import ADAPTER, internvl_tiny_config
    from ffexport.models.tiny_tokenizer import build_tiny_tokenizer

    config, tokenizer = internvl_tiny_config(), build_tiny_tokenizer()
    ids = ADAPTER.video_prompt_ids(config, tokenizer, 3, "What is in this video?")
    assert ADAPTER.bucket_layout(config, 3, tokenizer) == ADAPTER.layout(config, ids)[1]
    nominal = ADAPTER.bucket_layout(config, 12)
    gaps = [b.start - a.end for a, b in zip(nominal.blocks, nominal.blocks[1:])]
    assert gaps == [7] * 8 + [8] * 3 and nominal.visual_tokens == 12 * 16
    bucket = parse_fixed_bucket("12x448x448", size=112, tokens_per_frame=16)
    schedule = nominal_schedule(bucket, FusionConfig(), 4, nominal).schedule
    assert schedule.frame_layout == nominal and schedule.to_json()["format"] == "ffexport.schedule/2"
