"""Every adaptation method on the window backbone inside an ECGSequenceClassifier: train, save, reload identically.

The sequence model (K = 3 windows, a GRU or transformer over them) wraps a tiny random backbone saved like a
converted release; ``adapt`` targets the backbone inside, the context encoder trains beside it, and the saved
folder (atomic, completion marker, the backbone adapter in its plain-peft layout) reloads to the same logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from ecg_adapt.adaptation import adapt, load_adapted, save_adapted
from ecg_adapt.adaptation.config import UnsupportedAdaptationError
from ecg_adapt.adaptation.core import MODEL_COMPLETE_MARKER, SEQUENCE_WEIGHTS_NAME, IncompleteModelError, merge_for_deployment
from ecg_adapt.adaptation.optim import parameter_groups
from ecg_adapt.models.registry import load_backbone
from ecg_adapt.models.sequence import ECGSequenceClassifier
from ecg_adapt.processing import SignalContract

LABELS = ["W", "light", "deep", "REM"]

# (tiny family, method, options, pooling): transformer methods on HuBERT-ECG, the CNN adapter on ECGFounder.
CASES = [
    ("hubert_ecg", "lora", {"r": 4}, "mean"),
    ("hubert_ecg", "ia3", {}, "mean"),
    ("hubert_ecg", "houlsby_adapter", {}, "mean"),
    ("hubert_ecg", "prompt_tuning", {}, "mean"),
    ("hubert_ecg", "linear_probe", {}, "mean"),
    ("hubert_ecg", "linear_probe", {}, "attention"),  # the attention probe
    ("hubert_ecg", "bitfit", {}, "mean"),
    ("hubert_ecg", "full", {}, "mean"),
    ("ecgfounder", "lora", {"r": 4}, "mean"),
    ("ecgfounder", "conv_adapter", {"adapter_reduction_factor": 4}, "mean"),
]


def sequence_model(backbone_dir: Path, kind: str = "gru", pooling: str = "mean") -> ECGSequenceClassifier:
    torch.manual_seed(0)
    model = ECGSequenceClassifier.from_backbone(
        load_backbone(str(backbone_dir)), LABELS, context=1, problem_type="single_label_classification",
        pooling=pooling, sequence_model=kind, sequence_hidden_size=8, sequence_num_heads=2,
        ecg_channels=["ECG", "EKG"], ecg_lead="I")
    # out_proj starts at zero (a fresh model equals its window model); give it values so every part gets gradient
    torch.nn.init.normal_(model.context_encoder.out_proj.weight, std=0.1)
    return model


def context_batch(model: ECGSequenceClassifier, b: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    contract = SignalContract.from_dict(model.backbone.config.signal_contract)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((b, model.config.window_count) + tuple(contract.input_shape), generator=g)
    m = torch.ones_like(x, dtype=torch.long)
    x[0, 0], m[0, 0] = 0, 0  # the first epoch of a night has no left neighbour
    return {"input_values": x, "attention_mask": m, "labels": torch.tensor([0, 3][:b])}


@pytest.mark.parametrize("family,method,options,pooling", CASES, ids=[f"{c[0]}-{c[1]}-{c[3]}" for c in CASES])
def test_every_method_adapts_the_backbone_inside_trains_the_sequence_model_and_reloads_identically(
    family: str, method: str, options: dict, pooling: str, tiny_backbone_dirs: dict[str, Path], tmp_path: Path
) -> None:
    model = sequence_model(tiny_backbone_dirs[family], pooling=pooling)
    backbone_before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    adapted = adapt(model, method, **options)
    assert adapted is model and isinstance(adapted, ECGSequenceClassifier)
    assert all(p.requires_grad for p in model.context_encoder.parameters())
    batch = context_batch(model)
    groups = parameter_groups(adapted, learning_rate=1e-2, head_learning_rate=5e-2)
    head_group = [g for g in groups if g["name"].startswith("head")]
    assert any(n.startswith("context_encoder.") for g in head_group for n in g["param_names"])
    opt = torch.optim.AdamW(groups, lr=1e-2)
    before = {n: p.detach().clone() for n, p in adapted.named_parameters()}
    adapted.train()
    out = adapted(**batch)
    out.loss.backward()
    opt.step()
    changed = {n for n, p in adapted.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("context_encoder.") for n in changed), changed
    trained_in_window = {n for n in changed if not n.startswith("context_encoder.")}
    assert trained_in_window, "the method trained nothing in the window classifier"
    # the pretrained weights (peft keeps them under .base_layer) change with full fine-tuning only (and bitfit's biases)
    now = {n.replace(".base_layer", ""): p for n, p in model.backbone.named_parameters()}
    backbone_changed = [n for n, p in backbone_before.items() if not torch.equal(now[n], p)]
    if method == "full":
        assert backbone_changed
    elif method == "bitfit":
        assert backbone_changed and all(n.endswith("bias") for n in backbone_changed), backbone_changed
    else:
        assert not backbone_changed, backbone_changed

    folder = save_adapted(adapted, tmp_path / "model", extra_files={"task.json": "{}\n"})
    # Compared frozen, as the reloaded model runs: torch's CPU GRU takes another kernel when its weights require
    # grad, which moves the last bit of some logits.
    adapted.eval().requires_grad_(False)
    with torch.no_grad():
        logits = adapted(**batch).logits
    files = {p.name for p in folder.iterdir()}
    assert MODEL_COMPLETE_MARKER in files and not list(tmp_path.glob("*.tmp-save*"))
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "ecg_sequence_classifier" and config["context"] == 1
    assert config["ecg_channels"] == ["ECG", "EKG"] and config["ecg_lead"] == "I" and config["epoch_seconds"] == 30
    meta = json.loads((folder / "adaptation_config.json").read_text())
    assert meta["method"] == method and meta["model_type"] == "ecg_sequence_classifier"
    if method == "full":
        assert "model.safetensors" in files and SEQUENCE_WEIGHTS_NAME not in files
    else:
        assert SEQUENCE_WEIGHTS_NAME in files and "model.safetensors" not in files

    reloaded = load_adapted(folder)
    assert isinstance(reloaded, ECGSequenceClassifier) and reloaded.config.sequence_model == "gru"
    assert not any(p.requires_grad for p in reloaded.parameters())
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, logits)


def test_the_lora_backbone_adapter_keeps_the_plain_peft_layout(tiny_backbone_dirs: dict[str, Path], tmp_path: Path) -> None:
    """Plain peft loads the saved backbone adapter onto the plain backbone: same features as inside the model."""
    model = adapt(sequence_model(tiny_backbone_dirs["hubert_ecg"], kind="transformer"), "lora", r=4)
    for n, p in model.named_parameters():  # move the adapter away from its zero initialisation
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    folder = save_adapted(model, tmp_path / "model")
    backbone = load_backbone(str(tiny_backbone_dirs["hubert_ecg"]))
    plain = PeftModel.from_pretrained(backbone, str(folder)).eval()
    x = context_batch(model)["input_values"][:, 1]
    model.eval()
    with torch.no_grad():
        inside = model.backbone(x).last_hidden_state
        torch.testing.assert_close(plain(x).last_hidden_state, inside)
        assert not torch.allclose(load_backbone(str(tiny_backbone_dirs["hubert_ecg"]))(x).last_hidden_state, inside)


def test_sequence_folder_errors_are_clear(tiny_backbone_dirs: dict[str, Path], tmp_path: Path) -> None:
    model = adapt(sequence_model(tiny_backbone_dirs["hubert_ecg"]), "lora", r=4)
    with pytest.raises(ValueError, match="already carries an adapter"):
        adapt(model, "lora")
    folder = save_adapted(model, tmp_path / "model")
    (folder / SEQUENCE_WEIGHTS_NAME).unlink()
    with pytest.raises(IncompleteModelError, match=SEQUENCE_WEIGHTS_NAME):
        load_adapted(folder)


def test_every_parameter_is_in_the_graph_when_no_window_is_missing(tiny_backbone_dirs: dict[str, Path]) -> None:
    """DistributedDataParallel (without find_unused_parameters) needs every trainable parameter in every step's
    graph: the missing-window embedding gets a gradient (zero) from a batch whose windows are all present."""
    model = adapt(sequence_model(tiny_backbone_dirs["hubert_ecg"], kind="transformer"), "lora", r=4)
    batch = context_batch(model)
    batch["attention_mask"][:] = 1
    model.train()
    model(**batch).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    assert torch.count_nonzero(model.context_encoder.missing_window.grad) == 0


def test_merging_folds_the_backbone_adapter_and_keeps_the_sequence_model(tiny_backbone_dirs: dict[str, Path]) -> None:
    model = adapt(sequence_model(tiny_backbone_dirs["hubert_ecg"]), "lora", r=4)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    batch = context_batch(model)
    model.eval().requires_grad_(False)
    with torch.no_grad():
        expected = model(**batch).logits
        merged = merge_for_deployment(model)
        assert isinstance(merged, ECGSequenceClassifier) and merged.window_classifier is merged.base_window_classifier
        assert not any("lora_" in n for n, _ in merged.named_parameters())
        torch.testing.assert_close(merged(**batch).logits, expected, rtol=0, atol=1e-5)
    houlsby = adapt(sequence_model(tiny_backbone_dirs["hubert_ecg"]), "houlsby_adapter")
    with pytest.raises(UnsupportedAdaptationError, match="cannot be merged"):
        merge_for_deployment(houlsby)


def test_a_sequence_model_refuses_a_regression_problem_type() -> None:
    from ecg_adapt.models.sequence import ECGSequenceClassifierConfig

    with pytest.raises(ValueError, match="problem_type of a sequence model"):
        ECGSequenceClassifierConfig(problem_type="regression")
