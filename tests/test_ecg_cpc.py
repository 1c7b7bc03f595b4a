"""ECG-CPC: processor parity from the raw record, the resampler, the safe Lightning checkpoint reader, the
converter's hyperparameter sources and key checks, and attention masks on the causal S4.

Golden parity of hidden states and features through every loader is in tests/test_families_common.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ecg_adapt.data import read_wfdb
from ecg_adapt.models import CheckpointMismatchError
from ecg_adapt.models.ecg_cpc import (
    FAMILY,
    ECGCPCConfig,
    ECGCPCModel,
    convert_ecg_cpc,
    default_processor_steps,
    load_original,
    read_lightning_checkpoint,
    sinc_resample,
)
from ecg_adapt.models.ecg_cpc.convert import plain
from ecg_adapt.processing import ECGProcessor

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(FAMILY.tiny_configs["ecg_cpc"])


def _dir(golden: Path) -> Path:
    return golden / "ecg_cpc"


def _tol(golden: Path, what: str) -> dict:
    tol = json.loads((_dir(golden) / "meta.json").read_text())["tolerance"][what]
    return {"atol": tol["atol"], "rtol": tol["rtol"]}


def _outputs(model: torch.nn.Module, golden: Path) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(np.load(_dir(golden) / "model_input.npy")))
    return out.last_hidden_state.numpy(), out.pooler_output.numpy()


# --------------------------------------------------------------------------------------------------- processor
def test_default_processor_reproduces_the_benchmark_windows_from_the_raw_record(samples: Path, golden: Path) -> None:
    record = read_wfdb(samples / "cinc2021" / "HR06000")
    processor = ECGProcessor(ECGCPCConfig().signal_contract, default_processor_steps())
    batch = processor(record)
    # 10 s at 500 Hz -> four 2.5 s windows cut at 500 Hz, each resampled alone to 600 samples at 240 Hz.
    assert tuple(batch["input_values"].shape) == (4, 12, 600)
    assert batch.reports[0].window_starts_s == [0.0, 2.5, 5.0, 7.5]
    expected = np.load(_dir(golden) / "model_input.npy")  # the first two windows of the original pipeline
    np.testing.assert_allclose(batch["input_values"][:2].numpy(), expected, **_tol(golden, "model_input"))
    np.testing.assert_array_equal(batch["input_values"][:2].numpy(), expected)  # in fact bit for bit


def test_resampling_each_window_alone_is_what_the_benchmark_does(samples: Path, golden: Path) -> None:
    record = read_wfdb(samples / "cinc2021" / "HR06000")
    x = np.asarray(record.signal, dtype=np.float32)  # (12, 5000)
    whole_then_cut = sinc_resample(x, 500, 240)[:, :1200].reshape(12, 2, 600).transpose(1, 0, 2)
    expected = np.load(_dir(golden) / "model_input.npy")
    assert np.abs(whole_then_cut - expected).max() > 1e-3  # the order matters (README: up to 0.029 mV)
    per_window = sinc_resample(np.stack([x[:, :1250], x[:, 1250:2500]]), 500, 240)
    np.testing.assert_array_equal(per_window, expected)  # float32 accumulation as resampy: bit for bit


def test_sinc_resampler_reproduces_a_band_limited_signal_at_other_rates() -> None:
    t_in = np.arange(1000) / 500.0
    x = np.sin(2 * np.pi * 7.0 * t_in) + 0.5 * np.cos(2 * np.pi * 31.0 * t_in)  # well below both Nyquist rates
    for fs_out in (240.0, 257.0, 1000.0):
        y = sinc_resample(x, 500.0, fs_out)
        t_out = np.arange(y.shape[-1]) / fs_out
        truth = np.sin(2 * np.pi * 7.0 * t_out) + 0.5 * np.cos(2 * np.pi * 31.0 * t_out)
        assert y.shape[-1] == int(1000 * fs_out / 500)
        inner = slice(y.shape[-1] // 10, -y.shape[-1] // 10)  # away from the edges the filter truncates
        np.testing.assert_allclose(y[inner], truth[inner], atol=2e-3)


def test_processor_resamples_other_rates_to_500_hz_before_windowing() -> None:
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((12, 2570)).astype(np.float32)  # 10 s at 257 Hz
    processor = ECGProcessor(ECGCPCConfig().signal_contract, default_processor_steps())
    batch = processor(signal, sampling_rate=257, lead_names=list(ECGCPCConfig().signal_contract["leads"]))
    assert tuple(batch["input_values"].shape) == (4, 12, 600)
    assert any("257 Hz -> 500 Hz" in n for n in batch.reports[0].notes)


# ------------------------------------------------------------------------------------------- checkpoint reading
class _RunsCode:
    """A pickled object whose __reduce__ would create ``marker`` when unpickled by a plain unpickler."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _golden_parts(golden: Path) -> dict:
    """The golden checkpoint's weights and its hyperparameters as plain data (re-saved by the tests below)."""
    ck = read_lightning_checkpoint(_dir(golden) / "last_small_random.ckpt")
    return {"state_dict": ck["state_dict"], "hyper_parameters": plain(ck["hyper_parameters"])}


