"""Adaptation methods train what they claim and save only that; saved models reload to identical logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from ecg_adapt import ECGClassifier, adapt, count_parameters, load_adapted, load_backbone, load_processor, save_adapted


def _classifier(backbone_dir: Path) -> ECGClassifier:
    torch.manual_seed(1)
    return ECGClassifier.from_backbone(load_backbone(backbone_dir), ["NORM", "MI", "STTC"])


def _step(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """One AdamW step on random data; returns the parameters before the step."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 6000, generator=g)
    y = (torch.rand(4, 3, generator=g) > 0.5).float()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    model(input_values=x, labels=y).loss.backward()
    opt.step()
    return before


def _changed(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    return {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}


def test_lora_step_changes_only_lora_and_head_parameters(tiny_backbone_dir: Path) -> None:
    model = adapt(_classifier(tiny_backbone_dir), "lora", r=8)
    assert isinstance(model, PeftModel)
    before = _step(model)
    changed = _changed(model, before)
    assert changed, "nothing trained"
    assert all(("lora_" in n) or ("classifier.modules_to_save" in n) for n in changed), sorted(changed)
    assert any("classifier.modules_to_save" in n for n in changed)
    targets = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in changed if "lora_" in n}
    assert targets == {"q_proj", "k_proj", "v_proj", "out_proj", "intermediate_dense", "output_dense"}
    pc = count_parameters(model)
    assert 0 < pc.trainable < 0.5 * pc.total


def test_lora_adapter_roundtrip_gives_identical_logits(tiny_backbone_dir: Path, tmp_path: Path) -> None:
    model = adapt(_classifier(tiny_backbone_dir), "lora", r=8)
    _step(model)
    _step(model, seed=1)
    processor = load_processor(tiny_backbone_dir)
    save_adapted(model, tmp_path / "run", processor)
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert {"adapter_config.json", "adapter_model.safetensors", "config.json", "adaptation_config.json",
            "preprocessor_config.json"} <= set(files)
    assert "model.safetensors" not in files  # the backbone is never re-saved for adapter methods
    saved = load_file(str(tmp_path / "run" / "adapter_model.safetensors"))
    assert all("lora_" in k or ".classifier." in k for k in saved), sorted(saved)
    assert json.loads((tmp_path / "run" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_backbone_dir)

    x = torch.randn(3, 6000, generator=torch.Generator().manual_seed(5))
    model.eval()
    with torch.no_grad():
        expected = model(input_values=x).logits
        again = load_adapted(tmp_path / "run")
        got = again(input_values=x).logits
    assert torch.equal(expected, got)
    with torch.no_grad():  # and the adapter matters: the bare backbone + head gives something else
        base = _classifier(tiny_backbone_dir).eval()(input_values=x).logits
    assert not torch.allclose(base, got)


def test_full_fine_tuning_trains_everything_and_reloads(tiny_backbone_dir: Path, tmp_path: Path) -> None:
    model = adapt(_classifier(tiny_backbone_dir), "full")
    before = _step(model)
    changed = _changed(model, before)
    # Every parameter on the path of the gradient moves (no frozen part, nothing left out).
    assert changed == set(before), sorted(set(before) - changed)
    save_adapted(model, tmp_path / "full")
    assert (tmp_path / "full" / "model.safetensors").exists()
    x = torch.randn(2, 6000)
    with torch.no_grad():
        assert torch.equal(model.eval()(input_values=x).logits, load_adapted(tmp_path / "full")(input_values=x).logits)


def test_linear_probe_trains_only_the_head_and_saves_only_the_head(tiny_backbone_dir: Path, tmp_path: Path) -> None:
    model = adapt(_classifier(tiny_backbone_dir), "linear_probe")
    before = _step(model)
    assert _changed(model, before) == {"classifier.weight", "classifier.bias"}
    model.train()
    assert not model.backbone.training and model.classifier.training  # frozen features stay deterministic
    save_adapted(model, tmp_path / "probe")
    assert sorted(load_file(str(tmp_path / "probe" / "adapter_model.safetensors"))) == ["classifier.bias", "classifier.weight"]
    assert not (tmp_path / "probe" / "model.safetensors").exists()
    x = torch.randn(2, 6000)
    with torch.no_grad():
        assert torch.equal(model.eval()(input_values=x).logits, load_adapted(tmp_path / "probe")(input_values=x).logits)


def test_unknown_method_and_unreloadable_backbone_are_clear_errors(tiny_backbone_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unknown adaptation method 'lorra'"):
        adapt(_classifier(tiny_backbone_dir), "lorra")
    from ecg_adapt.models.hubert_ecg import HubertECGConfig, HubertECGModel

    from conftest import TINY_HUBERT

    clf = ECGClassifier.from_backbone(HubertECGModel(HubertECGConfig(**TINY_HUBERT)), ["a", "b"])
    with pytest.raises(ValueError, match="backbone must be reloadable"):
        save_adapted(adapt(clf, "lora"), tmp_path / "x")
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob("x*"))


def test_methods_cli_prints_every_method_and_the_family_matrix_with_reasons(capsys: pytest.CaptureFixture) -> None:
    import json as _json

    from ecg_adapt.adaptation import METHODS
    from ecg_adapt.cli import main

    assert main(["methods", "--json"]) == 0
    matrix = _json.loads(capsys.readouterr().out)
    # Rows for the released architectures of every discovered family (a new family folder adds its rows).
    from ecg_adapt.models.registry import FAMILIES

    assert {key.split("/")[0] for key in matrix} == set(FAMILIES)
    assert set(matrix) <= {key for family in FAMILIES.values() for key in family.variants}
    assert {"hubert_ecg", "ecg_fm", "ecgfounder", "st_mem", "merl/resnet", "merl/vit", "ecg_jepa", "ecg_cpc",
            "ecgfm_ked"} <= set(matrix)
    assert all(set(METHODS) <= set(row) for row in matrix.values())
    assert matrix["hubert_ecg"]["houlsby_adapter"] == "ok" and matrix["ecgfounder"]["conv_adapter"] == "ok"
    assert "use conv_adapter" in matrix["ecgfounder"]["prompt_tuning"]
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert all(f"`{m}`" in out for m in METHODS) and "| family |" in out
