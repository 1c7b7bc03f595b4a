"""MERL: parity with the original code (golden fixtures), processor, converter, masks and LoRA."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import ecg_adapt
from ecg_adapt import ECGClassifier, load_adapted, load_backbone, load_processor, save_adapted
from ecg_adapt.data import read_wfdb
from ecg_adapt.models import CheckpointMismatchError, merl
from ecg_adapt.models.merl import MERLConfig, MERLModel, convert_merl, load_original
from ecg_adapt.models.registry import get_family, released_variants
from ecg_adapt.processing import ECGProcessor
from transformers import AutoConfig, AutoModel


ENCODERS = {
    "resnet1d": "resnet18_small_random_encoder.pth",
    "vit": "vit_small_random_encoder.pth",
}


def _meta(golden: Path, sub: str) -> dict:
    return json.loads((golden / "merl" / sub / "meta.json").read_text())


def _tol(meta: dict, what: str) -> dict:
    return {k: meta["tolerance"][what][k] for k in ("atol", "rtol")}


def _ckpt(golden: Path, sub: str) -> Path:
    return golden / "merl" / sub / ENCODERS[sub]


def _input(golden: Path) -> torch.Tensor:
    return torch.from_numpy(np.load(golden / "merl" / "resnet1d" / "model_input.npy"))


def _original_layout_hidden(model: MERLModel, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(hidden in the fixture's layout, features): the ResNet fixture is channels-first."""
    with torch.no_grad():
        out = model.eval()(x)
    hidden = out.last_hidden_state
    if model.config.encoder_type == "resnet":
        hidden = hidden.transpose(1, 2)
    return hidden.numpy(), out.pooler_output.numpy()


def _check_golden(model: MERLModel, golden: Path, sub: str) -> None:
    meta = _meta(golden, sub)
    hidden, features = _original_layout_hidden(model, _input(golden))
    np.testing.assert_allclose(hidden, np.load(golden / "merl" / sub / "hidden.npy"), **_tol(meta, "hidden"))
    np.testing.assert_allclose(features, np.load(golden / "merl" / sub / "features.npy"), **_tol(meta, "features"))


# ------------------------------------------------------------------------------------------- golden parity


@pytest.mark.parametrize("sub", sorted(ENCODERS))
def test_original_encoder_file_matches_original_outputs(golden: Path, sub: str) -> None:
    model, report = load_original(_ckpt(golden, sub))
    meta = _meta(golden, sub)
    assert model.config.encoder_type == {"resnet1d": "resnet", "vit": "vit"}[sub]
    assert sum(p.numel() for p in model.parameters()) == meta["n_params"] - (1290 if sub == "resnet1d" else 0)
    if sub == "resnet1d":
        # the pretraining ResNet18() carries an untrained 10-class linear (10 x 128 here): dropped, reported
        assert sorted(report.dropped) == ["linear.bias", "linear.weight"]
        assert model.config.resnet_widths == [16, 32, 64, 128] and model.config.resnet_num_blocks == [2, 2, 2, 2]
    else:
        assert report.dropped == []
        c = model.config
        assert (c.vit_width, c.vit_depth, c.vit_heads, c.vit_dim_head, c.vit_mlp_dim) == (128, 2, 2, 64, 256)
    assert model.config.hidden_size == 128
    _check_golden(model, golden, sub)


# ----------------------------------------------------------------------------------------------- processor


def test_processor_reproduces_original_preprocessing_of_real_record(golden: Path, samples: Path) -> None:
    meta = _meta(golden, "resnet1d")
    record = read_wfdb(samples / "cinc2021" / "HR06000")
    assert record.lead_names[4:6] == ["aVL", "aVF"]  # standard order in the file
    expected = np.load(golden / "merl" / "resnet1d" / "model_input.npy")
    for mode in ("first", "all"):  # a 10 s record is one window either way
        processor = ECGProcessor(merl.MERL_CONTRACT, merl.default_processor_steps(mode))
        out = processor.process(record.signal, record.sampling_rate, record.lead_names, record_id="HR06000")
        assert out.input_values.shape == (1, 12, 5000) and out.report.reordered
        np.testing.assert_allclose(out.input_values, expected, atol=meta["tolerance"]["model_input"]["atol"], rtol=0)
    # Row 4 is aVF and row 5 aVL (MIMIC order); not swapping would move the input by ~0.22.
    x = record.signal[:, :5000]
    x = (x - x.min()) / (x.max() - x.min() + 1e-8)
    np.testing.assert_allclose(out.input_values[0, 4], x[5], atol=1e-6)
    assert np.abs(out.input_values[0, 4] - x[4]).max() > 0.1
    assert processor.contract.leads[4:6] == ("aVF", "aVL")