def test_golden_checkpoint_is_read_without_clinical_ts_or_omegaconf(golden: Path) -> None:
    # torch's weights-only unpickler refuses the file (the reason the restricted reader exists) ...
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(_dir(golden) / "last_small_random.ckpt", weights_only=True)
    # ... which reads it in a fresh process without importing either package.
    code = (
        "import sys; from ecg_adapt.models.ecg_cpc.convert import read_lightning_checkpoint, plain\n"
        f"ck = read_lightning_checkpoint({str(_dir(golden) / 'last_small_random.ckpt')!r})\n"
        "hp = plain(ck['hyper_parameters'])\n"
        "assert hp['ts']['enc']['strides'] == [2, 1, 1, 1] and hp['ts']['pred']['model_dim'] == 64, hp['ts']\n"
        "assert len(ck['state_dict']) == 77\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('clinical_ts', 'omegaconf', 'lightning', 'pytorch_lightning')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_checkpoint_whose_pickle_runs_code_is_refused_and_never_executed(golden: Path, tmp_path: Path) -> None:
    parts = _golden_parts(golden)
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": parts["state_dict"], "hyper_parameters": parts["hyper_parameters"],
                "callbacks": {"x": _RunsCode(marker)}}, path)
    with pytest.raises(ValueError, match=r"system.*allow_pickle=True"):
        convert_ecg_cpc(path, tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()
    # Trusted with allow_pickle=True: the payload is still only an inert object, and the weights convert.
    convert_ecg_cpc(path, tmp_path / "out", allow_pickle=True)
    assert not marker.exists()
    model = ECGCPCModel.from_pretrained(tmp_path / "out")
    hidden, features = _outputs(model, golden)
    np.testing.assert_allclose(features, np.load(_dir(golden) / "features.npy"), **_tol(golden, "features"))


def test_mismatched_keys_and_shapes_are_listed(golden: Path, tmp_path: Path) -> None:
    parts = _golden_parts(golden)
    sd = dict(parts["state_dict"])
    sd.pop("ts_encoder.predictor.predictor.norms.1.weight")
    sd["ts_encoder.predictor.predictor.s4_layers.0.extra"] = torch.zeros(3)
    torch.save({"state_dict": sd, "hyper_parameters": parts["hyper_parameters"]}, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointMismatchError) as err:
        load_original(tmp_path / "bad.ckpt")
    assert "blocks.1.norm.weight" in str(err.value) and "blocks.0.s4.extra" in str(err.value)
    sd = dict(parts["state_dict"])
    sd["ts_encoder.predictor.predictor.s4_layers.2.D"] = torch.zeros(1, 32)
    torch.save({"state_dict": sd, "hyper_parameters": parts["hyper_parameters"]}, tmp_path / "shape.ckpt")
    with pytest.raises(CheckpointMismatchError, match=r"blocks.2.s4.D: checkpoint \(1, 32\) vs model \(1, 64\)"):
        load_original(tmp_path / "shape.ckpt")
    with pytest.raises(ValueError, match="no Lightning 'state_dict'"):
        torch.save({"epoch": 1}, tmp_path / "empty.ckpt")
        load_original(tmp_path / "empty.ckpt")


def test_hyperparameters_come_from_the_checkpoint_or_its_yaml_and_must_agree(golden: Path, tmp_path: Path) -> None:
    expected_hidden = np.load(_dir(golden) / "hidden.npy")
    # The benchmark's way in: the YAML whose trainer.pretrained names the checkpoint.
    model, _ = load_original(_dir(golden) / "config_last_small_random_ckpt.yaml")
    np.testing.assert_allclose(_outputs(model, golden)[0], expected_hidden, **_tol(golden, "hidden"))
    # A checkpoint without hyper_parameters takes strides etc. from the YAML given beside it.
    parts = _golden_parts(golden)
    torch.save({"state_dict": parts["state_dict"]}, tmp_path / "bare.ckpt")
    text = (_dir(golden) / "config_last_small_random_ckpt.yaml").read_text()
    (tmp_path / "strides.yaml").write_text(text.replace("strides:\n    - 2\n", "strides:\n    - 4\n", 1))
    assert "- 4" in (tmp_path / "strides.yaml").read_text()
    model, _ = load_original(tmp_path / "bare.ckpt", config_yaml=tmp_path / "strides.yaml")
    assert model.config.encoder_strides == [4, 1, 1, 1]
    # Sources that disagree (the YAML's widths against the tensors, or against the checkpoint's own) are errors.
    (tmp_path / "wide.yaml").write_text(text.replace("model_dim: 64", "model_dim: 128"))
    with pytest.raises(ValueError, match="model_dim=128 but the checkpoint's tensors give 64"):
        load_original(_dir(golden) / "last_small_random.ckpt", config_yaml=tmp_path / "wide.yaml")
    with pytest.raises(ValueError, match="encoder_strides"):
        load_original(_dir(golden) / "last_small_random.ckpt", config_yaml=tmp_path / "strides.yaml")


# ------------------------------------------------------------------------------------------------------- model
def test_kernel_is_evaluated_on_the_stored_grid_and_longer_inputs_are_refused(golden: Path) -> None:
    model, _ = load_original(_dir(golden) / "last_small_random.ckpt")
    kernel = model.blocks[0].s4.kernel
    full = kernel(1200)
    assert tuple(full.shape) == (1, 64, 1200)
    torch.testing.assert_close(kernel(300), full[..., :300], rtol=0, atol=0)  # truncated, not recomputed
    with pytest.raises(ValueError, match="at most l_max=1200 tokens"):
        model(torch.zeros(1, 12, 2402))


def test_padding_at_the_end_leaves_earlier_tokens_of_the_causal_model_alone() -> None:
    torch.manual_seed(0)
    model = ECGCPCModel(ECGCPCConfig(**TINY)).eval()
    x = torch.randn(1, 12, 600)
    mask = torch.ones_like(x, dtype=torch.long)
    mask[..., 300:] = 0
    with torch.no_grad():
        padded = model(x, attention_mask=mask)
        short = model(x[..., :300])
    # Token j sees samples 2j-1..2j+1: the first 150 tokens see only real samples (and the zero padding at the
    # edge that the short input also has); the causal S4 keeps later padding out of them.
    torch.testing.assert_close(padded.last_hidden_state[:, :150], short.last_hidden_state, atol=1e-5, rtol=1e-4)
    frames = model.frame_mask(mask)
    assert frames[0, :151].all() and not frames[0, 151:].any()  # token 150 still sees sample 299
    torch.testing.assert_close(padded.pooler_output, padded.last_hidden_state[:, :151].mean(1))


def test_frozen_batch_norm_stays_in_eval_mode_and_trainable_batch_norm_uses_batch_statistics() -> None:
    model = ECGCPCModel(ECGCPCConfig(**TINY))
    norm = model.encoder.layers[0].norm
    assert model.train().training and norm.training
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    model.train()
    assert model.blocks[0].training and not norm.training


def test_released_variant_names_its_figshare_release() -> None:
    (variant,) = FAMILY.released_variants
    assert variant["release"] == {"url": "https://figshare.com/articles/dataset/ECG-CPC_Checkpoint_zip/30192604",
                                  "host": "figshare", "filename": "last_11597276.ckpt"}
    assert variant["licence"].startswith("none stated") and "CC BY 4.0" in variant["licence"]


def test_cached_inference_kernel_follows_every_change_of_the_weights(golden: Path) -> None:
    model, _ = load_original(_dir(golden) / "last_small_random.ckpt")
    x = torch.from_numpy(np.load(_dir(golden) / "model_input.npy"))
    with torch.no_grad():
        before = model(x).last_hidden_state
        model.blocks[1].s4.kernel.C.mul_(0.5)  # an in-place update, as an optimiser step makes
        after = model(x).last_hidden_state
    recomputed = model(x).last_hidden_state.detach()  # with autograd: no cache
    assert not torch.allclose(before, after, atol=1e-3)
    torch.testing.assert_close(after, recomputed, rtol=0, atol=0)
    fresh, _ = load_original(_dir(golden) / "last_small_random.ckpt")
    model.load_state_dict(fresh.state_dict())  # copy_ back into the same tensors
    with torch.no_grad():
        torch.testing.assert_close(model(x).last_hidden_state, before, rtol=0, atol=0)


@pytest.mark.parametrize("causal", [True, False])
def test_causal_kernels_keep_the_future_out_and_bidirectional_ones_do_not(causal: bool) -> None:
    torch.manual_seed(0)
    model = ECGCPCModel(ECGCPCConfig(**{**TINY, "causal": causal})).eval()
    assert tuple(model.blocks[0].s4.kernel.C.shape[:1]) == ((1,) if causal else (2,))
    x = torch.randn(1, 12, 600)
    y = x.clone()
    y[..., 400:] += 1.0  # change the last third of the window
    with torch.no_grad():
        a, b = model(x).last_hidden_state, model(y).last_hidden_state
    early = slice(0, 190)  # tokens whose conv window ends before sample 400
    # causal: unchanged up to FFT rounding; bidirectional: the backward kernel carries the change back
    assert torch.allclose(a[:, early], b[:, early], atol=1e-5) == causal, (a[:, early] - b[:, early]).abs().max()
    assert not torch.allclose(a[:, 250:], b[:, 250:])


# ----------------------------------------------------------------------------------------- convert --config
def test_convert_cli_config_overrides_set_what_the_tensors_cannot_tell_and_refuse_what_they_do(
    golden: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ecg_adapt.cli import main

    parts = _golden_parts(golden)
    torch.save({"state_dict": parts["state_dict"]}, tmp_path / "bare.ckpt")  # no hyper_parameters: strides unknown
    src, dst = str(tmp_path / "bare.ckpt"), tmp_path / "out"
    assert main(["convert", "--family", "ecg_cpc", "--config", "encoder_strides=[4, 1, 1, 1]", "--config", "dropout=0.1",
                 src, str(dst)]) == 0
    model = ECGCPCModel.from_pretrained(dst)
    assert model.config.encoder_strides == [4, 1, 1, 1] and model.config.dropout == 0.1
    # The override wins over the checkpoint's own hyperparameters too (stride 2 in the golden file) ...
    assert main(["convert", "--family", "ecg_cpc", "--config", "encoder_strides=[4, 1, 1, 1]",
                 str(_dir(golden) / "last_small_random.ckpt"), str(tmp_path / "own")]) == 0
    assert ECGCPCModel.from_pretrained(tmp_path / "own").config.encoder_strides == [4, 1, 1, 1]
    # ... and the tokens follow it: 4x fewer encoder steps than the golden model's stride 2 gives.
    with torch.no_grad():
        x = torch.from_numpy(np.load(_dir(golden) / "model_input.npy"))
        hidden = ECGCPCModel.from_pretrained(tmp_path / "own").eval()(x).last_hidden_state
    assert hidden.shape[1] == np.load(_dir(golden) / "hidden.npy").shape[1] // 2
    # A width the tensors give is not overridable; an unknown field is named with the valid ones.
    capsys.readouterr()
    assert main(["convert", "--family", "ecg_cpc", "--config", "model_dim=128", src, str(tmp_path / "bad")]) == 2
    assert "--config model_dim=128: the checkpoint's tensors give model_dim=64" in capsys.readouterr().err
    assert main(["convert", "--family", "ecg_cpc", "--config", "strides=[4]", src, str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "--config strides=..." in err and "encoder_strides" in err
    assert not (tmp_path / "bad").exists()
