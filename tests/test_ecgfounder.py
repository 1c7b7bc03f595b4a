"""ECGFounder: parity with the original code (golden fixtures), converter, processor, masks and LoRA."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel

from ecg_adapt import ECGClassifier, load_processor
from ecg_adapt.data import read_wfdb
from ecg_adapt.models import CheckpointMismatchError, ecgfounder
from ecg_adapt.models.ecgfounder import (
    ECGFOUNDER_1LEAD_CONTRACT,
    ECGFOUNDER_CONTRACT,
    ECGFounderConfig,
    ECGFounderModel,
    convert_ecgfounder,
    default_processor_steps,
    load_original,
)
from ecg_adapt.processing import ECGProcessor


# (folder under golden/ecgfounder, checkpoint file, contract)
VARIANTS = {
    "12lead": ("", "12_lead_ECGFounder_small_random.pth", ECGFOUNDER_CONTRACT),
    "1lead": ("1lead/", "1lead/1_lead_ECGFounder_small_random.pth", ECGFOUNDER_1LEAD_CONTRACT),
}
TINY = dict(ecgfounder.FAMILY.tiny_configs["ecgfounder"])


def _dir(golden: Path) -> Path:
    return golden / "ecgfounder"


def _tol(golden: Path) -> dict:
    tol = json.loads((_dir(golden) / "meta.json").read_text())["tolerance"]
    return {k: {"atol": v["atol"], "rtol": v["rtol"]} for k, v in tol.items() if k in ("model_input", "hidden", "features", "logits")}


def _check_outputs(model: torch.nn.Module, golden: Path, variant: str) -> None:
    """Compare hidden (channels-first in the fixture), features and logits with the original's."""
    sub = _dir(golden) / VARIANTS[variant][0]
    tol = _tol(golden)
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(np.load(sub / "model_input.npy")))
    np.testing.assert_allclose(out.last_hidden_state.transpose(1, 2).numpy(), np.load(sub / "hidden.npy"), **tol["hidden"])
    np.testing.assert_allclose(out.pooler_output.numpy(), np.load(sub / "features.npy"), **tol["features"])
    np.testing.assert_allclose(out.logits.numpy(), np.load(sub / "logits.npy"), **tol["logits"])


def _raw_state_dict(golden: Path, variant: str = "12lead") -> dict[str, torch.Tensor]:
    return dict(torch.load(_dir(golden) / VARIANTS[variant][1], map_location="cpu", weights_only=False)["state_dict"])


# ---------------------------------------------------------------------------------------------- golden parity
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_original_checkpoint_reproduces_hidden_features_and_logits(golden: Path, variant: str) -> None:
    model, report = load_original(_dir(golden) / VARIANTS[variant][1])
    # The container as released: only state_dict is used, the rest is reported; numpy val_auroc needs no pickle.
    assert sorted(report.dropped) == [f"checkpoint[{k!r}]" for k in ("epoch", "optimizer", "scheduler", "step", "val_auroc")]
    assert report.stripped_prefix is None and not report.renamed
    cfg = model.config
    assert (cfg.in_channels, cfg.base_filters, cfg.filter_list, cfg.m_blocks_list) == (
        12 if variant == "12lead" else 1, 16, [16, 40, 40, 64, 64], [2, 2, 1, 2, 1])
    assert (cfg.kernel_size, cfg.groups_width, cfg.stride, cfg.n_classes, cfg.hidden_size) == (16, 16, 2, 150, 64)
    assert not cfg.use_bn and not cfg.use_do  # the fixture's random BN tensors must not be applied
    assert cfg.signal_contract == VARIANTS[variant][2].to_dict()
    _check_outputs(model, golden, variant)


def test_classifier_replaces_the_original_head(golden: Path) -> None:
    model, _ = load_original(_dir(golden) / VARIANTS["12lead"][1])
    clf = ECGClassifier.from_backbone(model, ["a", "b"]).eval()
    assert clf.backbone.dense is None and clf.config.backbone_config["n_classes"] == 0  # head replaced, as in finetune_model.py
    # (the pooled features equal the original's: tests/test_families_common.py)


# ------------------------------------------------------------------------------------------------- processor
@pytest.mark.parametrize(
    "contract, pipeline, expected",
    [
        (ECGFOUNDER_CONTRACT, "dataset", "model_input.npy"),
        (ECGFOUNDER_1LEAD_CONTRACT, "dataset", "1lead/model_input.npy"),
        (ECGFOUNDER_CONTRACT, "ptbxl_eval", "model_input_ptbxl_eval.npy"),
    ],
)
def test_processor_reproduces_original_preprocessing(golden: Path, samples: Path, contract, pipeline: str, expected: str) -> None:
    record = read_wfdb(samples / "cinc2021" / "HR06000")
    processor = ECGProcessor(contract, default_processor_steps(pipeline=pipeline))
    out = processor.process(record.signal, record.sampling_rate, record.lead_names, record_id="HR06000")
    # A 10 s, 500 Hz record is one window: the whole file, as the original reads it (no crop).
    assert out.input_values.shape == (1, contract.n_leads, 5000) and out.input_values.dtype == np.float32
    np.testing.assert_allclose(out.input_values, np.load(_dir(golden) / expected), atol=_tol(golden)["model_input"]["atol"], rtol=0)