def test_processor_resamples_windows_and_normalises_each_window(samples: Path) -> None:
    # PTB: 1000 Hz, 38.4 s, 15 lower-case leads (3 Frank leads ignored) -> 500 Hz, four 10 s windows.
    record = read_wfdb(samples / "ptbdb" / "s0010_re")
    out = ECGProcessor(merl.MERL_CONTRACT, merl.default_processor_steps("all")).process(
        record.signal, record.sampling_rate, record.lead_names
    )
    assert out.input_values.shape == (4, 12, 5000)
    assert out.report.window_starts_s == [0.0, 10.0, 20.0, 28.4]
    assert sorted(out.report.ignored_leads) == ["vx", "vy", "vz"]
    # the min-max is per 10 s window (the original normalises its crop), global over leads
    np.testing.assert_allclose(out.input_values.min(axis=(1, 2)), 0.0, atol=1e-7)
    np.testing.assert_allclose(out.input_values.max(axis=(1, 2)), 1.0, atol=1e-6)


# ----------------------------------------------------------------------------------------------- converter


@pytest.mark.parametrize("sub", sorted(ENCODERS))
def test_converter_roundtrip_gives_same_outputs(golden: Path, tmp_path: Path, sub: str) -> None:
    dst = tmp_path / "converted"
    report = convert_merl(_ckpt(golden, sub), dst)
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    assert ("linear.weight" in report.dropped) == (sub == "resnet1d")
    x = _input(golden)
    reference, _ = load_original(_ckpt(golden, sub))
    with torch.no_grad():
        expected = reference(x)
    for model in (MERLModel.from_pretrained(dst), AutoModel.from_pretrained(dst), load_backbone(dst)):
        assert isinstance(model, MERLModel)
        with torch.no_grad():
            out = model.eval()(x)
        torch.testing.assert_close(out.last_hidden_state, expected.last_hidden_state, rtol=0, atol=0)
        torch.testing.assert_close(out.pooler_output, expected.pooler_output, rtol=0, atol=0)
    _check_golden(MERLModel.from_pretrained(dst), golden, sub)
    # the saved processor is the family default and reproduces the original input
    processor = load_processor(dst)
    assert processor.contract == merl.MERL_CONTRACT
    assert AutoConfig.from_pretrained(dst).encoder_type == {"resnet1d": "resnet", "vit": "vit"}[sub]


def test_checkpoint_with_renamed_or_missing_keys_lists_them(golden: Path, tmp_path: Path) -> None:
    sd = torch.load(_ckpt(golden, "resnet1d"), map_location="cpu", weights_only=True)
    sd["layer2.0.downsample.0.weight"] = sd.pop("layer2.0.shortcut.0.weight")  # torchvision's name
    sd["layer4.1.bn2.running_var"] = torch.ones(5)
    torch.save(sd, tmp_path / "bad_resnet.pth")
    with pytest.raises(CheckpointMismatchError) as e:
        load_original(tmp_path / "bad_resnet.pth")
    msg = str(e.value)
    assert "missing keys (1): ['layer2.0.shortcut.0.weight']" in msg
    assert "unexpected keys (1): ['layer2.0.downsample.0.weight']" in msg
    assert "layer4.1.bn2.running_var: checkpoint (5,) vs model (128,)" in msg

    sd = torch.load(_ckpt(golden, "vit"), map_location="cpu", weights_only=True)
    del sd["block1.ff.fn.net.3.bias"]
    torch.save(sd, tmp_path / "bad_vit.pth")
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(1\): \['block1.ff.fn.net.3.bias'\]"):
        load_original(tmp_path / "bad_vit.pth")


