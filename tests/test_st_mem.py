"""ST-MEM: parity with the original code (golden fixtures), converter, preprocessing, masks and LoRA."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ecg_adapt import load_processor
from ecg_adapt.data import read_wfdb
from ecg_adapt.models import CheckpointMismatchError
from ecg_adapt.models import st_mem
from ecg_adapt.models.st_mem import (
    ST_MEM_CONTRACT,
    STMEMConfig,
    STMEMModel,
    convert_st_mem,
    default_processor_steps,
    load_original,
)
from ecg_adapt.models.st_mem.modeling import sincos_position_table
from ecg_adapt.models.st_mem.processing import ncrop_starts
from ecg_adapt.processing import ECGProcessor
from transformers import AutoConfig, AutoModel


TINY = dict(st_mem.FAMILY.tiny_configs["st_mem"])


def _meta(golden: Path) -> dict:
    return json.loads((golden / "st_mem" / "meta.json").read_text())


def _tol(golden: Path) -> dict[str, dict[str, float]]:
    """meta.json tolerances as assert_allclose keyword arguments (atol, rtol) per output."""
    tol = _meta(golden)["tolerance"]
    return {k: {"atol": v["atol"], "rtol": v["rtol"]} for k, v in tol.items() if isinstance(v, dict)}


def _run(model: torch.nn.Module, x: np.ndarray, **kw):
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x), **kw)


@pytest.mark.parametrize("name", ["encoder_tiny_random.pth", "mae_full_tiny_random.pth"])
def test_both_checkpoint_files_reproduce_original_hidden_and_features(golden: Path, name: str) -> None:
    g, tol = golden / "st_mem", _tol(golden)
    model, report = load_original(g / name)
    x = np.load(g / "model_input.npy")
    out = _run(model, x)
    np.testing.assert_allclose(out.last_hidden_state.numpy(), np.load(g / "hidden.npy"), **tol["hidden"])
    np.testing.assert_allclose(out.pooler_output.numpy(), np.load(g / "features.npy"), **tol["features"])
    # An all-ones attention mask is no mask, bit for bit.
    masked = _run(model, x, attention_mask=torch.ones(x.shape, dtype=torch.long))
    assert torch.equal(masked.pooler_output, out.pooler_output)
    assert torch.equal(masked.last_hidden_state, out.last_hidden_state)
    # The architecture was read from the tensors (+ the checkpoint's config for the head count).
    kw = _meta(golden)["original_kwargs"]
    assert (model.config.width, model.config.depth, model.config.heads, model.config.mlp_dim) == (
        kw["width"], kw["depth"], kw["heads"], kw["mlp_dim"])
    if name.startswith("mae"):
        assert report.stripped_prefix == "encoder."
        assert {"mask_embedding", "decoder_pos_embed", "decoder_norm.weight", "decoder_head.weight",
                "to_patch_embedding.2.weight", "checkpoint['optimizer']", "checkpoint['scaler']"} <= set(report.dropped)
        assert not any(k.startswith("encoder.") for k in report.dropped)
    else:
        assert report.dropped == [] and report.stripped_prefix is None


@pytest.mark.parametrize("window_mode", ["all", "first"])
def test_processor_reproduces_original_preprocessing_of_real_record(golden: Path, samples: Path, window_mode: str) -> None:
    record = read_wfdb(samples / "cinc2021" / "HR06000")
    processor = ECGProcessor(ST_MEM_CONTRACT, default_processor_steps(window_mode))
    out = processor.process(record.signal, record.sampling_rate, record.lead_names, record_id="HR06000")
    expected = np.load(golden / "st_mem" / "model_input.npy")
    # One 10 s window -> the original's 3 crops (starts 0, 0.5, 1 s at 250 Hz), crop before filtering.
    assert out.input_values.shape == expected.shape == (3, 12, 2250)
    assert out.report.window_starts_s == [0.0, 0.5, 1.0]
    np.testing.assert_allclose(out.input_values, expected, **_tol(golden)["model_input"])
    assert out.attention_mask.all()


def test_converter_drops_the_decoder_and_saves_the_processor(golden: Path, samples: Path, tmp_path: Path) -> None:
    g, tol = golden / "st_mem", _tol(golden)
    dst = tmp_path / "converted"
    convert_st_mem(g / "mae_full_tiny_random.pth", dst)
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    assert json.loads((dst / "config.json").read_text())["model_type"] == "st_mem"
    assert not any(k.startswith(("decoder", "encoder.", "mask_")) for k in load_file(str(dst / "model.safetensors")))
    x = np.load(g / "model_input.npy")
    # (the three loaders and the golden outputs of the converted folder: tests/test_families_common.py)
    record = read_wfdb(samples / "cinc2021" / "HR06000")
    batch = load_processor(dst)(record)
    np.testing.assert_allclose(batch["input_values"].numpy(), x, atol=tol["model_input"]["atol"], rtol=0)


def test_checkpoint_with_renamed_or_missing_keys_lists_them(golden: Path, tmp_path: Path) -> None:
    ckpt = torch.load(golden / "st_mem" / "encoder_tiny_random.pth", map_location="cpu", weights_only=True)
    sd = ckpt["model"]
    sd["block1.attn.fn.qkv.weight"] = sd.pop("block1.attn.fn.to_qkv.weight")  # renamed
    del sd["lead_embeddings.11"]  # missing (-> 11 leads inferred, so the shapes still agree)
    del sd["norm.bias"]
    torch.save(ckpt, tmp_path / "bad.pth")
    with pytest.raises(CheckpointMismatchError) as e:
        load_original(tmp_path / "bad.pth")
    msg = str(e.value)
    assert "missing keys (2): ['block1.attn.fn.to_qkv.weight', 'norm.bias']" in msg
    assert "unexpected keys (1): ['block1.attn.fn.qkv.weight']" in msg


def test_bare_prefixed_and_finetuned_state_dicts_without_config(golden: Path, tmp_path: Path) -> None:
    g = golden / "st_mem"
    sd = torch.load(g / "encoder_tiny_random.pth", map_location="cpu", weights_only=True)["model"]
    # A DDP-saved fine-tuned ST_MEM_ViT: module. prefix, a 5-class head, no container, no config.
    ft = {"module." + k: v for k, v in sd.items()}
    ft["module.head.weight"], ft["module.head.bias"] = torch.zeros(5, 128), torch.zeros(5)
    torch.save(ft, tmp_path / "ft.pth")
    model, report = load_original(tmp_path / "ft.pth")
    assert report.stripped_prefix == "module." and sorted(report.dropped) == ["head.bias", "head.weight"]
    # Without config['model'] the head count falls back to the original's fixed head_dim = 64.
    assert (model.config.num_attention_heads, model.config.head_dim) == (2, 64)
    out = _run(model, np.load(g / "model_input.npy"))
    np.testing.assert_allclose(out.pooler_output.numpy(), np.load(g / "features.npy"), **_tol(golden)["features"])


def test_pickle_with_python_objects_needs_allow_pickle(golden: Path, tmp_path: Path) -> None:
    ckpt = torch.load(golden / "st_mem" / "encoder_tiny_random.pth", map_location="cpu", weights_only=True)
    ckpt["args"] = argparse.Namespace(lr=1e-3)  # what argparse-based training scripts often pickle
    torch.save(ckpt, tmp_path / "ns.pth")
    with pytest.raises(ValueError, match="allow_pickle=True"):
        load_original(tmp_path / "ns.pth")
    model, _ = load_original(tmp_path / "ns.pth", allow_pickle=True)
    assert model.config.hidden_size == 128


def test_config_accepts_original_kwargs_and_released_parameter_counts(golden: Path) -> None:
    kw = dict(_meta(golden)["original_kwargs"])
    cfg = STMEMConfig(**kw)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (128, 2, 2, 256)
    assert sum(p.numel() for p in STMEMModel(cfg).parameters()) == _meta(golden)["n_params"]
    rows = [v for v in st_mem.RELEASED_VARIANTS]
    assert [v["parameters"] for v in rows] == [85_150_614, 85_150_614, 21_341_718]  # (vs the configs: test_families_common)
    for v in rows:
        assert v["redistribution"].startswith(("not allowed", "no weights"))
        assert "CC BY-NC" in v["licence"]


def test_from_config_initialises_like_the_mae_pretraining() -> None:
    model = AutoModel.from_config(AutoConfig.for_model("st_mem", **TINY))
    assert isinstance(model, STMEMModel)
    torch.testing.assert_close(model.pos_embedding[0], sincos_position_table(32, 30))
    assert torch.equal(model.norm.weight, torch.ones(32)) and 0.005 < float(model.sep_embedding.detach().std()) < 0.05
    out = model.eval()(torch.randn(2, 12, 2250))
    assert out.last_hidden_state.shape == (2, 384, 32) and torch.isfinite(out.pooler_output).all()


def test_attention_mask_isolates_padding_and_masked_leads() -> None:
    torch.manual_seed(0)
    model = STMEMModel(STMEMConfig(**TINY)).eval()
    x = torch.randn(2, 12, 2250)
    mask = torch.ones(2, 12, 2250, dtype=torch.long)
    mask[1, :, 1500:] = 0  # a 6 s record padded to 9 s (cut at a patch boundary)
    mask[1, 3] = 0  # and a missing lead
    garbage = x.clone()
    garbage[1, :, 1500:] = 50.0
    garbage[1, 3] = -7.0
    with torch.no_grad():
        a = model(x, attention_mask=mask).pooler_output
        b = model(garbage, attention_mask=mask).pooler_output
        plain = model(x).pooler_output
    torch.testing.assert_close(a, b)  # padding content cannot leak into the features
    torch.testing.assert_close(a[0], plain[0])  # an unmasked row is untouched by its neighbour's mask
    assert not torch.allclose(a[1], plain[1])
    # A (batch, time) mask applies to every lead; a mask without any complete patch is refused.
    with torch.no_grad():
        torch.testing.assert_close(model(x, attention_mask=mask[:, 0]).pooler_output[0], plain[0])
    with pytest.raises(ValueError, match="no complete"):
        model(x, attention_mask=torch.zeros_like(mask))


def test_ncrop_and_processor_on_records_of_other_lengths(samples: Path) -> None:
    assert ncrop_starts(2500, 2250, 3) == [0, 125, 250]
    assert ncrop_starts(2250, 2250, 3) == [0] and ncrop_starts(2000, 2250, 3) == [0]
    processor = ECGProcessor(ST_MEM_CONTRACT, default_processor_steps())
    # 9 s at 250 Hz: a 10 s window padded by 1 s -> one crop of exactly the real part.
    sig = np.random.default_rng(0).standard_normal((12, 2250))
    out = processor.process(sig, 250, list(ST_MEM_CONTRACT.leads))
    assert out.input_values.shape == (1, 12, 2250) and out.attention_mask.all()
    # 38.4 s at 1000 Hz, 15 leads with lower-case names: windows at 0, 10, 20, 28.4 s, three crops each.
    rec = read_wfdb(samples / "ptbdb" / "s0010_re")
    out = processor.process(rec.signal, rec.sampling_rate, rec.lead_names)
    assert out.input_values.shape == (12, 12, 2250)
    assert out.report.window_starts_s[:4] == [0.0, 0.5, 1.0, 10.0] and out.report.window_starts_s[-1] == pytest.approx(29.4)
    z = out.input_values.astype(np.float64)
    np.testing.assert_allclose(z.mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(1, 2)), 1.0, atol=1e-5)  # one z-score per crop, all leads jointly
