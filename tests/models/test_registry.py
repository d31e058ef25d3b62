"""Model families and presets: registration, resolution, architectures."""

from __future__ import annotations

import json

import pytest
import torch

from ffexport.errors import ModelError
from ffexport.models import FAMILIES, PRESETS, LoadModel
from ffexport.models.registry import Registry


def test_registry_refuses_duplicates():
    reg: Registry[int] = Registry("thing")
    reg.register("a", 1)
    with pytest.raises(KeyError, match="already registered"):
        reg.register("a", 2)
    with pytest.raises(KeyError):
        PRESETS.register("qwen2vl-tiny", PRESETS.get("qwen2vl-tiny"))


def test_every_family_has_a_tiny_preset():
    families_with_tiny = {p.family for _, p in PRESETS.items() if p.tiny}
    assert set(FAMILIES.names()) <= families_with_tiny


def test_every_family_does_every_stage():
    """Issue 13: case, reference, build, run, calibrate, explain and bench for every family (docs/families.md)."""
    from ffexport.models.registry import STAGES

    for name, adapter in FAMILIES.items():
        assert set(getattr(adapter, "stages", STAGES)) == set(STAGES), name
        assert not getattr(adapter, "missing", {}), name


def test_tiny_model_is_deterministic():
    a, b = LoadModel("qwen2vl-tiny")(), LoadModel("qwen2vl-tiny")()
    for (name, pa), (_, pb) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert torch.equal(pa, pb), name
    assert a.tokenizer is not None


@pytest.mark.parametrize("preset, params, layers, hidden", [("qwen2vl-2b", 2.21e9, 28, 1536),
                                                              ("qwen2vl-7b", 8.29e9, 28, 3584)])
def test_preset_architectures(preset, params, layers, hidden):
    """The presets' configs give the released models' sizes (built on the meta device: no memory)."""
    p = PRESETS.get(preset)
    config = p.config()
    with torch.device("meta"):
        model = FAMILIES.get(p.family).model_class(config)
    count = sum(t.numel() for t in model.parameters())
    assert abs(count - params) / params < 0.01, count
    assert config.text_config.num_hidden_layers == layers
    assert config.text_config.hidden_size == hidden
    assert config.vision_config.hidden_size == hidden


def test_local_directory(tmp_path, tiny):
    tiny.model.save_pretrained(tmp_path / "m")
    tiny.tokenizer.save_pretrained(tmp_path / "m")
    loaded = LoadModel(str(tmp_path / "m"))()
    assert loaded.adapter is tiny.adapter
    for (name, pa), (_, pb) in zip(loaded.model.named_parameters(), tiny.model.named_parameters()):
        assert torch.equal(pa, pb), name
    assert loaded.tokenizer is not None


def test_directory_errors(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        LoadModel(str(tmp_path))()
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ModelError, match="'llama' is not supported"):
        LoadModel(str(tmp_path))()
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    with pytest.raises(ModelError, match="no \\*.safetensors"):
        LoadModel(str(tmp_path))()


def test_preset_weights_from_a_directory(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        LoadModel("qwen2vl-2b", weights=tmp_path)()


def test_unknown_dtype():
    with pytest.raises(ModelError, match="unknown dtype"):
        LoadModel("qwen2vl-tiny", dtype="int3")


def test_truncated_depth_keeps_width():
    loaded = LoadModel("qwen2vl-7b", structure_only=True, layers=2, vision_layers=1)()
    assert loaded.num_layers == 2
    assert len(loaded.model.model.language_model.layers) == 2
    assert len(loaded.model.model.visual.blocks) == 1
    assert loaded.config.text_config.hidden_size == 3584
    assert "first 2 decoder layers" in loaded.source and "first 1 vision blocks" in loaded.source


@pytest.mark.parametrize("kwargs, message", [
    ({"layers": 0}, "layers must be at least 1"),
    ({"layers": 5}, "only 4 decoder layers"),
    ({"vision_layers": 3}, "only 2 vision blocks"),
])
def test_truncated_depth_errors(kwargs, message):
    with pytest.raises(ModelError, match=message):
        LoadModel("qwen2vl-tiny", **kwargs)()


def test_truncation_needs_random_weights(tmp_path):
    with pytest.raises(ModelError, match="random-weight models only"):
        LoadModel("qwen2vl-2b", weights=tmp_path, layers=2)()