def test_every_container_variant_loads(golden: Path, tmp_path: Path) -> None:
    """Encoder files (golden), the whole-CLIP *_ckpt.pth layout, DDP prefix, a fine-tuned head, safetensors."""
    for sub in ENCODERS:
        sd = torch.load(_ckpt(golden, sub), map_location="cpu", weights_only=True)
        width = 128
        clip = {f"ecg_encoder.{k}": v for k, v in sd.items()}
        clip.update({"lm_model.embeddings.word_embeddings.weight": torch.zeros(8, 4), "proj_t.0.weight": torch.zeros(4, 4),
                     "linear1.weight": torch.zeros(4, 4), "downconv.weight": torch.zeros(4, width, 1)})
        finetuned = {k: v for k, v in sd.items() if not k.startswith("linear.")}
        head = "linear" if sub == "resnet1d" else "head"
        finetuned.update({f"{head}.weight": torch.zeros(5, width), f"{head}.bias": torch.zeros(5)})
        variants = {
            "clip.pth": clip,
            "ddp.pth": {f"module.{k}": v for k, v in sd.items()},
            "wrapped.pth": {"state_dict": sd, "epoch": 3},
            "finetuned.pth": finetuned,
        }
        for name, obj in variants.items():
            torch.save(obj, tmp_path / f"{sub}_{name}")
        save_file(dict(sd), str(tmp_path / f"{sub}.safetensors"))
        for path in [tmp_path / f"{sub}_{n}" for n in variants] + [tmp_path / f"{sub}.safetensors"]:
            model, report = load_original(path)
            _check_golden(model, golden, sub)
            if path.name.endswith("clip.pth"):
                assert report.stripped_prefix == "ecg_encoder."
                assert {"lm_model.embeddings.word_embeddings.weight", "proj_t.0.weight", "downconv.weight"} <= set(report.dropped)
            if path.name.endswith("finetuned.pth"):
                assert f"{head}.weight" in report.dropped


def test_pickle_with_python_objects_needs_explicit_acknowledgement(golden: Path, tmp_path: Path) -> None:
    sd = torch.load(_ckpt(golden, "vit"), map_location="cpu", weights_only=True)
    torch.save({"model": sd, "args": argparse.Namespace(lr=1e-4)}, tmp_path / "with_args.pth")
    with pytest.raises(ValueError, match="allow_pickle=True"):
        load_original(tmp_path / "with_args.pth")
    model, _ = load_original(tmp_path / "with_args.pth", allow_pickle=True)
    _check_golden(model, golden, "vit")
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="Not a MERL ECG encoder state dict"):
        load_original(tmp_path / "other.pth")


# ------------------------------------------------------------------------------------ masks and hidden states


def test_attention_mask_all_ones_is_identical_and_padding_is_handled(golden: Path) -> None:
    x = _input(golden)
    ones = torch.ones_like(x, dtype=torch.long)
    pad = ones.clone()
    pad[..., 4000:] = 0  # last 2 s are padding
    garbage = x.clone()
    garbage[..., 4000:] = 7.0
    for sub in ENCODERS:
        model, _ = load_original(_ckpt(golden, sub))
        with torch.no_grad():
            plain, masked = model(x), model(x, attention_mask=ones)
            padded = model(x, attention_mask=pad)
            padded_garbage = model(garbage, attention_mask=pad)
        assert torch.equal(plain.pooler_output, masked.pooler_output)
        assert torch.equal(plain.last_hidden_state, masked.last_hidden_state)
        assert not torch.allclose(padded.pooler_output, plain.pooler_output)
        if sub == "vit":
            # tokens 80..99 are padding: not attended, not pooled -> their content cannot matter
            torch.testing.assert_close(padded.pooler_output, padded_garbage.pooler_output)
            torch.testing.assert_close(padded.last_hidden_state[:, :80], padded_garbage.last_hidden_state[:, :80])
            assert model.frame_mask(pad, 100)[0].sum() == 80
        else:
            # frame j is centred on sample 16 j: frames 0..249 are real; the pool averages exactly those
            torch.testing.assert_close(padded.pooler_output, padded.last_hidden_state[:, :250].mean(dim=1))
            assert model.frame_mask(pad, 313)[0].sum() == 250
        # a masked lead (missing-lead policy "mask") removes no frame: same as no mask
        lead_masked = ones.clone()
        lead_masked[:, 3] = 0
        with torch.no_grad():
            assert torch.equal(model(x, attention_mask=lead_masked).pooler_output, plain.pooler_output)


def test_hidden_states_and_tuple_output(golden: Path) -> None:
    x = _input(golden)
    model, _ = load_original(_ckpt(golden, "resnet1d"))
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
        tup = model(x, return_dict=False)
    assert [tuple(h.shape) for h in out.hidden_states] == [(1, 2500, 16), (1, 2500, 16), (1, 1250, 32), (1, 625, 64), (1, 313, 128)]
    assert torch.equal(tup[1], out.pooler_output)
    vit, _ = load_original(_ckpt(golden, "vit"))
    with torch.no_grad():
        out = vit(x, output_hidden_states=True)
    assert len(out.hidden_states) == 3 and torch.equal(out.hidden_states[-1], out.last_hidden_state)
    with pytest.raises(ValueError, match="100 positions"):
        vit(x[..., :4000])


# ----------------------------------------------------------------------------------- config, auto, variants


