"""The numpy FrameFusionMerge / FrameFusionPrune kernels (ONNX Runtime's plugins) against
ffexport.fusion.ops (the reference math), and run as plugin nodes in ONNX Runtime.

Kept positions must be identical and values within 1e-6. A selection is exact except where two
different keys lie within rounding (1e-6) of each other across the cut, or of the tie window's
edge: there both answers are right and the backends may round differently (docs/design.md, "Top-k
cuts through near-ties"); such draws are discarded with ``assume`` (exact ties are kept: duplicated
rows give equal keys in both implementations and must resolve the same way, lowest position first).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from ffexport.errors import RunError
from ffexport.fusion import ops
from ffexport.fusion.reducers import StandardSteps
from ffexport.plugins import MERGE, ONNX_DOMAIN, PLUGIN_NAMESPACE, PLUGIN_VERSION, PRUNE
from ffexport.runtime import plugins

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUNDING = 1e-6  # keys (|key| <= 8) from two backends agree to this


@st.composite
def merge_cases(draw):
    """A visual span: P patches, up to ``frames`` tokens per chain, rows with exact repeats (static
    content), scaled copies and long unchanged runs; patch ids as a reduced span carries them."""
    p = draw(st.integers(1, 5))
    frames = draw(st.integers(2, 12))
    d = draw(st.integers(1, 8))
    full = p * frames
    # tokens a previous step removed: drop some, keep every patch's first token
    dropped = draw(st.sets(st.integers(p, full - 1), max_size=full // 3))
    positions = [i for i in range(full) if i not in dropped]
    patch_ids = np.array([i % p for i in positions], dtype=np.int64)
    n = len(positions)
    assume(n - p >= 1)
    grid = draw(st.booleans())
    if grid:  # small multiples of 1/4: many exact ties
        rows = draw(st.lists(st.lists(st.integers(-8, 8), min_size=d, max_size=d), min_size=n, max_size=n))
        visual = np.array(rows, dtype=np.float32) / 4
        visual[~visual.any(axis=1)] = 1.0  # no zero rows: hidden states never vanish (a zero row has no direction)
    else:
        seed = draw(st.integers(0, 2**31 - 1))
        visual = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32) * draw(st.sampled_from([1e-3, 1.0, 30.0]))
    repeat = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    scale = draw(st.sampled_from([1.0, 2.0, 0.5]))
    for i in range(p, n):  # a token repeats (or scales) its chain predecessor: static content, long runs
        prev = [j for j in range(i) if patch_ids[j] == patch_ids[i]]
        if repeat[i] and prev:
            visual[i] = visual[prev[-1]] * (scale if i % 2 else 1.0)
    remove = draw(st.integers(1, n - p))
    return visual, patch_ids, remove, p, frames


def _clear_cut(key: np.ndarray, flags: np.ndarray, eps: float) -> bool:
    """No key lies within rounding of the tie window's edges ``cut +- eps`` (keys equal to the cut
    are fine: an exact tie, resolved by position in both). For merges (``eps`` 1e-9, below rounding)
    that means no key different from the cut within rounding of it."""
    chosen = key[flags > 0]
    if len(chosen) == 0 or len(chosen) == len(key):
        return True
    distance = np.abs(key - chosen.min())
    return not ((distance > 0) & (np.abs(distance - eps) < ROUNDING)).any()


@SETTINGS
@given(merge_cases())
def test_merge_kernel_matches_the_ops(case):
    visual, patch_ids, remove, p, frames = case
    tv, tp = torch.from_numpy(visual), torch.from_numpy(patch_ids)
    order = ops.patch_order(tp, p)
    key = ops.chain_closeness(tv, tp, order)
    assume(_clear_cut(key.numpy(), ops.top_flags(key, remove).numpy(), ops.SIMILARITY_EPS))
    kept, values = StandardSteps().merge(tv, tp, remove, p, frames)
    got_kept, got_values = plugins.merge_step(visual, patch_ids, remove, p, frames)
    assert got_kept.dtype == np.int64 and got_kept.shape == (visual.shape[0] - remove,)
    np.testing.assert_array_equal(got_kept, kept.numpy())
    assert got_values.dtype == np.float32 and got_values.shape == tuple(values.shape)
    np.testing.assert_allclose(got_values, values.numpy(), rtol=0, atol=1e-6 * max(1.0, float(np.abs(visual).max())))
    np.testing.assert_array_equal(plugins.patch_order(patch_ids), order.numpy())
    np.testing.assert_allclose(plugins.chain_closeness(visual, patch_ids, order.numpy()), key.numpy(), atol=ROUNDING)


@st.composite
def prune_cases(draw):
    n = draw(st.integers(2, 64))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    importance = rng.uniform(1e-5, 1.0, n).astype(np.float32)
    ties = draw(st.integers(0, n - 1))  # exact ties: copies of one value
    importance[rng.choice(n, ties, replace=False)] = importance[draw(st.integers(0, n - 1))]
    if draw(st.booleans()):
        importance[: n // 2] = draw(st.sampled_from([1.0 / 64, 1e-4, 0.25]))
    return importance, draw(st.integers(1, n - 1))


@SETTINGS
@given(prune_cases())
def test_prune_kernel_matches_the_ops(case):
    importance, keep = case
    t = torch.from_numpy(importance)
    key = ops.selection_key(t, relative=True)
    assume(_clear_cut(key.numpy(), ops.top_flags(t, keep, relative=True).numpy(), ops.IMPORTANCE_EPS))
    got = plugins.prune_step(importance, keep)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, ops.prune(t, keep).numpy())


def test_identical_frames_merge_lowest_positions_first():
    """Static content: every chained key is exactly 0; the tie goes to the lowest patch-order positions."""
    p, frames = 4, 6
    visual = np.tile(np.arange(1, 9, dtype=np.float32).reshape(p, 2), (frames, 1))
    patch_ids = np.tile(np.arange(p), frames)
    kept, values = plugins.merge_step(visual, patch_ids, 7, p, frames)
    ref_kept, ref_values = StandardSteps().merge(torch.from_numpy(visual), torch.from_numpy(patch_ids), 7, p, frames)
    np.testing.assert_array_equal(kept, ref_kept.numpy())
    np.testing.assert_array_equal(values, ref_values.numpy())
    # patch 0's chain (tokens 4, 8, ..., 20) merges completely (5 tokens), patch 1 loses its first two
    assert 4 not in kept and 20 not in kept and 5 not in kept and 9 not in kept and 13 in kept


def test_nan_rows_rank_last_like_the_ops():
    visual = np.ones((8, 3), dtype=np.float32)
    visual[5] = 0.0  # zero row: NaN key
    patch_ids = np.tile(np.arange(2), 4)
    kept, _ = plugins.merge_step(visual, patch_ids, 3, 2, 4)
    ref_kept, _ = StandardSteps().merge(torch.from_numpy(visual), torch.from_numpy(patch_ids), 3, 2, 4)
    np.testing.assert_array_equal(kept, ref_kept.numpy())


def test_constants_match_the_ops():
    assert plugins.SIMILARITY_EPS == np.float32(ops.SIMILARITY_EPS)
    assert plugins.IMPORTANCE_EPS == np.float32(ops.IMPORTANCE_EPS)
    assert plugins.BISECT_STEPS == ops._BISECT_STEPS and plugins.NO_PREDECESSOR == ops.NO_PREDECESSOR


def test_interface_violations_are_refused():
    with pytest.raises(ValueError, match="remove"):
        plugins.merge_step(np.ones((4, 2), np.float32), np.arange(4) % 2, 4, 2, 2)
    with pytest.raises(ValueError, match="first"):  # would merge a chain's first token
        plugins.merge_step(np.ones((4, 2), np.float32), np.arange(4) % 2, 3, 2, 2)
    with pytest.raises(ValueError, match="keep"):
        plugins.prune_step(np.ones(4, np.float32), 0)


# ---------------------------------------------------------------- as ONNX Runtime nodes
def _model(nodes, inputs, outputs):
    graph = helper.make_graph(nodes, "plugins", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(ONNX_DOMAIN, 1)])


def _attrs(**ints):
    return dict(ints, plugin_version=PLUGIN_VERSION, plugin_namespace=PLUGIN_NAMESPACE)


def test_plugin_nodes_run_in_onnx_runtime():
    p, frames, remove, keep = 4, 5, 9, 6
    rng = np.random.default_rng(3)
    visual = rng.standard_normal((p * frames, 16)).astype(np.float32)
    visual[p:2 * p] = visual[:p]  # a static second frame: exact ties
    patch_ids = np.tile(np.arange(p), frames).astype(np.int64)
    importance = rng.uniform(1e-4, 1, p * frames - remove).astype(np.float32)
    nodes = [
        helper.make_node(MERGE, ["visual", "patch_ids"], ["kept", "values"], domain=ONNX_DOMAIN,
                         **_attrs(remove=remove, patches_per_frame=p, max_run=frames)),
        helper.make_node(PRUNE, ["importance"], ["pruned"], domain=ONNX_DOMAIN, **_attrs(keep=keep)),
    ]
    f, i = TensorProto.FLOAT, TensorProto.INT64
    model = _model(nodes, [helper.make_tensor_value_info("visual", f, [p * frames, 16]),
                           helper.make_tensor_value_info("patch_ids", i, [p * frames]),
                           helper.make_tensor_value_info("importance", f, [p * frames - remove])],
                   [helper.make_tensor_value_info("kept", i, [p * frames - remove]),
                    helper.make_tensor_value_info("values", f, [p * frames - remove, 16]),
                    helper.make_tensor_value_info("pruned", i, [keep])])
    session = ort.InferenceSession(model.SerializeToString(), plugins.session_options(),
                                   providers=["CPUExecutionProvider"])
    kept, values, pruned = session.run(None, {"visual": visual, "patch_ids": patch_ids, "importance": importance})
    ref_kept, ref_values = StandardSteps().merge(torch.from_numpy(visual), torch.from_numpy(patch_ids), remove, p, frames)
    np.testing.assert_array_equal(kept, ref_kept.numpy())
    np.testing.assert_allclose(values, ref_values.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(pruned, ops.prune(torch.from_numpy(importance), keep).numpy())


def test_without_onnxruntime_extensions_the_error_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime_extensions", None)  # import fails as if not installed
    with pytest.raises(RunError, match="pip install onnxruntime-extensions"):
        plugins.session_options()


# ---------------------------------------------------------------- the manifest's plugin record
def test_manifest_plugin_records_are_read_and_checked(tmp_path):
    from test_manifest import _bucket, write_dummy_build

    from ffexport.errors import InputError
    from ffexport.runtime.manifest import load_manifest

    bucket = _bucket("8x112x112", 8, 112, True)
    bucket["graphs"]["prefill"]["plugins"] = [{"name": MERGE, "version": "1", "namespace": "ffexport"}]
    manifest = load_manifest(write_dummy_build(tmp_path / "a", ops="plugin", buckets=[bucket]))
    assert manifest.buckets[0].prefill_plugins == (MERGE,)
    assert load_manifest(write_dummy_build(tmp_path / "b")).buckets[0].prefill_plugins == ()
    bucket["graphs"]["prefill"]["plugins"] = MERGE
    with pytest.raises(InputError, match="plugins is not a list"):
        load_manifest(write_dummy_build(tmp_path / "c", buckets=[bucket]))
