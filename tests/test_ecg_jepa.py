"""ECG-JEPA (Kim et al.): parity with the original code (golden fixtures), converter, preprocessing, masks, LoRA."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel

from ecg_adapt.data import read_wfdb
from ecg_adapt.models import CheckpointMismatchError, ecg_jepa
from ecg_adapt.models.ecg_jepa import (
    ECG_JEPA_CONTRACT,
    RELEASED_VARIANTS,
    ECGJEPAConfig,
    ECGJEPAModel,
    convert_ecg_jepa,
    default_processor_steps,
    lead_wise_attention_mask,
    load_original,
    sincos_2d_lead_patch,
)
from ecg_adapt.models.registry import load_backbone, load_processor
from ecg_adapt.processing import ECGProcessor


CKPT = "ecg_jepa_small_random_epoch100.pth"
TINY = dict(ecg_jepa.FAMILY.tiny_configs["ecg_jepa"])


def _meta(golden: Path) -> dict:
    return json.loads((golden / "ecg_jepa" / "meta.json").read_text())


def _tol(golden: Path, key: str) -> dict[str, float]:
    t = _meta(golden)["tolerance"][key]
    return {"atol": t["atol"], "rtol": t["rtol"]}


def _heads(golden: Path) -> int:
    return int(_meta(golden)["original_kwargs"]["encoder_num_heads"])


def _encode(model: ECGJEPAModel, x: np.ndarray | torch.Tensor, **kw) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        out = model.eval()(torch.as_tensor(x), **kw)
    return out.last_hidden_state.numpy(), out.pooler_output.numpy()


def _check_golden(model: ECGJEPAModel, golden: Path) -> None:
    g = golden / "ecg_jepa"
    hidden, features = _encode(model, np.load(g / "model_input.npy"))
    np.testing.assert_allclose(hidden, np.load(g / "hidden.npy"), **_tol(golden, "hidden"))
    np.testing.assert_allclose(features, np.load(g / "features.npy"), **_tol(golden, "features"))


def _reference_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int, leads: list[int]) -> torch.Tensor:
    """An independent, literal transcription of ``MaskTransformer.representation`` (eager attention, -inf mask,
    ``restrict_leads`` on the 8-slot table and mask) used to check what the golden files cannot: lead subsets."""
    c, p = 8, 50
    idx = torch.arange(c * p)
    full = ((idx[:, None] // p) == (idx[None] // p)) | ((idx[:, None] % p) == (idx[None] % p))
    mask = full.reshape(c, p, c, p)[leads][:, :, leads].reshape(len(leads) * p, len(leads) * p)
    pos = sd["pos_embed"].reshape(c, p, -1)[leads].reshape(len(leads) * p, -1)
    b = x.shape[0]
    h = x.reshape(b, -1, 50) @ sd["W_P.weight"].T + sd["W_P.bias"]
    depth = len({k.split(".")[2] for k in sd if k.startswith("encoder_blocks.blocks.")})
    ln = torch.nn.functional.layer_norm
    for i in range(depth):
        k = f"encoder_blocks.blocks.{i}."
        h = h + pos
        d = h.shape[-1]
        y = ln(h, (d,), sd[k + "norm1.weight"], sd[k + "norm1.bias"])
        qkv = (y @ sd[k + "attn.qkv.weight"].T).reshape(b, -1, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        a = (qkv[0] @ qkv[1].transpose(-2, -1)) * (d // heads) ** -0.5
        a = a.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (a @ qkv[2]).transpose(1, 2).reshape(b, -1, d) @ sd[k + "attn.proj.weight"].T + sd[k + "attn.proj.bias"]
        h = h + y
        y = ln(h, (d,), sd[k + "norm2.weight"], sd[k + "norm2.bias"])
        y = torch.nn.functional.gelu(y @ sd[k + "mlp.fc1.weight"].T + sd[k + "mlp.fc1.bias"])
        h = h + y @ sd[k + "mlp.fc2.weight"].T + sd[k + "mlp.fc2.bias"]
    return ln(h, (h.shape[-1],), sd["norm.weight"], sd["norm.bias"]).mean(1)


# ------------------------------------------------------------------------------------------ golden parity
def test_original_checkpoint_reproduces_golden_outputs(golden: Path) -> None:
    g = golden / "ecg_jepa"
    model, report = load_original(g / CKPT, num_attention_heads=_heads(golden))
    assert report.dropped == ["<container>.epoch"] and report.stripped_prefix is None
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.qkv_bias, cfg.pos_type) == (64, 2, 4, False, "sincos")
    _check_golden(model, golden)
    with torch.no_grad():
        out = model(torch.from_numpy(np.load(g / "model_input.npy")), output_hidden_states=True)
        tup = model(torch.from_numpy(np.load(g / "model_input.npy")), return_dict=False)
    # hidden_states: patch embeddings + one per block; the last one is before the final LayerNorm
    assert len(out.hidden_states) == 3
    np.testing.assert_allclose(out.hidden_states[-1].numpy(), np.load(g / "hidden_prenorm.npy"), **_tol(golden, "hidden_prenorm"))
    assert torch.equal(tup[1], out.pooler_output)
    # the fine-tuning input (filtered) gives the fine-tuning head's features
    _, feats_ft = _encode(model, np.load(g / "model_input_finetune.npy"))
    np.testing.assert_allclose(feats_ft, np.load(g / "features_finetune.npy"), **_tol(golden, "features"))
    # pos_embed is the stored sin-cos table, bit for bit, and is never trained
    assert torch.equal(model.pos_embed, sincos_2d_lead_patch(64, 8, 50))
    assert "pos_embed" not in dict(model.named_parameters())


def test_wrong_head_count_or_missing_mask_would_be_caught(golden: Path) -> None:
    """The checks above are sharp: a plausible wrong head count changes the features beyond tolerance."""
    g = golden / "ecg_jepa"
    with pytest.raises(ValueError, match="num_attention_heads"):
        load_original(g / CKPT)  # 64 is not a released width: the head count must be given
    wrong, _ = load_original(g / CKPT, num_attention_heads=2)
    _, feats = _encode(wrong, np.load(g / "model_input.npy"))
    assert np.abs(feats - np.load(g / "features.npy")).max() > 1e-3
    mask = lead_wise_attention_mask(8, 50)
    assert mask.shape == (400, 400) and int(mask[0].sum()) == 57 and bool(mask[0, 50]) and not bool(mask[0, 51])


# ------------------------------------------------------------------------------------------ preprocessing
@pytest.mark.parametrize("window_mode", ["first", "all"])
@pytest.mark.parametrize("pipeline,expected", [("linear_eval", "model_input.npy"), ("finetune", "model_input_finetune.npy")])
def test_processor_reproduces_original_preprocessing(golden: Path, samples: Path, window_mode: str, pipeline: str, expected: str) -> None:
    meta = _meta(golden)
    rec_name = meta["input"]["record"].split("/")[-1].split()[0]
    record = read_wfdb(samples / "cinc2021" / rec_name)
    proc = ECGProcessor(ECG_JEPA_CONTRACT, default_processor_steps(window_mode, pipeline=pipeline))
    out = proc.process(record.signal, record.sampling_rate, record.lead_names, record_id=rec_name)
    key = "model_input" if pipeline == "linear_eval" else "model_input_finetune"
    assert out.input_values.shape == (1, 8, 2500)  # a 10 s PTB-XL record is one window in either mode
    np.testing.assert_allclose(out.input_values, np.load(golden / "ecg_jepa" / expected), **_tol(golden, key))
    assert out.report.ignored_leads == ["III", "aVR", "aVL", "aVF"]  # lead selection by name, not position
    assert out.attention_mask.all()


def test_processor_windows_long_records_and_round_trips(samples: Path, tmp_path: Path) -> None:
    record = read_wfdb(samples / "ptbdb" / "s0010_re")  # 15 leads, 1000 Hz, 38.4 s, lower-case names
    proc = ECGProcessor(ECG_JEPA_CONTRACT, default_processor_steps("all", pipeline="finetune"))
    out = proc.process(record.signal, record.sampling_rate, record.lead_names)
    assert out.input_values.shape == (4, 8, 2500) and out.report.window_starts_s == [0.0, 10.0, 20.0, 28.4]
    proc.save_pretrained(tmp_path)
    again = ECGProcessor.from_pretrained(tmp_path)
    assert [s["name"] for s in again.steps] == ["window", "resample", "ecg_jepa_sos_butterworth", "ecg_jepa_sos_butterworth"]
    np.testing.assert_array_equal(again.process(record.signal, record.sampling_rate, record.lead_names).input_values, out.input_values)
    with pytest.raises(ValueError, match="pipeline"):
        default_processor_steps(pipeline="zscore")


# ------------------------------------------------------------------------------------------ converter
def test_converter_round_trip_and_auto_classes(golden: Path, tmp_path: Path) -> None:
    g = golden / "ecg_jepa"
    dst = tmp_path / "converted"
    report = convert_ecg_jepa(g / CKPT, dst, num_attention_heads=_heads(golden))
    assert report.dropped == ["<container>.epoch"]
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    reference, _ = load_original(g / CKPT, num_attention_heads=_heads(golden))
    x = np.load(g / "model_input.npy")
    ref_hidden, ref_feats = _encode(reference, x)
    for model in (ECGJEPAModel.from_pretrained(dst), AutoModel.from_pretrained(dst), load_backbone(dst)):
        assert isinstance(model, ECGJEPAModel) and not model.training
        hidden, feats = _encode(model, x)
        np.testing.assert_array_equal(hidden, ref_hidden)
        np.testing.assert_array_equal(feats, ref_feats)
    _check_golden(AutoModel.from_pretrained(dst), golden)
    proc = load_processor(dst)
    assert proc.contract == ECG_JEPA_CONTRACT and [s["name"] for s in proc.steps] == ["window", "resample"]
    assert AutoConfig.from_pretrained(dst).num_attention_heads == 4


def test_checkpoint_with_renamed_or_reshaped_key_lists_it(golden: Path, tmp_path: Path) -> None:
    g = golden / "ecg_jepa"
    ckpt = torch.load(g / CKPT, map_location="cpu", weights_only=True)
    sd = dict(ckpt["encoder"])
    sd["encoder_blocks.blocks.1.attn.q_proj.weight"] = sd.pop("encoder_blocks.blocks.1.attn.qkv.weight")
    sd["norm.bias"] = torch.zeros(5)
    torch.save({"encoder": sd, "epoch": 99}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointMismatchError) as e:
        load_original(tmp_path / "bad.pth", num_attention_heads=4)
    msg = str(e.value)
    assert "missing keys (1): ['encoder_blocks.blocks.1.attn.qkv.weight']" in msg
    assert "unexpected keys (1): ['encoder_blocks.blocks.1.attn.q_proj.weight']" in msg
    assert "norm.bias: checkpoint (5,) vs model (64,)" in msg


def test_every_checkpoint_layout_loads(golden: Path, tmp_path: Path) -> None:
    """Release container, bare state dict, safetensors, whole pretraining model (DDP-prefixed), fine-tuned
    classifier, and a pickle that needs allow_pickle; all give the golden outputs."""
    g = golden / "ecg_jepa"
    enc = torch.load(g / CKPT, map_location="cpu", weights_only=True)["encoder"]
    torch.save(dict(enc), tmp_path / "bare.pth")
    save_file({k: v.contiguous() for k, v in enc.items()}, str(tmp_path / "bare.safetensors"))
    full = {f"module.encoder.{k}": v for k, v in enc.items()}
    full.update({f"module.target_encoder.{k}": v.clone() for k, v in enc.items()})
    full["module.predictor.mask_token"] = torch.zeros(1, 1, 32)
    full["module.predictor.predictor_embed.weight"] = torch.zeros(32, 64)
    torch.save({"model": full, "epoch": 3}, tmp_path / "full.pth")
    ft = {f"encoder.{k}": v for k, v in enc.items()}
    ft["fc.fc.weight"], ft["fc.fc.bias"] = torch.zeros(5, 64), torch.zeros(5)
    torch.save(ft, tmp_path / "finetuned.pth")
    torch.save({"encoder": dict(enc), "epoch": 99, "args": argparse.Namespace(lr=1e-4)}, tmp_path / "pickled.pth")

    for name in ("bare.pth", "bare.safetensors"):
        model, report = load_original(tmp_path / name, num_attention_heads=4)
        assert report.dropped == [] and report.stripped_prefix is None
        _check_golden(model, golden)
    model, report = load_original(tmp_path / "full.pth", num_attention_heads=4)
    assert report.stripped_prefix == "module.encoder."
    # dropped keys are named after the DDP prefix is stripped (the report records that prefix)
    assert "predictor.mask_token" in report.dropped and "<container>.epoch" in report.dropped
    assert sum(k.startswith("target_encoder.") for k in report.dropped) == len(enc)
    _check_golden(model, golden)
    model, report = load_original(tmp_path / "finetuned.pth", num_attention_heads=4)
    assert sorted(report.dropped) == ["fc.fc.bias", "fc.fc.weight"] and report.stripped_prefix == "encoder."
    _check_golden(model, golden)
    with pytest.raises(ValueError, match="allow_pickle=True"):
        load_original(tmp_path / "pickled.pth", num_attention_heads=4)
    model, report = load_original(tmp_path / "pickled.pth", allow_pickle=True, num_attention_heads=4)
    assert sorted(report.dropped) == ["<container>.args", "<container>.epoch"]
    _check_golden(model, golden)


def test_reduced_lead_encoder_matches_restrict_leads(golden: Path) -> None:
    """``leads=[0, 1]`` (I, II) restricts the positional table and the mask like ``restrict_leads``."""
    g = golden / "ecg_jepa"
    sd = torch.load(g / CKPT, map_location="cpu", weights_only=True)["encoder"]
    x8 = torch.from_numpy(np.load(g / "model_input.npy"))
    tol = _tol(golden, "features")
    full, _ = load_original(g / CKPT, num_attention_heads=4)
    np.testing.assert_allclose(_encode(full, x8)[1], _reference_forward(sd, x8, 4, list(range(8))).numpy(), **tol)
    two, _ = load_original(g / CKPT, num_attention_heads=4, leads=[0, 2])
    assert two.config.contract.leads == ("I", "V1")
    x2 = x8[:, [0, 2]]
    np.testing.assert_allclose(_encode(two, x2)[1], _reference_forward(sd, x2, 4, [0, 2]).numpy(), **tol)
    with pytest.raises(ValueError, match=r"\(batch, 2, 2500\)"):
        two(x8)


# ------------------------------------------------------------------------------------------ model behaviour
def test_attention_mask_semantics() -> None:
    torch.manual_seed(0)
    model = ECGJEPAModel(ECGJEPAConfig(**TINY)).eval()
    x = torch.randn(2, 8, 2500)
    ones = torch.ones_like(x, dtype=torch.long)
    with torch.no_grad():
        plain = model(x)
        same = model(x, attention_mask=ones)
    assert torch.equal(plain.pooler_output, same.pooler_output) and torch.equal(plain.last_hidden_state, same.last_hidden_state)
    # record 1: the last 3 s are padding and lead V6 is masked; what the padding holds must not matter
    mask = ones.clone()
    mask[1, :, 1750:] = 0
    mask[1, 7] = 0
    x2 = x.clone()
    x2[1, :, 1750:] = 50.0
    x2[1, 7] = -50.0
    with torch.no_grad():
        a = model(x, attention_mask=mask)
        b = model(x2, attention_mask=mask)
    assert torch.isfinite(a.last_hidden_state).all()
    torch.testing.assert_close(a.pooler_output, b.pooler_output, rtol=1e-5, atol=1e-5)
    assert torch.equal(a.pooler_output[0], plain.pooler_output[0])
    assert (a.pooler_output[1] - plain.pooler_output[1]).abs().max() > 1e-3
    tokens = model.token_mask(mask)[1]
    assert int(tokens.sum()) == 7 * 35  # 35 full 50-sample patches in 1750 samples, 7 leads
    nothing = torch.zeros_like(mask)
    with torch.no_grad():
        assert torch.isfinite(model(x, attention_mask=nothing).pooler_output).all()


def test_from_config_init_and_config_aliases() -> None:
    cfg = AutoConfig.for_model("ecg_jepa", embed_dim=32, depth=2, num_heads=2, init_std=0.02)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (32, 2, 2)
    torch.manual_seed(0)
    model = AutoModel.from_config(cfg)
    assert isinstance(model, ECGJEPAModel)
    assert torch.equal(model.pos_embed, sincos_2d_lead_patch(32, 8, 50))
    blocks = model.encoder_blocks.blocks
    # fix_init_weight: residual output layers of block i scaled by 1/sqrt(2(i+1))
    assert blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert blocks[1].mlp.fc2.weight.std().item() == pytest.approx(0.02 / 2, rel=0.1)
    assert torch.equal(blocks[0].attn.proj.bias, torch.zeros(32)) and torch.equal(blocks[0].norm1.weight, torch.ones(32))
    with pytest.raises(ValueError, match="divisible"):
        ECGJEPAConfig(hidden_size=30, num_attention_heads=4)


def test_released_variant_parameter_counts() -> None:
    # (names and parameter counts vs the configs: tests/test_families_common.py)
    for v in RELEASED_VARIANTS:
        with torch.device("meta"):
            model = ECGJEPAModel(ECGJEPAConfig(**v["config"]))
        assert v["parameters"] == 85_067_520
        sd = model.state_dict()
        assert len(sd) == 137 and sum(t.numel() for t in sd.values()) == v["state_dict_values"] == 85_374_720
        assert v["licence"].startswith("MIT") and "drive.google.com" in v["weights"]
    assert ECGJEPAConfig().num_attention_heads == 16 and ECGJEPAConfig().contract == ECG_JEPA_CONTRACT