def test_processor_windows_long_records_at_other_rates(samples: Path) -> None:
    record = read_wfdb(samples / "ptbdb" / "s0010_re")  # 15 leads, 1000 Hz, 38.4 s, lower-case names
    out = ECGProcessor(ECGFOUNDER_CONTRACT, default_processor_steps()).process(record.signal, record.sampling_rate, record.lead_names)
    assert out.input_values.shape == (4, 12, 5000)  # 0, 10, 20 s and one aligned to the end (28.4 s)
    assert out.report.window_starts_s == [0.0, 10.0, 20.0, 28.4]
    x = out.input_values.astype(np.float64)
    # Every window is z-scored on its own over all leads together (the original's one input), not per lead.
    np.testing.assert_allclose(x.mean(axis=(1, 2)), 0.0, atol=1e-6)
    np.testing.assert_allclose(x.std(axis=(1, 2)), 1.0, atol=1e-5)
    assert np.abs(x.std(axis=2) - 1.0).max() > 0.05
    first = ECGProcessor(ECGFOUNDER_CONTRACT, default_processor_steps("first")).process(record.signal, record.sampling_rate, record.lead_names)
    np.testing.assert_array_equal(first.input_values[0], out.input_values[0])


# ------------------------------------------------------------------------------------------------- converter
def test_converted_folder_carries_the_family_processor(golden: Path, samples: Path, tmp_path: Path) -> None:
    dst = tmp_path / "converted"
    convert_ecgfounder(_dir(golden) / VARIANTS["12lead"][1], dst)
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    assert json.loads((dst / "config.json").read_text())["model_type"] == "ecgfounder"
    # (the three loaders and the golden outputs of the converted folder: tests/test_families_common.py)
    # The saved processor (with the family's own steps) reproduces the original input.
    record = read_wfdb(samples / "cinc2021" / "HR06000")
    out = load_processor(dst).process(record.signal, record.sampling_rate, record.lead_names)
    np.testing.assert_allclose(out.input_values, np.load(_dir(golden) / "model_input.npy"), atol=_tol(golden)["model_input"]["atol"], rtol=0)
    assert [s["name"] for s in json.loads((dst / "preprocessor_config.json").read_text())["steps"]][2:5] == [
        "ecgfounder_notch", "ecgfounder_butterworth_ba", "ecgfounder_median_baseline"]


def test_auto_config_and_from_config_build_the_family() -> None:
    cfg = AutoConfig.for_model("ecgfounder", **TINY)
    model = AutoModel.from_config(cfg)
    assert isinstance(model, ECGFounderModel) and model.config.hidden_size == 24
    reloaded = ECGFounderConfig.from_dict(cfg.to_dict())
    assert reloaded.signal_contract == ECGFOUNDER_CONTRACT.to_dict() and reloaded.filter_list == [8, 16, 24]
    with pytest.raises(ValueError, match="hidden_size must equal"):
        ECGFounderConfig(**TINY, hidden_size=7)
    with pytest.raises(ValueError, match="12 or 1 input leads"):
        ECGFounderConfig(in_channels=8)


def test_mismatched_checkpoint_lists_every_offending_key(golden: Path, tmp_path: Path) -> None:
    sd = _raw_state_dict(golden)
    sd["stage_list.1.block_list.0.conv1.weight"] = sd.pop("stage_list.1.block_list.0.conv1.conv.weight")
    del sd["stage_list.3.block_list.1.se_fc2.bias"]
    sd["stage_list.2.block_list.0.se_fc1.bias"] = torch.zeros(3)
    torch.save({"epoch": 0, "state_dict": sd}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointMismatchError) as e:
        load_original(tmp_path / "bad.pth")
    msg = str(e.value)
    assert "missing keys (2): ['stage_list.1.block_list.0.conv1.conv.weight', 'stage_list.3.block_list.1.se_fc2.bias']" in msg
    assert "unexpected keys (1): ['stage_list.1.block_list.0.conv1.weight']" in msg
    assert "stage_list.2.block_list.0.se_fc1.bias: checkpoint (3,) vs model (20,)" in msg