def test_config_validation_and_auto_classes() -> None:
    assert MERLConfig().hidden_size == 512
    assert MERLConfig(resnet_block="bottleneck").hidden_size == 2048
    assert MERLConfig(encoder_type="vit", vit_width=64).hidden_size == 64
    with pytest.raises(ValueError, match="disagrees"):
        MERLConfig(encoder_type="vit", vit_width=64, hidden_size=32)
    with pytest.raises(ValueError, match="encoder_type"):
        MERLConfig(encoder_type="resnet18")
    cfg = AutoConfig.for_model("merl", encoder_type="vit", vit_width=32, vit_depth=1, vit_heads=2, vit_dim_head=16, vit_mlp_dim=64)
    model = AutoModel.from_config(cfg)
    assert isinstance(model, MERLModel)
    assert model.pos_embedding.std() > 0.5  # torch.randn init as in the original
    tiny = MERLModel(MERLConfig(resnet_widths=[8, 8, 16, 16], resnet_num_blocks=[1, 1, 1, 1]))
    assert tiny.bn1.running_var.eq(1).all() and tiny.conv1.weight.abs().max() > 0
    assert get_family("merl") is merl.FAMILY


def test_released_variant_features_licence_and_file_contents() -> None:
    rows = [v for v in released_variants() if v["family"] == "merl"]
    # (names and parameter counts vs the configs: tests/test_families_common.py)
    for v in rows:
        assert MERLConfig(**v["config"]).hidden_size == v["features"]
        assert "MIT" in v["licence"] and v["weights"].startswith("https://drive.google.com/")
    # the released ResNet file also holds the unused linear (10, 512) + (10,)
    assert rows[0]["parameters_in_file"] - rows[0]["parameters"] == 10 * 512 + 10


# ---------------------------------------------------------------------------------------------------- LoRA


def _lora_step(clf: ECGClassifier, batch: dict) -> tuple[torch.nn.Module, dict, dict, torch.Tensor]:
    model = ecg_adapt.adapt(clf, "lora", r=4)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    out = model(input_values=batch["input_values"], attention_mask=batch["attention_mask"], labels=labels)
    out.loss.backward()
    opt.step()
    after = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return model, before, after, out.logits


@pytest.mark.parametrize("sub", sorted(ENCODERS))
def test_lora_step_on_real_record_changes_only_lora_and_head(golden: Path, samples: Path, tmp_path: Path, sub: str) -> None:
    dst = tmp_path / "backbone"
    convert_merl(_ckpt(golden, sub), dst)
    record = read_wfdb(samples / "ptbdb" / "s0010_re")  # 1000 Hz, 38.4 s -> four 10 s windows at 500 Hz
    processor = load_processor(dst)
    batch = processor([record])
    assert batch["input_values"].shape == (4, 12, 5000)
    clf = ECGClassifier.from_backbone(load_backbone(dst), ["a", "b", "c"])
    model, before, after, logits = _lora_step(clf, batch)
    assert torch.isfinite(logits).all()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k or "classifier" in k for k in changed), sorted(changed)
    assert any("lora_B" in k for k in changed) and any("classifier" in k for k in changed)
    wrapped = {n.split("backbone.", 1)[1] for n, m in model.named_modules() if hasattr(m, "lora_A") and "backbone." in n}
    if sub == "vit":
        assert wrapped == {f"block{i}.{s}" for i in range(2) for s in ("attn.fn.to_qkv", "attn.fn.to_out.0", "ff.fn.net.0", "ff.fn.net.3")}
    else:
        # every conv of the residual path and the stem; BatchNorm statistics stayed frozen (no *running* key changed)
        assert "conv1" in wrapped and "layer4.1.conv2" in wrapped and len(wrapped) == 1 + 2 * 8
        assert not any("running" in k or "num_batches" in k for k in changed)
    # the adapter-only save reproduces the trained model (it could not if BatchNorm statistics had moved)
    model.eval()
    with torch.no_grad():
        trained = model(input_values=batch["input_values"]).logits
    save_adapted(model, tmp_path / "adapted", processor=processor)
    reloaded = load_adapted(tmp_path / "adapted")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_values=batch["input_values"]).logits, trained)


def test_full_fine_tuning_keeps_batchnorm_trainable(golden: Path) -> None:
    clf = ECGClassifier.from_backbone(load_original(_ckpt(golden, "resnet1d"))[0], ["a"])
    ecg_adapt.adapt(clf, "full")
    clf.train()
    assert clf.backbone.bn1.training and clf.backbone.layer4[1].bn2.training
    ecg_adapt.adapt(clf, "linear_probe")
    clf.train()
    assert not clf.backbone.bn1.training


