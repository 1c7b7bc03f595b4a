"""ECGFM-KED: the release container and its duplicated tensors, both input contracts from the raw record, masks,
frozen BatchNorm, and a malicious pickle. (Golden parity through every loader and the CLI: test_families_common.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ecg_adapt import ECGClassifier, adapt, load_backbone, load_processor
from ecg_adapt.data import read_wfdb
from ecg_adapt.models import CheckpointMismatchError
from ecg_adapt.models.ecgfm_ked import (
    KED_BENCHMARK_CONTRACT,
    KED_ORIGINAL_CONTRACT,
    RELEASE_FILE,
    ECGFMKEDConfig,
    ECGFMKEDModel,
    convert_ecgfm_ked,
    default_processor_steps,
    load_original,
)
from ecg_adapt.models.registry import get_family, released_variants
from ecg_adapt.processing import ECGProcessor


CKPT = "best_valid_all_increase_with_augment_epoch_3_small_random.pt"
CONTRACTS = {"original": ("", KED_ORIGINAL_CONTRACT), "benchmark": ("_benchmark", KED_BENCHMARK_CONTRACT)}


def _dir(golden: Path) -> Path:
    return golden / "ecgfm_ked"


def _meta(golden: Path) -> dict:
    return json.loads((_dir(golden) / "meta.json").read_text())


def _tol(golden: Path, what: str) -> dict[str, float]:
    t = _meta(golden)["tolerance"][what]
    return {"atol": t["atol"], "rtol": t["rtol"]}


def _container(golden: Path) -> dict:
    return torch.load(_dir(golden) / CKPT, map_location="cpu", weights_only=True)


def _check_golden(model: ECGFMKEDModel, golden: Path, suffix: str) -> None:
    x = torch.from_numpy(np.load(_dir(golden) / f"model_input{suffix}.npy"))
    with torch.no_grad():
        out = model.eval()(x)
    np.testing.assert_allclose(out.last_hidden_state.transpose(1, 2).numpy(), np.load(_dir(golden) / f"hidden{suffix}.npy"),
                               **_tol(golden, "hidden"))
    np.testing.assert_allclose(out.pooler_output.numpy(), np.load(_dir(golden) / f"features{suffix}.npy"), **_tol(golden, "features"))


# ------------------------------------------------------------------------------------------------ the container
def test_release_container_loads_its_ecg_model_entry_and_reports_the_rest(golden: Path) -> None:
    meta = _meta(golden)
    model, report = load_original(_dir(golden) / CKPT)
    assert sorted(report.dropped) == sorted(f"checkpoint[{k!r}]" for k in meta["container"]["top_level_keys"] if k != "ecg_model")
    c = model.config
    assert (c.layers, c.block_szs, c.stem_szs, c.expansion, c.kernel_size, c.kernel_size_stem) == (
        [1, 1, 1, 1], meta["original_kwargs"]["derived"]["block_szs"], [32, 32, 64], 4, 5, 5)
    assert c.hidden_size == meta["original_kwargs"]["derived"]["feature_dim"]
    assert sum(p.numel() for p in model.parameters()) == meta["n_params"]["ecg_model"]
    # 180 original keys = 108 unique tensors + 72 convpath duplicates; every one is accounted for
    assert len(report.renamed) == meta["container"]["n_ecg_model_keys"]
    assert len(model.state_dict()) == meta["container"]["n_ecg_model_keys"] - meta["duplicate_keys_check"]["n_convpath_keys"]
    for suffix in ("", "_benchmark"):
        _check_golden(model, golden, suffix)


def test_flat_ecg_model_prefixed_layout_converts_to_the_same_model(golden: Path, tmp_path: Path) -> None:
    # The benchmark's EcgFmKEDWrapper expects flat 'ecg_model.'-prefixed keys (on the nested release it loads nothing).
    box = _container(golden)
    flat = {f"ecg_model.{k}": v for k, v in box["ecg_model"].items()}
    flat.update({f"text_encoder.{k}": v for k, v in box["text_encoder"].items()})
    torch.save(flat, tmp_path / "flat.pt")
    # (torch.save keeps each convs/convpath pair as one storage; safetensors needs separate copies)
    save_file({k: v.clone() for k, v in box["ecg_model"].items()}, str(tmp_path / "bare.safetensors"))
    reference, _ = load_original(_dir(golden) / CKPT)
    for src in ("flat.pt", "bare.safetensors"):
        model, report = load_original(tmp_path / src)
        assert all(k.startswith("text_encoder.") for k in report.dropped) and (src == "flat.pt") == bool(report.dropped)
        for k, v in reference.state_dict().items():
            assert torch.equal(model.state_dict()[k], v), (src, k)


def test_a_duplicated_tensor_that_disagrees_with_its_twin_is_refused(golden: Path, tmp_path: Path) -> None:
    box = _container(golden)
    key = "5.0.convpath.0.1.0.weight"
    box["ecg_model"][key] = box["ecg_model"][key] + 1e-3
    torch.save(box, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointMismatchError, match=r"5\.0\.convpath\.0\.1\.0\.weight != 5\.0\.convs\.1\.0\.weight"):
        load_original(tmp_path / "tampered.pt")
    with pytest.raises(CheckpointMismatchError):
        convert_ecgfm_ked(tmp_path / "tampered.pt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_mismatched_keys_are_refused_with_every_offending_key(golden: Path, tmp_path: Path) -> None:
    box = _container(golden)
    sd = box["ecg_model"]
    # a missing tensor (and its duplicate), a key that maps nowhere, and a wrong shape
    sd.pop("6.0.convs.2.1.running_var"), sd.pop("6.0.convpath.0.2.1.running_var")
    sd["4.0.attention.weight"] = torch.zeros(3)
    sd["1.1.bias"] = torch.zeros(7)
    torch.save(box, tmp_path / "broken.pt")
    with pytest.raises(CheckpointMismatchError) as e:
        load_original(tmp_path / "broken.pt")
    msg = str(e.value)
    assert "stages.2.0.convs.2.bn.running_var" in msg and "4.0.attention.weight" in msg and "stem.1.bn.bias" in msg
    # a convpath tensor without its convs twin, and an identity projection at the wrong idpath index
    box = _container(golden)
    box["ecg_model"].pop("7.0.convs.0.0.weight")
    box["ecg_model"]["5.0.idpath.0.0.weight"] = box["ecg_model"].pop("5.0.idpath.1.0.weight")
    torch.save(box, tmp_path / "orphan.pt")
    with pytest.raises(CheckpointMismatchError, match=r"without a convs twin.*7\.0\.convpath\.0\.0\.0\.weight") as e:
        load_original(tmp_path / "orphan.pt")
    assert "5.0.idpath.0.0.weight (expected idpath.1" in str(e.value)
    # not a KED file at all
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointMismatchError, match="no stem conv"):
        load_original(tmp_path / "other.pt")
    torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 3}, tmp_path / "no_encoder.pt")
    with pytest.raises(ValueError, match=r"no 'ecg_model' entry.*\['epoch', 'state_dict'\]"):
        load_original(tmp_path / "no_encoder.pt")


class _Payload:
    """Unpickling this runs ``exec``: a file crafted to run code on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_a_pickle_with_a_malicious_reduce_never_runs(golden: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    box = _container(golden)
    box["config"] = _Payload(marker)
    torch.save(box, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="allow_pickle=True"):
        load_original(tmp_path / "evil.pt")
    assert not marker.exists()
    # Even when the user trusts the file, the payload is built as an inert object and nothing runs.
    model, report = load_original(tmp_path / "evil.pt", allow_pickle=True)
    assert not marker.exists()
    assert "checkpoint['config']" in report.dropped
    _check_golden(model, golden, "")


# --------------------------------------------------------------------------------------------- input contracts
@pytest.mark.parametrize("contract", sorted(CONTRACTS))
def test_processor_reproduces_each_contracts_model_input_from_the_raw_record(golden: Path, samples: Path, contract: str) -> None:
    suffix, spec = CONTRACTS[contract]
    meta = _meta(golden)
    record = read_wfdb(samples / meta["input"]["this_file"].split("ecg-samples/")[1].split(" ")[0])  # cinc2021/HR06000
    expected = np.load(_dir(golden) / f"model_input{suffix}.npy")
    for mode in ("first", "all"):  # one 10 s record is one window either way
        processor = ECGProcessor(spec, default_processor_steps(mode, input_contract=contract))
        out = processor.process(record.signal, record.sampling_rate, record.lead_names, record_id=record.record_id)
        assert out.input_values.shape == expected.shape
        np.testing.assert_allclose(out.input_values, expected, **_tol(golden, "model_input"))
    # The original contract is MIMIC order (row 4 = aVF): the record's standard order is reordered by name.
    assert record.lead_names[4:6] == ["aVL", "aVF"]
    assert out.report.reordered == (contract == "original")


def test_processor_windows_long_records_at_their_own_rate_before_resampling(samples: Path) -> None:
    # PTB: 1000 Hz, 38.4 s. Original contract: each 10 s window is FFT-resampled to 1000 samples on its own.
    from scipy.signal import resample

    record = read_wfdb(samples / "ptbdb" / "s0010_re")
    out = ECGProcessor(KED_ORIGINAL_CONTRACT, default_processor_steps("all")).process(
        record.signal, record.sampling_rate, record.lead_names)
    assert out.input_values.shape == (4, 12, 1000) and out.report.window_starts_s == [0.0, 10.0, 20.0, 28.4]
    lead_ii = [n.lower() for n in record.lead_names].index("ii")
    expected = resample(record.signal[lead_ii, 10000:20000], 1000)
    np.testing.assert_allclose(out.input_values[1, 1], expected, atol=1e-5)
    bench = ECGProcessor(KED_BENCHMARK_CONTRACT, default_processor_steps("all", input_contract="benchmark")).process(
        record.signal, record.sampling_rate, record.lead_names)
    assert bench.input_values.shape == (4, 12, 5000)
    with pytest.raises(ValueError, match="input_contract"):
        default_processor_steps(input_contract="250hz")


def test_converted_folder_carries_the_chosen_contract_and_its_processor(golden: Path, samples: Path, tmp_path: Path) -> None:
    record = read_wfdb(samples / "cinc2021" / "HR06000")
    for contract, (suffix, spec) in CONTRACTS.items():
        dst = tmp_path / contract
        convert_ecgfm_ked(_dir(golden) / CKPT, dst, input_contract=contract)
        model = load_backbone(dst)
        assert model.config.input_contract == contract and model.config.signal_contract == spec.to_dict()
        batch = load_processor(dst)(record)
        np.testing.assert_allclose(batch["input_values"].numpy(), np.load(_dir(golden) / f"model_input{suffix}.npy"),
                                   **_tol(golden, "model_input"))
        _check_golden(model, golden, suffix)
    # A contract named through config_overrides (a generic size/field override) also picks the processor.
    convert_ecgfm_ked(_dir(golden) / CKPT, tmp_path / "override", config_overrides={"input_contract": "benchmark"})
    assert load_processor(tmp_path / "override").contract == KED_BENCHMARK_CONTRACT
    with pytest.raises(ValueError, match="input_contract must be one of"):
        convert_ecgfm_ked(_dir(golden) / CKPT, tmp_path / "x", input_contract="100hz")


def test_a_folder_without_its_processor_gets_the_default_steps_of_its_own_contract(golden: Path, samples: Path,
                                                                                   tmp_path: Path) -> None:
    # Original releases ship no preprocessor_config.json: the fallback must follow the config's contract, or a
    # benchmark-contract model would be fed 100 Hz windows.
    record = read_wfdb(samples / "cinc2021" / "HR06000")
    for contract, (suffix, _) in CONTRACTS.items():
        dst = tmp_path / contract
        convert_ecgfm_ked(_dir(golden) / CKPT, dst, input_contract=contract)
        (dst / "preprocessor_config.json").unlink()
        batch = load_processor(dst)(record)
        np.testing.assert_allclose(batch["input_values"].numpy(), np.load(_dir(golden) / f"model_input{suffix}.npy"),
                                   **_tol(golden, "model_input"))


# --------------------------------------------------------------------------------------------- released variants
def test_released_variants_name_the_zenodo_release_and_both_contracts() -> None:
    rows = {v["name"]: v for v in released_variants() if v["family"] == "ecgfm_ked"}
    assert set(rows) == {"ecgfm-ked", "ecgfm-ked-benchmark"}
    for name, v in rows.items():
        assert v["release"] == {"url": "https://zenodo.org/records/14881564", "host": "Zenodo", "filename": RELEASE_FILE}
        assert v["licence"] == "not stated"
        config = ECGFMKEDConfig(**v["config"])
        assert config.input_contract == v["convert_kwargs"]["input_contract"]
        assert config.hidden_size == v["features"] == 768 and config.block_szs == [16, 64, 128, 128, 192]
        with torch.device("meta"):
            assert sum(p.numel() for p in ECGFMKEDModel(config).parameters()) == v["parameters"] == 7_865_984
    assert rows["ecgfm-ked"]["config"]["input_contract"] == "original"
    assert ECGFMKEDConfig(**rows["ecgfm-ked-benchmark"]["config"]).contract.input_shape == (12, 5000)


def test_config_refuses_inconsistent_widths_and_even_kernels() -> None:
    with pytest.raises(ValueError, match="block_szs\\[0\\] \\* expansion"):
        ECGFMKEDConfig(stem_szs=[32, 32, 48])
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        ECGFMKEDConfig(kernel_size=4)
    with pytest.raises(ValueError, match="hidden_size=512 disagrees"):
        ECGFMKEDConfig(hidden_size=512)
    with pytest.raises(ValueError, match="input_contract must be one of"):
        ECGFMKEDConfig(input_contract="mimic")


# ------------------------------------------------------------------------------------------- masks and training
def _tiny() -> ECGFMKEDModel:
    family = get_family("ecgfm_ked")
    torch.manual_seed(0)
    return family.model_class(family.config_class(**family.tiny_configs["ecgfm_ked"])).eval()


def test_padded_frames_are_left_out_of_the_features() -> None:
    model = _tiny()
    x = torch.randn(2, 12, 1000)
    mask = torch.ones_like(x, dtype=torch.long)
    mask[1, :, 640:] = 0  # frames centred on samples 0, 32, ..., 608 are real: 20 of 32
    with torch.no_grad():
        plain = model(x)
        masked = model(x, attention_mask=mask)
        ones = model(x, attention_mask=torch.ones_like(mask))
    assert torch.equal(ones.pooler_output, plain.pooler_output)
    torch.testing.assert_close(masked.pooler_output[0], plain.pooler_output[0], rtol=0, atol=0)
    torch.testing.assert_close(masked.pooler_output[1], plain.last_hidden_state[1, :20].mean(0))
    assert model.frame_mask(mask, 32)[1].sum() == 20
    with pytest.raises(ValueError, match="frames"):
        model.frame_mask(mask, 31)


def test_lora_training_leaves_batch_norm_statistics_as_pretrained() -> None:
    clf = ECGClassifier.from_backbone(_tiny(), ["a", "b"])
    before = {n: b.clone() for n, b in clf.backbone.named_buffers()}
    model = adapt(clf, "lora", r=2)
    model.train()
    x = torch.randn(4, 12, 1000)
    model(input_values=x, labels=torch.tensor([[1.0, 0.0]] * 4)).loss.backward()
    assert all(not m.training for m in clf.backbone.modules() if isinstance(m, torch.nn.BatchNorm1d))
    for n, b in clf.backbone.named_buffers():
        assert torch.equal(b, before[n]), n


def _original_keys(model: ECGFMKEDModel) -> dict[str, torch.Tensor]:
    """The state dict the original ``XResNet1d`` of the same architecture would save (indices, convs twice)."""
    part = {"conv": "0", "bn": "1"}
    out = {}
    for key, value in model.state_dict().items():
        p = key.split(".")
        if p[0] == "stem":
            out[f"{p[1]}.{part[p[2]]}.{'.'.join(p[3:])}"] = value
            continue
        stage, block, rest = int(p[1]) + 4, p[2], p[3:]
        if rest[0] == "convs":
            tail = f"{rest[1]}.{part[rest[2]]}.{'.'.join(rest[3:])}"
            out[f"{stage}.{block}.convs.{tail}"] = value
            out[f"{stage}.{block}.convpath.0.{tail}"] = value
        else:  # idconv: after the pool in strided blocks
            pooled = model.stages[int(p[1])][int(block)].pool is not None
            out[f"{stage}.{block}.idpath.{int(pooled)}.{part[rest[1]]}.{'.'.join(rest[2:])}"] = value
    return out


def test_other_xresnet1d_depths_and_a_diagnosis_head_convert(tmp_path: Path) -> None:
    # A basic-block XResNet1d (expansion 1, as xresnet1d18/34) with 5 stages and a head after the last stage.
    config = ECGFMKEDConfig(expansion=1, layers=[1, 2, 1, 1, 1], stem_szs=[8, 8, 64], kernel_size=3, kernel_size_stem=7,
                            widen=0.25, zero_bn=False)
    assert config.block_szs == [64, 16, 32, 32, 48, 8]
    torch.manual_seed(0)
    model = ECGFMKEDModel(config).eval()
    sd = _original_keys(model)
    sd["9.weight"], sd["9.bias"] = torch.zeros(5, 8), torch.zeros(5)  # the head (index 4 + 5 stages)
    torch.save({"ecg_model": sd, "epoch": 1}, tmp_path / "basic.pt")
    loaded, report = load_original(tmp_path / "basic.pt")
    assert {k: getattr(loaded.config, k) for k in ("expansion", "layers", "block_szs", "kernel_size", "kernel_size_stem")} == {
        "expansion": 1, "layers": [1, 2, 1, 1, 1], "block_szs": [64, 16, 32, 32, 48, 8], "kernel_size": 3, "kernel_size_stem": 7}
    assert sorted(report.dropped) == ["9.bias", "9.weight", "checkpoint['epoch']"]
    x = torch.randn(1, 12, 1000)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).last_hidden_state, model(x).last_hidden_state, rtol=0, atol=0)
