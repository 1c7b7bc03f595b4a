"""ECG-FM: parity with the original fairseq-signals code (golden fixtures), converter, masks, LoRA."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel

from ecg_adapt import load_processor
from ecg_adapt.data import read_wfdb
from ecg_adapt.models import CheckpointMismatchError
from ecg_adapt.models.ecg_fm import (
    ECG_FM_CONTRACT,
    FAMILY,
    RELEASED_VARIANTS,
    ECGFMConfig,
    ECGFMModel,
    convert_ecg_fm,
    default_processor_steps,
    load_original,
    load_original_classifier,
)
from ecg_adapt.processing import ECGProcessor


OLD_STYLE = "ecg_fm_small_pretrained.pt"
NEW_STYLE = "ecg_fm_small_pretrained_parametrizations.pt"
FINETUNED = "ecg_fm_small_finetuned.pt"
PRETRAINING_ONLY = [
    "final_proj.bias", "final_proj.weight", "mask_emb", "project_q.bias", "project_q.weight",
    "quantizer.vars", "quantizer.weight_proj.bias", "quantizer.weight_proj.weight",
]
TINY = dict(FAMILY.tiny_configs["ecg_fm"])


@pytest.fixture
def g(golden: Path) -> Path:
    return golden / "ecg_fm"


def _tol(g: Path) -> dict:
    tol = json.loads((g / "meta.json").read_text())["suggested_tolerance"]
    return {k: {"atol": v["atol"], "rtol": v["rtol"]} for k, v in tol.items() if isinstance(v, dict)}


def _input(g: Path) -> torch.Tensor:
    return torch.from_numpy(np.load(g / "model_input.npy"))


def _assert_matches_golden(model: torch.nn.Module, g: Path) -> None:
    with torch.no_grad():
        out = model.eval()(_input(g))
    tol = _tol(g)
    np.testing.assert_allclose(out.last_hidden_state.numpy(), np.load(g / "hidden.npy"), **tol["hidden"])
    np.testing.assert_allclose(out.pooler_output.numpy(), np.load(g / "features.npy"), **tol["features"])


@pytest.mark.parametrize(
    "name, renamed, dropped, prefix",
    [
        (OLD_STYLE, 2, PRETRAINING_ONLY, None),
        (NEW_STYLE, 0, PRETRAINING_ONLY, None),
        (FINETUNED, 2, ["proj.bias", "proj.weight"], "encoder."),
    ],
)
def test_every_golden_checkpoint_converts_and_matches_original_hidden_and_features(
    g: Path, name: str, renamed: int, dropped: list[str], prefix: str | None
) -> None:
    model, report = load_original(g / name)
    assert report.stripped_prefix == prefix
    assert len(report.renamed) == renamed  # weight_g/weight_v -> parametrizations.weight.original0/1
    assert sorted(report.dropped) == dropped
    assert (model.config.hidden_size, model.config.num_attention_heads, model.config.num_hidden_layers) == (64, 4, 2)
    assert model.config.conv_dim == [32] * 4 and model.config.num_conv_pos_embedding_groups == 4
    _assert_matches_golden(model, g)


def test_finetuned_head_on_converted_backbone_reproduces_original_logits(g: Path) -> None:
    clf, report = load_original_classifier(g / FINETUNED)
    assert report.source_model == "ecg_transformer_classifier" and tuple(report.head["weight"].shape) == (17, 64)
    assert not any(k.startswith("proj") for k in clf.backbone.state_dict())  # the head is not part of the backbone
    with torch.no_grad():
        logits = clf(_input(g)).numpy()
    np.testing.assert_allclose(logits, np.load(g / "logits.npy"), **_tol(g)["logits"])
    with pytest.raises(ValueError, match="not a fine-tuned"):
        load_original_classifier(g / OLD_STYLE)


def test_processor_reproduces_original_preprocessing_of_real_record(g: Path, samples: Path) -> None:
    record = read_wfdb(samples / "cinc2021" / "HR06000")
    expected = np.load(g / "model_input.npy")
    out = ECGProcessor(ECG_FM_CONTRACT, default_processor_steps("all")).process(
        record.signal, record.sampling_rate, record.lead_names, record_id="HR06000"
    )
    # 10 s record -> both 5 s windows, z-scored with the statistics of the whole record
    np.testing.assert_allclose(out.input_values, expected, atol=_tol(g)["model_input"]["atol"], rtol=0)
    assert out.attention_mask.all() and out.report.window_starts_s == [0.0, 5.0]
    first = ECGProcessor(ECG_FM_CONTRACT, default_processor_steps("first")).process(
        record.signal, record.sampling_rate, record.lead_names
    )
    np.testing.assert_allclose(first.input_values, expected[:1], atol=_tol(g)["model_input"]["atol"], rtol=0)


def test_resampling_and_remainder_follow_fairseq_signals_preprocess(samples: Path) -> None:
    from scipy.interpolate import interp1d

    record = read_wfdb(samples / "ptbdb" / "s0010_re")  # 1000 Hz, 38.4 s, lower-case lead names + Frank leads
    out = ECGProcessor(ECG_FM_CONTRACT, default_processor_steps()).process(
        record.signal, record.sampling_rate, record.lead_names
    )
    # Plain restatement of preprocess.py: resample, per-lead z-score of the whole record, 5 s windows.
    feats = record.signal[[record.lead_names.index(n.lower()) for n in ECG_FM_CONTRACT.leads]]
    n_new = int(feats.shape[1] * 500 / 1000)
    feats = interp1d(np.linspace(0, n_new - 1, feats.shape[1]), feats, kind="linear")(np.arange(n_new))
    feats = feats - feats.mean(axis=1, keepdims=True)
    feats = feats / feats.std(axis=1, keepdims=True)
    expected = np.stack([feats[:, i * 2500 : (i + 1) * 2500] for i in range(n_new // 2500)]).astype(np.float32)
    assert out.input_values.shape == (7, 12, 2500)  # 19200 samples: 7 windows, the last 1.4 s dropped
    np.testing.assert_allclose(out.input_values, expected, atol=1e-6, rtol=0)


def test_short_record_and_constant_lead_are_handled_without_nan() -> None:
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(12, 1500))  # 3 s at 500 Hz
    signal[3] = 0.25  # a constant lead: the original sets it to 0
    out = ECGProcessor(ECG_FM_CONTRACT, default_processor_steps()).process(signal, 500, list(ECG_FM_CONTRACT.leads))
    assert out.input_values.shape == (1, 12, 2500) and np.isfinite(out.input_values).all()
    assert (out.input_values[0, 3] == 0).all() and out.report.padded
    assert out.attention_mask[0, :, :1500].all() and not out.attention_mask[0, :, 1500:].any()


def test_converter_writes_parametrised_weight_norm_and_no_pretraining_modules(g: Path, tmp_path: Path) -> None:
    dst = tmp_path / "converted"
    report = convert_ecg_fm(g / OLD_STYLE, dst)
    assert sorted(report.dropped) == PRETRAINING_ONLY
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    keys = set(load_file(str(dst / "model.safetensors")))
    assert "conv_pos.pos_conv.0.parametrizations.weight.original0" in keys
    assert not any(k.endswith(("weight_g", "weight_v")) or k.startswith(("quantizer", "mask_emb")) for k in keys)
    # (the three loaders and the golden outputs of the converted folder: tests/test_families_common.py)
    assert isinstance(AutoConfig.from_pretrained(dst), ECGFMConfig)
    processor = load_processor(dst)
    assert [s["name"] for s in processor.steps] == [s.name for s in default_processor_steps()]
    processor.check_compatible(ECG_FM_CONTRACT)


def test_checkpoint_with_renamed_or_missing_key_lists_it(g: Path, tmp_path: Path) -> None:
    ckpt = torch.load(g / OLD_STYLE, map_location="cpu", weights_only=True)
    sd = ckpt["model"]
    sd["encoder.layers.1.fc_1.weight"] = sd.pop("encoder.layers.1.fc1.weight")
    del sd["post_extract_proj.bias"]
    sd["layer_norm.weight"] = torch.ones(5)
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointMismatchError) as e:
        load_original(tmp_path / "bad.pt")
    msg = str(e.value)
    assert "missing keys (2): ['encoder.layers.1.fc1.weight', 'post_extract_proj.bias']" in msg
    assert "unexpected keys (1): ['encoder.layers.1.fc_1.weight']" in msg
    assert "layer_norm.weight: checkpoint (5,) vs model (32,)" in msg


def test_bare_state_dict_needs_cfg_for_non_released_sizes(g: Path, tmp_path: Path) -> None:
    sd = torch.load(g / NEW_STYLE, map_location="cpu", weights_only=True)["model"]
    torch.save(dict(sd), tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="number of attention heads"):
        load_original(tmp_path / "bare.pt")  # 64-d is not the released width: heads cannot be read from tensors


def test_pickled_omegaconf_cfg_needs_allow_pickle_and_is_read_without_running_code(g: Path, tmp_path: Path) -> None:
    ckpt = torch.load(g / FINETUNED, map_location="cpu", weights_only=True)
    # Recreate an older container whose cfg is an omegaconf DictConfig (a package ecg_adapt does not import).
    fake = types.ModuleType("omegaconf")

    class DictConfig:
        def __init__(self, content: dict) -> None:
            self._content = content
            self._metadata = None

    DictConfig.__module__ = "omegaconf"
    DictConfig.__qualname__ = "DictConfig"
    fake.DictConfig = DictConfig
    sys.modules["omegaconf"] = fake
    try:
        ckpt["cfg"] = DictConfig({"model": DictConfig(ckpt["cfg"]["model"]), "task": DictConfig(ckpt["cfg"]["task"])})
        torch.save(ckpt, tmp_path / "omegaconf.pt")
    finally:
        del sys.modules["omegaconf"]
    with pytest.raises(ValueError, match="allow_pickle=True"):
        load_original(tmp_path / "omegaconf.pt")
    model, report = load_original(tmp_path / "omegaconf.pt", allow_pickle=True)
    assert report.source_model == "ecg_transformer_classifier"  # read from the inert DictConfig
    assert model.config.num_attention_heads == 4  # only the cfg can tell this
    _assert_matches_golden(model, g)


def test_attention_mask_follows_original_length_rule_and_hides_padded_frames() -> None:
    torch.manual_seed(0)
    model = ECGFMModel(ECGFMConfig(**TINY)).eval()
    x = torch.randn(2, 12, 2500)
    with torch.no_grad():
        plain = model(x)
        ones = model(x, attention_mask=torch.ones_like(x, dtype=torch.long))
    assert torch.equal(plain.last_hidden_state, ones.last_hidden_state) and torch.equal(plain.pooler_output, ones.pooler_output)

    mask = torch.ones(2, 12, 2500, dtype=torch.long)
    mask[1, :, 1500:] = 0  # a 3 s window padded to 5 s
    frames = model.frame_mask(mask, 156)
    n_real = int(model._get_feat_extract_output_lengths(torch.tensor(1500)))
    assert frames[0].all() and frames[1].sum() == n_real == 93 and frames[1, :n_real].all()

    # Whatever reaches the encoder in padded frames must not change any output: the original zeroes them and
    # excludes them as keys.
    def noise_in_padding(module, args):
        x_in, pad = args[0], args[1]
        return (x_in + 100.0 * torch.randn_like(x_in) * pad.unsqueeze(-1), pad) + tuple(args[2:])

    with torch.no_grad():
        masked = model(x, attention_mask=mask)
        handle = model.encoder.register_forward_pre_hook(noise_in_padding)
        noisy = model(x, attention_mask=mask)
        handle.remove()
        # Noise in padded frames after the zeroing, right before the first layer: real frames must not attend to it.
        handle = model.encoder.layers[0].register_forward_pre_hook(noise_in_padding)
        noisy_keys = model(x, attention_mask=mask)
        handle.remove()
    torch.testing.assert_close(masked.last_hidden_state, noisy.last_hidden_state)
    torch.testing.assert_close(masked.pooler_output, noisy.pooler_output)
    torch.testing.assert_close(masked.last_hidden_state[:, :n_real], noisy_keys.last_hidden_state[:, :n_real])
    torch.testing.assert_close(masked.pooler_output, noisy_keys.pooler_output)
    torch.testing.assert_close(masked.pooler_output[1], masked.last_hidden_state[1, :n_real].mean(0))
    torch.testing.assert_close(masked.pooler_output[0], plain.pooler_output[0])
    assert not torch.allclose(masked.pooler_output[1], plain.pooler_output[1])


def test_released_variant_parameter_counts_match_the_original_models(g: Path) -> None:
    meta = json.loads((g / "meta.json").read_text())["released_variants"]
    # (names and parameter counts vs the configs: tests/test_families_common.py)
    # backbone + the 17-label head = the original fine-tuned model's count (built with the original code)
    head = 768 * 17 + 17
    assert RELEASED_VARIANTS[1]["parameters"] + head == meta["mimic_iv_ecg_finetuned.pt"]["param_count"]
    # backbone + the pretraining-only modules the converter drops = the original pretraining model's count:
    # mask_emb (768), quantizer codebook (2 groups x 320 codes x 128) and weight_proj (256 -> 640),
    # project_q (256 -> 256), final_proj (768 -> 256)
    pretraining_only = 768 + 640 * 128 + (256 * 640 + 640) + (256 * 256 + 256) + (768 * 256 + 256)
    assert RELEASED_VARIANTS[0]["parameters"] + pretraining_only == meta["mimic_iv_ecg_physionet_pretrained.pt"]["param_count"]
    assert RELEASED_VARIANTS[0]["original_parameters"] == meta["mimic_iv_ecg_physionet_pretrained.pt"]["param_count"]


def test_auto_classes_build_a_fresh_model_with_the_original_init() -> None:
    torch.manual_seed(0)
    model = AutoModel.from_config(AutoConfig.for_model("ecg_fm", **TINY))
    assert isinstance(model, ECGFMModel)
    conv = model.conv_pos.pos_conv[0]
    v = conv.parametrizations.weight.original1
    # g = ||v|| per tap at init, so the effective weight starts equal to v (as torch's weight_norm does)
    torch.testing.assert_close(conv.weight, v)
    assert abs(float(v.detach().std()) - (4 / (16 * 32)) ** 0.5) < 0.02
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 12, 2500), output_hidden_states=True)
        as_tuple = model(torch.randn(1, 12, 2500), return_dict=False)
    assert torch.isfinite(out.last_hidden_state).all()
    assert len(out.hidden_states) == 3 and torch.equal(out.hidden_states[-1], out.last_hidden_state)  # input + 2 layers
    assert [tuple(t.shape) for t in as_tuple] == [(1, 156, 32), (1, 32)]
    with pytest.raises(StrictDataclassClassValidationError, match="multiple of num_attention_heads"):
        ECGFMConfig(**{**TINY, "num_attention_heads": 5})


def test_feature_grad_mult_scales_or_stops_conv_extractor_gradients() -> None:
    torch.manual_seed(0)
    model = ECGFMModel(ECGFMConfig(**TINY)).train()
    x = torch.randn(1, 12, 2500)
    conv0 = model.feature_extractor.conv_layers[0][0].weight

    def grad_of_first_conv() -> torch.Tensor | None:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # same dropout draws each time
        model(x).pooler_output.sum().backward()
        return None if conv0.grad is None else conv0.grad.clone()

    full = grad_of_first_conv()
    model.config.feature_grad_mult = 0.1  # ECG-FM pretraining setting
    torch.testing.assert_close(grad_of_first_conv(), 0.1 * full)
    model.freeze_feature_encoder()  # ECG-FM fine-tuning setting (feature_grad_mult=0)
    assert grad_of_first_conv() is None and model.encoder.layers[0].fc1.weight.grad is not None
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.encoder.layers)
    assert grad_of_first_conv() is None and torch.isfinite(model.encoder.layers[0].fc1.weight.grad).all()
