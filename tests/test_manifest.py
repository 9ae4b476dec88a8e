"""The model's state-dict keys and shapes equal the official ones."""

from __future__ import annotations

import json

import pytest
import torch

from napari_focus import build_model


@pytest.mark.parametrize("size", ["large", "giant"])
def test_keys_and_shapes_equal_official(size, focus_reference):
    manifest = json.loads((focus_reference / "state_dict_manifest.json").read_text())[size]
    prefixes = tuple(manifest["training_only_prefixes"])
    expected = {
        key: list(shape) for key, shape in manifest["keys"].items() if not key.startswith(prefixes)
    }
    with torch.device("meta"):
        model = build_model(size)
    got = {key: list(t.shape) for key, t in model.state_dict().items()}
    assert sorted(set(expected) - set(got)) == []
    assert sorted(set(got) - set(expected)) == []
    mismatched = {k: (got[k], expected[k]) for k in expected if got[k] != expected[k]}
    assert mismatched == {}
    # the manifest counts every state-dict entry, BatchNorm statistics included
    assert sum(t.numel() for t in model.state_dict().values()) == manifest["num_params_inference"]


def test_build_model_accepts_mapping_and_rejects_bad(tiny_mlp):
    arch, _ = tiny_mlp
    with torch.device("meta"):
        model = build_model(arch)
    assert model.architecture.embed_dim == 64
    assert not model.training
    with pytest.raises(ValueError, match="lacks keys"):
        build_model({k: v for k, v in arch.items() if k != "depth"})
    with pytest.raises(ValueError, match="unknown keys"):
        build_model({**arch, "colour": 3})
    with pytest.raises(ValueError, match="unknown model size"):
        build_model("huge")
