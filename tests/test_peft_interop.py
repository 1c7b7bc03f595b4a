"""A saved peft-method run is a plain peft adapter of the plain backbone (issue 12, "Adapters that the ecosystem
can load"): plain ``PeftModel.from_pretrained(AutoModel.from_pretrained(backbone), run)`` gives the adapted
backbone's features, ``load_adapted`` gives the same logits and refuses adapters whose keys do not match, and
the saved configs use peft's key names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from tiny_backbones import TINY_CONFIGS, tiny_batch
from transformers import AutoModel

from ecg_adapt import ECGClassifier, adapt, load_adapted, load_backbone, save_adapted
from ecg_adapt.adaptation import AdaptationConfig
from ecg_adapt.adaptation.core import read_adaptation_config
from ecg_adapt.adaptation.peft_methods import HEAD_WEIGHTS_NAME, AdapterMismatchError
from ecg_adapt.models.registry import register_all_with_transformers

# LoRA on every tiny model of every discovered family (a new family is covered without editing this file); the
# other peft methods on one transformer, one patch transformer and one CNN.
FAMILIES = tuple(TINY_CONFIGS)
METHODS = ("lora", "ia3", "loha")
CASES = [(f, "lora") for f in FAMILIES] + [(f, m) for f in ("hubert_ecg", "st_mem", "ecgfounder") for m in METHODS[1:]]


def _trained_run(family: str, method: str, backbone_dir: Path, run: Path) -> tuple[torch.nn.Module, dict]:
    """Adapt, take two optimiser steps (so every adapter factor is non-trivial), save; return model and batch."""
    torch.manual_seed(1)
    clf = ECGClassifier.from_backbone(load_backbone(backbone_dir), ["a", "b", "c"], classifier_dropout=0.0)
    model = adapt(clf, AdaptationConfig(method=method, dropout=0.0))
    batch = tiny_batch(model, batch=2, seed=0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    model.train()
    for _ in range(2):
        opt.zero_grad()
        out = model(input_values=batch["input_values"], labels=torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
        out.loss.backward()
        opt.step()
    model.eval()
    save_adapted(model, run)
    return model, batch


def _features(backbone: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    out = backbone(x)
    return out.last_hidden_state, getattr(out, "pooler_output", None)


@pytest.mark.parametrize(("family", "method"), CASES)
def test_plain_peft_on_the_plain_backbone_reproduces_the_adapted_features_and_load_adapted_the_logits(
    family: str, method: str, tiny_backbone_dirs: dict[str, Path], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    model, batch = _trained_run(family, method, tiny_backbone_dirs[family], run)
    x = batch["input_values"]
    with torch.no_grad():
        adapted_backbone = model.base_model.model.backbone
        want_hidden, want_pooled = _features(adapted_backbone, x)
        want_logits = model(input_values=x).logits
        base_hidden, _ = _features(load_backbone(tiny_backbone_dirs[family]).eval(), x)
    assert not torch.allclose(want_hidden, base_hidden, atol=1e-4)  # training moved the adapter off identity

    cfg = json.loads((run / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(tiny_backbone_dirs[family]) and not cfg.get("modules_to_save")
    assert not any(k.startswith("base_model.model.backbone.") for k in load_file(str(run / "adapter_model.safetensors")))
    assert set(load_file(str(run / HEAD_WEIGHTS_NAME))) == {f"classifier.{n}" for n, _ in
                                                            model.base_model.model.classifier.original_module.named_parameters()}

    register_all_with_transformers()  # the one ecg_adapt call a plain-peft user makes (the card says so)
    plain = PeftModel.from_pretrained(AutoModel.from_pretrained(str(tiny_backbone_dirs[family])), str(run)).eval()
    with torch.no_grad():
        got_hidden, got_pooled = _features(plain, x)
    torch.testing.assert_close(got_hidden, want_hidden, rtol=0, atol=1e-6)
    if want_pooled is not None:
        torch.testing.assert_close(got_pooled, want_pooled, rtol=0, atol=1e-6)

    reloaded = load_adapted(run)
    with torch.no_grad():
        got_logits = reloaded(input_values=x).logits
    assert torch.equal(got_logits, want_logits)


@pytest.mark.parametrize("family", FAMILIES)
def test_load_adapted_refuses_an_adapter_with_a_renamed_key_naming_it(
    family: str, tiny_backbone_dirs: dict[str, Path], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    _trained_run(family, "lora", tiny_backbone_dirs[family], run)
    weights = load_file(str(run / "adapter_model.safetensors"))
    old = sorted(weights)[0]
    new = old.replace("lora_A", "lora_Z")
    weights[new] = weights.pop(old)
    save_file(weights, str(run / "adapter_model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(AdapterMismatchError) as err:
        load_adapted(run)
    assert old in str(err.value) and new in str(err.value) and str(run) in str(err.value)


def test_load_adapted_refuses_a_head_file_missing_a_tensor(tiny_backbone_dirs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    _trained_run("st_mem", "lora", tiny_backbone_dirs["st_mem"], run)
    head = load_file(str(run / HEAD_WEIGHTS_NAME))
    del head["classifier.bias"]
    save_file(head, str(run / HEAD_WEIGHTS_NAME), metadata={"format": "pt"})
    with pytest.raises(AdapterMismatchError, match=r"missing \['classifier\.bias'\]"):
        load_adapted(run)


def test_a_run_saved_in_the_earlier_classifier_keyed_layout_still_loads(tiny_backbone_dirs: dict[str, Path], tmp_path: Path) -> None:
    """Folders saved before the plain-backbone layout (keys with ``backbone.``, head inside the adapter file)."""
    run = tmp_path / "run"
    model, batch = _trained_run("hubert_ecg", "lora", tiny_backbone_dirs["hubert_ecg"], run)
    old = tmp_path / "old"
    shutil.copytree(run, old)
    model.save_pretrained(str(old))  # peft's own files for the whole classifier, as the earlier saves wrote them
    (old / HEAD_WEIGHTS_NAME).unlink()
    marker = json.loads((old / "model_complete.json").read_text())
    marker["files"].remove(HEAD_WEIGHTS_NAME)
    (old / "model_complete.json").write_text(json.dumps(marker))
    with torch.no_grad():
        assert torch.equal(load_adapted(old)(input_values=batch["input_values"]).logits,
                           model(input_values=batch["input_values"]).logits)


def test_saved_adaptation_config_uses_peft_names_and_round_trips(tiny_backbone_dirs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    _trained_run("st_mem", "lora", tiny_backbone_dirs["st_mem"], run)
    meta = json.loads((run / "adaptation_config.json").read_text())
    assert meta["lora_alpha"] == 16 and meta["lora_dropout"] == 0.0 and meta["r"] == 8
    assert "alpha" not in meta and "dropout" not in meta
    assert read_adaptation_config(run) == AdaptationConfig(method="lora", dropout=0.0)
    # peft's names and the short ones are the same fields; both spellings of one field are a conflict.
    assert AdaptationConfig.from_dict({"method": "lora", "lora_alpha": 4, "lora_dropout": 0.2}) == \
        AdaptationConfig.from_dict({"method": "lora", "alpha": 4, "dropout": 0.2})
    with pytest.raises(ValueError, match="alpha.*lora_alpha|lora_alpha.*alpha"):
        AdaptationConfig.from_dict({"method": "lora", "alpha": 4, "lora_alpha": 8})



def test_recipes_keep_the_short_names_and_adapt_accepts_peft_names(tiny_backbone_dirs: dict[str, Path]) -> None:
    from ecg_adapt.training.recipe import Recipe

    recipe = Recipe.from_dict({"adaptation": {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.2}})
    assert (recipe.adaptation.r, recipe.adaptation.alpha, recipe.adaptation.dropout) == (4, 8, 0.2)
    clf = ECGClassifier.from_backbone(load_backbone(tiny_backbone_dirs["st_mem"]), ["a", "b"])
    model = adapt(clf, AdaptationConfig(method="lora", r=4), lora_alpha=32, lora_dropout=0.0)
    assert (model.adaptation_config.r, model.adaptation_config.alpha, model.adaptation_config.dropout) == (4, 32, 0.0)
    assert model.peft_config["default"].lora_alpha == 32


def test_load_adapted_for_training_trains_the_same_parameters_as_adapt(tiny_backbone_dirs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    model, _ = _trained_run("hubert_ecg", "loha", tiny_backbone_dirs["hubert_ecg"], run)
    reloaded = load_adapted(run, is_trainable=True)
    trainable = {n for n, p in reloaded.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(".classifier.modules_to_save." in n for n in trainable)
