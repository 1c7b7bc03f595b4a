"""HuBERT-ECG: parity with the original code (golden fixtures), converter, masks, fine-tuning settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from ecg_adapt import ECGClassifier, adapt, load_backbone, load_processor
from ecg_adapt.data import read_wfdb
from ecg_adapt.models import CheckpointMismatchError
from ecg_adapt.models.hubert_ecg import HubertECGConfig, HubertECGModel, convert_hubert_ecg, load_original
from transformers import AutoModel, HubertModel

from conftest import TINY_HUBERT


def _meta(golden: Path) -> dict:
    return json.loads((golden / "hubert_ecg" / "meta.json").read_text())


def test_released_folder_loads_without_remote_code_and_matches_original_outputs(golden: Path) -> None:
    g = golden / "hubert_ecg"
    tol = _meta(golden)["tolerance"]
    x = torch.from_numpy(np.load(g / "model_input.npy"))
    for model in (load_backbone(g / "checkpoint"), AutoModel.from_pretrained(g / "checkpoint")):
        assert isinstance(model, HubertECGModel)
        with torch.no_grad():
            hidden = model.eval()(x).last_hidden_state.numpy()
        np.testing.assert_allclose(hidden, np.load(g / "hidden.npy"), **tol["hidden"])
        np.testing.assert_allclose(hidden.mean(axis=1), np.load(g / "features.npy"), **tol["features"])


def test_processor_reproduces_original_preprocessing_of_real_record(golden: Path, samples: Path) -> None:
    meta = _meta(golden)
    processor = load_processor(golden / "hubert_ecg" / "checkpoint")  # no preprocessor_config: family defaults
    record = read_wfdb(samples / "cinc2021" / "HR06000")
    out = processor.process(record.signal, record.sampling_rate, record.lead_names, record_id="HR06000")
    expected = np.load(golden / "hubert_ecg" / "model_input.npy")
    # The original test.py feeds the first 5 s; the processor's first window is that one.
    np.testing.assert_allclose(out.input_values[:1], expected, atol=meta["tolerance"]["model_input"]["atol"], rtol=0)
    assert out.input_values.shape == (2, 6000)  # 10 s record -> two 5 s windows


def test_converter_drops_the_pretraining_heads(golden: Path, tmp_path: Path) -> None:
    g = golden / "hubert_ecg"
    report = convert_hubert_ecg(g / "checkpoint", tmp_path / "converted")
    assert sorted(report.dropped) == ["final_proj.0.bias", "final_proj.0.weight", "label_embedding.0.weight"]
    # (files, loaders and golden outputs of the converted folder: tests/test_families_common.py)
    assert "final_proj.0.weight" not in load_file(str(tmp_path / "converted" / "model.safetensors"))


def test_old_weight_norm_keys_and_finetuned_prefix_convert(golden: Path, tmp_path: Path) -> None:
    g = golden / "hubert_ecg"
    sd = load_file(str(g / "checkpoint" / "model.safetensors"))
    old = {}
    for k, v in sd.items():
        k = k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v")
        old["hubert_ecg." + k] = v  # fine-tuned files prefix the backbone
    old["classifier.weight"] = torch.zeros(3, 64)
    folder = tmp_path / "old"
    folder.mkdir()
    save_file(old, str(folder / "model.safetensors"))
    (folder / "config.json").write_text((g / "checkpoint" / "config.json").read_text())
    model, report = load_original(folder)
    assert report.stripped_prefix == "hubert_ecg." and len(report.renamed) == 2 and "classifier.weight" in report.dropped
    with torch.no_grad():
        hidden = model(torch.from_numpy(np.load(g / "model_input.npy"))).last_hidden_state.numpy()
    np.testing.assert_allclose(hidden, np.load(g / "hidden.npy"), **_meta(golden)["tolerance"]["hidden"])
    # Without config.json the architecture is read from the tensors (+ the released head-count table).
    (folder / "config.json").unlink()
    with pytest.raises(ValueError, match="not a released HuBERT-ECG size"):
        load_original(folder)


def test_checkpoint_with_mismatched_keys_lists_them(golden: Path, tmp_path: Path) -> None:
    g = golden / "hubert_ecg"
    sd = load_file(str(g / "checkpoint" / "model.safetensors"))
    sd.pop("encoder.layers.1.attention.q_proj.weight")
    sd["encoder.layers.1.attention.qkv.weight"] = torch.zeros(3)
    sd["encoder.layer_norm.weight"] = torch.zeros(5)
    folder = tmp_path / "bad"
    folder.mkdir()
    save_file(sd, str(folder / "model.safetensors"))
    (folder / "config.json").write_text((g / "checkpoint" / "config.json").read_text())
    with pytest.raises(CheckpointMismatchError) as e:
        load_original(folder)
    msg = str(e.value)
    assert "missing keys (1): ['encoder.layers.1.attention.q_proj.weight']" in msg
    assert "unexpected keys (1): ['encoder.layers.1.attention.qkv.weight']" in msg
    assert "encoder.layer_norm.weight: checkpoint (5,) vs model (64,)" in msg


def test_frame_mask_matches_hubert_for_right_padding_and_handles_lead_holes() -> None:
    model = HubertECGModel(HubertECGConfig(**TINY_HUBERT))
    for n_valid in (6000, 5000, 3001, 640):
        mask = torch.zeros(1, 6000, dtype=torch.long)
        mask[:, :n_valid] = 1
        ours = model.frame_mask(mask, 93)
        theirs = HubertModel._get_feature_vector_attention_mask(model, 93, mask)
        assert torch.equal(ours, theirs), n_valid
    holes = torch.ones(12, 500, dtype=torch.long)
    holes[:, 300:] = 0  # a 3 s record padded to 5 s in every lead segment
    fm = model.frame_mask(holes.reshape(1, -1), 93)[0]
    assert 0 < fm.sum() < 93 * 0.6
    for lead in range(12):  # no valid frame may read a padded sample
        start, end = lead * 500 + 300, (lead + 1) * 500
        for f in torch.nonzero(fm).flatten().tolist():
            lo, hi = f * 64, f * 64 + 82
            assert hi <= start or lo >= end


def test_padding_does_not_change_pooled_features_of_the_real_part() -> None:
    torch.manual_seed(0)
    clf = ECGClassifier.from_backbone(HubertECGModel(HubertECGConfig(**TINY_HUBERT)), ["a", "b"]).eval()
    x = torch.randn(2, 6000)
    mask = torch.ones(2, 6000, dtype=torch.long)
    mask[1].view(12, 500)[:, 400:] = 0
    x2 = x.clone()
    x2[1].view(12, 500)[:, 400:] = 99.0  # garbage in the padding
    with torch.no_grad():
        a = clf(x, attention_mask=mask).logits
        b = clf(x2, attention_mask=mask).logits
    # The first layer's GroupNorm sees the whole sequence (as in the original), so padding content is
    # not fully isolated; what the mask guarantees is that padded frames are neither attended nor pooled.
    assert torch.allclose(a[0], b[0])
    assert not torch.allclose(a[1], clf(x, attention_mask=None).logits[1])


def test_released_masking_settings_do_not_corrupt_fine_tuning(golden: Path) -> None:
    backbone = load_backbone(golden / "hubert_ecg" / "checkpoint")
    assert backbone.config.mask_time_prob == pytest.approx(0.33) and backbone.config.apply_spec_augment
    clf = ECGClassifier.from_backbone(backbone, ["a", "b"], classifier_dropout=0.0)
    for m in clf.modules():  # no dropout: any train/eval difference would be masking
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if type(m).__name__ == "HubertAttention":
            m.dropout = 0.0  # attention dropout is a float, not a module
    x = torch.from_numpy(np.load(golden / "hubert_ecg" / "model_input.npy")).repeat(4, 1)
    clf.train()
    with torch.no_grad():
        train_out = clf(x).pooled
        eval_out = clf.eval()(x).pooled
    torch.testing.assert_close(train_out, eval_out)
    assert not hasattr(clf.backbone, "masked_spec_embed")
    assert clf.backbone.config.layerdrop == 0.0


def test_legacy_pt_with_pickled_config_needs_explicit_acknowledgement(golden: Path, tmp_path: Path) -> None:
    import sys
    import types

    g = golden / "hubert_ecg"
    # Recreate the legacy container: a pickled HuBERTECGConfig object of the original code (a module that
    # does not exist in ecg_adapt's environment) + a fine-tuned state dict with the hubert_ecg. prefix.
    fake = types.ModuleType("hubert_ecg")

    class HuBERTECGConfig:  # noqa: N801 - the original class name
        pass

    HuBERTECGConfig.__module__ = "hubert_ecg"
    HuBERTECGConfig.__qualname__ = "HuBERTECGConfig"
    fake.HuBERTECGConfig = HuBERTECGConfig
    sys.modules["hubert_ecg"] = fake
    try:
        cfg = HuBERTECGConfig()
        cfg.__dict__.update(json.loads((g / "checkpoint" / "config.json").read_text()))
        sd = {"hubert_ecg." + k: v for k, v in load_file(str(g / "checkpoint" / "model.safetensors")).items()}
        sd["classifier.weight"], sd["classifier.bias"] = torch.zeros(4, 64), torch.zeros(4)
        torch.save({"model_config": cfg, "model_state_dict": sd, "finetuning_vocab_size": 4}, tmp_path / "ft.pt")
    finally:
        del sys.modules["hubert_ecg"]
    with pytest.raises(ValueError, match="allow_pickle=True"):
        load_original(tmp_path / "ft.pt")
    model, report = load_original(tmp_path / "ft.pt", allow_pickle=True)
    assert report.stripped_prefix == "hubert_ecg." and "classifier.weight" in report.dropped
    assert model.config.hidden_size == 64 and model.config.num_attention_heads == 4
    with torch.no_grad():
        hidden = model(torch.from_numpy(np.load(g / "model_input.npy"))).last_hidden_state.numpy()
    np.testing.assert_allclose(hidden, np.load(g / "hidden.npy"), **_meta(golden)["tolerance"]["hidden"])


def test_frozen_feature_encoder_is_not_backpropagated_through_and_gradients_are_unchanged(monkeypatch) -> None:
    """With every conv weight frozen (LoRA), the conv stack's input no longer requires grad: same gradients."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_backbones import tiny_batch, tiny_classifier

    def lora_grads(force_input_grad: bool) -> tuple[bool, dict]:
        clf = tiny_classifier("hubert_ecg")
        if force_input_grad:  # the behaviour before: transformers' default
            monkeypatch.setattr(type(clf.backbone), "_reentrant_checkpointing", lambda self: True)
        model = adapt(clf, "lora", r=4, dropout=0.0).train()
        model(**tiny_batch(clf), labels=torch.ones(2, 3)).loss.backward()
        monkeypatch.undo()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return clf.backbone.feature_extractor._requires_grad, grads

    skipped, fast = lora_grads(False)
    forced, slow = lora_grads(True)
    assert skipped is False and forced is True
    assert fast.keys() == slow.keys() and all(torch.allclose(fast[k], slow[k], atol=1e-7) for k in fast)
    full = adapt(tiny_classifier("hubert_ecg"), "full").train()
    full(**tiny_batch(full))
    assert full.backbone.feature_extractor._requires_grad is True  # trainable convs keep their gradients