def test_checkpoint_variants_load(golden: Path, tmp_path: Path) -> None:
    sd = _raw_state_dict(golden)
    # DataParallel-saved bare state dict.
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "dp.pth")
    model, report = load_original(tmp_path / "dp.pth")
    assert report.stripped_prefix == "module." and not report.dropped
    _check_outputs(model, golden, "12lead")
    # safetensors, and a folder holding exactly one checkpoint.
    (tmp_path / "st").mkdir()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "st" / "w.safetensors"))
    _check_outputs(load_original(tmp_path / "st")[0], golden, "12lead")
    # Head dropped on request (what finetune_model.py does), features unchanged.
    model, report = load_original(_dir(golden) / VARIANTS["12lead"][1], keep_pretrained_head=False)
    assert {"dense.weight", "dense.bias"} <= set(report.dropped) and model.dense is None and model.config.n_classes == 0
    with torch.no_grad():
        feats = model(torch.from_numpy(np.load(_dir(golden) / "model_input.npy"))).pooler_output.numpy()
    np.testing.assert_allclose(feats, np.load(_dir(golden) / "features.npy"), **_tol(golden)["features"])
    # A fine-tuned file (downstream head of another size): n_classes comes from the tensors.
    sd["dense.weight"], sd["dense.bias"] = torch.zeros(5, 64), torch.zeros(5)
    torch.save({"state_dict": sd}, tmp_path / "ft.pth")
    assert load_original(tmp_path / "ft.pth")[0].config.n_classes == 5


class _Opaque:
    """A pickled object that weights_only loading refuses."""


def test_arbitrary_pickle_needs_allow_pickle(golden: Path, tmp_path: Path) -> None:
    torch.save({"state_dict": _raw_state_dict(golden), "args": _Opaque()}, tmp_path / "opaque.pth")
    with pytest.raises(ValueError, match="allow_pickle=True") as e:
        load_original(tmp_path / "opaque.pth")
    assert isinstance(e.value.__cause__, pickle.UnpicklingError)
    model, report = load_original(tmp_path / "opaque.pth", allow_pickle=True)
    assert "checkpoint['args']" in report.dropped
    _check_outputs(model, golden, "12lead")


def test_released_variant_table_matches_the_configs() -> None:
    rows = {v["name"]: v for v in ecgfounder.RELEASED_VARIANTS}
    assert set(rows) == {"ecgfounder-12lead", "ecgfounder-1lead"}
    for v in rows.values():
        with torch.device("meta"):
            model = ECGFounderModel(ECGFounderConfig(**v["config"]))
        total = sum(p.numel() for p in model.parameters())
        assert total == v["parameters"]
        assert total - sum(p.numel() for p in model.dense.parameters()) == v["parameters_backbone"]
        assert len(model.state_dict()) == 509 and model.config.hidden_size == 1024
    assert rows["ecgfounder-1lead"]["config"]["in_channels"] == 1


# ---------------------------------------------------------------------------------------------- masks, LoRA
def test_attention_mask_semantics() -> None:
    torch.manual_seed(0)
    model = ECGFounderModel(ECGFounderConfig(**TINY)).eval()
    x = torch.randn(2, 12, 1000)
    with torch.no_grad():
        plain = model(x)
        ones = model(x, attention_mask=torch.ones(2, 12, 1000, dtype=torch.long))
        assert torch.equal(plain.last_hidden_state, ones.last_hidden_state) and torch.equal(plain.pooler_output, ones.pooler_output)
        mask = torch.ones(2, 1000, dtype=torch.long)
        mask[1, 700:] = 0  # a short record, right-padded
        garbage = x.clone()
        garbage[1, :, 700:] = 50.0
        a, b = model(x, attention_mask=mask), model(garbage, attention_mask=mask)
        torch.testing.assert_close(a.pooler_output, b.pooler_output)  # padding content never reaches the output
        torch.testing.assert_close(a.pooler_output[0], plain.pooler_output[0])
        assert not torch.allclose(a.pooler_output[1], plain.pooler_output[1], atol=1e-4)
        fm = model.frame_mask(mask, a.last_hidden_state.shape[1])
        assert fm.shape == (2, 63) and fm[0].all() and fm[1].sum() == 44  # ceil(700 / 16)
        # pooler_output is the mean of last_hidden_state over the real frames
        torch.testing.assert_close(a.pooler_output[1], a.last_hidden_state[1, fm[1]].mean(0))
        full = model(x, output_hidden_states=True)
        assert [tuple(h.shape) for h in full.hidden_states] == [(2, 500, 8), (2, 250, 8), (2, 125, 16), (2, 63, 24)]
        assert torch.equal(full.hidden_states[-1], plain.last_hidden_state) and full.logits.shape == (2, 5)
        as_tuple = model(x, return_dict=False)
        assert torch.equal(as_tuple[0], plain.last_hidden_state) and torch.equal(as_tuple[1], plain.pooler_output)


def test_fine_tuned_classifier_saves_and_reloads(golden: Path, tmp_path: Path) -> None:
    backbone, _ = load_original(_dir(golden) / VARIANTS["1lead"][1])
    clf = ECGClassifier.from_backbone(backbone, ["a", "b"]).eval()
    clf.save_pretrained(tmp_path / "clf")
    reloaded = ECGClassifier.from_pretrained(tmp_path / "clf").eval()
    assert isinstance(reloaded.backbone, ECGFounderModel) and reloaded.backbone.dense is None
    x = torch.from_numpy(np.load(_dir(golden) / "1lead" / "model_input.npy"))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x).logits, clf(x).logits, atol=0, rtol=0)
