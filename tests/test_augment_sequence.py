"""Training-time augmentations, the context-window dataset and the sequence classifier."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_HUBERT

from ecg_adapt.data.cache import build_cache
from ecg_adapt.processing.quality import QualityThresholds
from ecg_adapt.data.context import ContextWindowDataset, parse_unit_ids
from ecg_adapt.data.record import ECGRecord
from ecg_adapt.models.classifier import ECGClassifier
from ecg_adapt.models.hubert_ecg import HUBERT_ECG_CONTRACT, HubertECGConfig, HubertECGModel
from ecg_adapt.models.sequence import ECGSequenceClassifier
from ecg_adapt.processing import ECGProcessor, SignalContract, Window, step_from_dict
from ecg_adapt.processing.augment import (
    AUGMENTATIONS,
    REFERENCE_LEAD_STD_MV,
    Augmenter,
    batch_generator,
)

# 3 leads at 250 Hz, 4 s windows (powerline noise needs a contract that can carry 50/60 Hz).
CHANNELS = SignalContract(leads=("I", "II", "V1"), sampling_rate=250, window_samples=1000, layout="channels_first",
                          normalization="z-score per lead")
FLAT = SignalContract(leads=("I", "II", "V1"), sampling_rate=250, window_samples=1000, layout="lead_major_flat",
                      normalization="min-max per lead")
MILLIVOLTS = SignalContract(leads=("I", "II"), sampling_rate=500, window_samples=5000, normalization="none: mV")
ALL_NAMES = [cls.name for cls in AUGMENTATIONS]


def ecg_like(contract: SignalContract, n: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch of smooth ECG-like windows (a 1.2 Hz pulse train per lead), mask all ones."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(contract.window_samples) / contract.sampling_rate
    beats = torch.exp(-(((t[None, None, :] * 1.2) % 1.0 - 0.5) ** 2) / 0.002)
    gain = 0.5 + torch.rand(n, contract.n_leads, 1, generator=g)
    x = (gain * beats - 0.1 * gain).to(torch.float32)
    x = x.reshape((n,) + contract.input_shape)
    return {"input_values": x, "attention_mask": torch.ones_like(x, dtype=torch.long), "labels": torch.zeros(n, 2)}


def leads_view(t: torch.Tensor, contract: SignalContract) -> torch.Tensor:
    return t.reshape(-1, contract.n_leads, contract.window_samples)


# ----------------------------------------------------------------------------------------------- augmentations
@pytest.mark.parametrize("contract", [CHANNELS, FLAT], ids=["channels_first", "lead_major_flat"])
@pytest.mark.parametrize("name", ALL_NAMES)
def test_each_augmentation_changes_the_batch_in_train_mode_and_is_the_identity_in_eval(name, contract):
    batch = ecg_like(contract)
    before = {k: v.clone() for k, v in batch.items()}
    aug = Augmenter.from_config([{"name": name, "p": 1.0}], contract)
    out = aug(batch, torch.Generator().manual_seed(0))
    assert out["input_values"].shape == batch["input_values"].shape
    assert out["attention_mask"].dtype == batch["attention_mask"].dtype
    assert not torch.equal(out["input_values"], batch["input_values"])
    assert out["labels"] is batch["labels"]  # other keys pass through
    for k, value in before.items():  # the input batch is not modified in place
        assert torch.equal(batch[k], value)
    aug.eval()
    same = aug(batch, torch.Generator().manual_seed(0))
    assert same is batch and torch.equal(same["input_values"], before["input_values"])
    aug.train()
    assert not torch.equal(aug(batch, torch.Generator().manual_seed(0))["input_values"], batch["input_values"])


@pytest.mark.parametrize("contract", [CHANNELS, FLAT], ids=["channels_first", "lead_major_flat"])
def test_padding_masked_leads_and_zero_leads_stay_zero(contract):
    batch = ecg_like(contract, n=16)
    x, m = leads_view(batch["input_values"], contract), leads_view(batch["attention_mask"], contract)
    x[:, :, 700:] = 0  # a short record: padded at the end
    m[:, :, 700:] = 0
    x[:, 1] = 0  # lead II missing under missing_leads="mask"
    m[:, 1] = 0
    x[:, 2] = 0  # lead V1 missing under missing_leads="zero" (mask kept)
    config = [{"name": n, "p": 1.0} for n in ALL_NAMES if n != "random_crop"]
    out = Augmenter.from_config(config, contract)(batch, torch.Generator().manual_seed(1))
    ox, om = leads_view(out["input_values"], contract), leads_view(out["attention_mask"], contract)
    assert torch.equal(ox[:, :, 700:], torch.zeros_like(ox[:, :, 700:]))
    assert torch.equal(ox[:, 1:], torch.zeros_like(ox[:, 1:]))
    assert torch.equal(om, m)  # lead dropout cannot drop lead I: it is the only present lead
    assert not torch.equal(ox[:, 0, :700], x[:, 0, :700])

    # With a crop as well: wherever the output mask is 0 the signal is 0, and the real part only shrinks.
    out = Augmenter.from_config([{"name": "random_crop", "p": 1.0}] + config, contract)(batch, torch.Generator().manual_seed(2))
    ox, om = leads_view(out["input_values"], contract), leads_view(out["attention_mask"], contract)
    assert torch.equal(ox[om == 0], torch.zeros_like(ox[om == 0]))
    real = om[:, 0].sum(-1)
    assert bool(((real >= math.ceil(0.8 * 700)) & (real <= 700)).all()) and bool((real < 700).any())
    assert bool((om[:, 0, : int(real.min())] == 1).all())  # the kept span starts at t = 0, padding follows


def test_random_crop_moves_a_contiguous_span_to_the_start():
    contract = SignalContract(leads=("I", "II"), sampling_rate=100, window_samples=200)
    ramp = torch.arange(1, 201, dtype=torch.float32)
    x = torch.stack([ramp, -ramp])[None].repeat(32, 1, 1)
    batch = {"input_values": x, "attention_mask": torch.ones_like(x, dtype=torch.long)}
    out = Augmenter.from_config([{"name": "random_crop", "p": 1.0, "min_fraction": 0.5}], contract)(
        batch, torch.Generator().manual_seed(0))
    for xi, mi in zip(out["input_values"], out["attention_mask"]):
        n = int(mi[0].sum())
        assert 100 <= n <= 200 and bool((mi[:, :n] == 1).all()) and bool((mi[:, n:] == 0).all())
        start = xi[0, 0]
        assert torch.equal(xi[0, :n], torch.arange(start, start + n))  # a contiguous span of the original
        assert torch.equal(xi[1, :n], -xi[0, :n])  # both leads cropped alike
        assert int(start) + n - 1 <= 200


def test_lead_dropout_never_drops_every_lead():
    contract = SignalContract(leads=("I", "II", "III", "aVR"), sampling_rate=100, window_samples=50)
    batch = ecg_like(contract, n=64)
    batch["input_values"][:32, 1:] = 0  # half the windows have a single present lead
    batch["attention_mask"][:32, 1:] = 0
    aug = Augmenter.from_config([{"name": "lead_dropout", "p": 1.0, "rate": 1.0}], contract)
    for seed in range(5):
        out = aug(batch, torch.Generator().manual_seed(seed))
        kept = (out["input_values"] != 0).any(-1)
        assert bool((kept.sum(1) == 1).all())  # rate 1 drops all it may, and one lead always survives
        assert torch.equal(kept[:32, 0], torch.ones(32, dtype=torch.bool))  # the single present lead is never dropped
        assert torch.equal(out["attention_mask"].bool().any(-1), kept)  # the dropped leads' mask is cleared
    out = Augmenter.from_config([{"name": "lead_dropout", "p": 1.0, "rate": 1.0, "min_leads": 3, "mask_dropped": False}],
                                contract)(batch, torch.Generator().manual_seed(0))
    kept = (out["input_values"] != 0).any(-1)
    assert bool((kept[32:].sum(1) == 3).all()) and bool((kept[:32].sum(1) == 1).all())
    assert torch.equal(out["attention_mask"], batch["attention_mask"])  # mask_dropped=False keeps the mask


def test_lead_dropout_blanks_a_lead_segment_in_the_flat_layout():
    batch = ecg_like(FLAT, n=64)
    out = Augmenter.from_config([{"name": "lead_dropout", "p": 1.0, "rate": 0.5}], FLAT)(batch, torch.Generator().manual_seed(0))
    x, m = leads_view(out["input_values"], FLAT), leads_view(out["attention_mask"], FLAT)
    zero = (x == 0).all(-1)
    assert bool(zero.any()) and not bool(zero.all(1).any())
    # A lead is either untouched or blanked over its whole segment, with its mask cleared.
    orig = leads_view(batch["input_values"], FLAT)
    assert torch.equal(x[~zero], orig[~zero]) and bool((m[zero] == 0).all()) and bool((m[~zero] == 1).all())


def test_gaussian_noise_has_the_requested_snr():
    batch = ecg_like(CHANNELS, n=16)
    aug = Augmenter.from_config([{"name": "gaussian_noise", "p": 1.0, "min_snr_db": 20, "max_snr_db": 20}], CHANNELS)
    out = aug(batch, torch.Generator().manual_seed(0))
    noise = out["input_values"] - batch["input_values"]
    snr = 10 * torch.log10(batch["input_values"].var(-1) / noise.var(-1))
    assert float((snr - 20).abs().max()) < 1.0


def test_powerline_noise_is_at_mains_frequency_and_baseline_wander_is_slow():
    batch = ecg_like(MILLIVOLTS, n=8)
    out = Augmenter.from_config([{"name": "powerline_noise", "p": 1.0, "harmonics": 1}], MILLIVOLTS)(
        batch, torch.Generator().manual_seed(0))
    noise = (out["input_values"] - batch["input_values"]).numpy()
    freqs = np.fft.rfftfreq(MILLIVOLTS.window_samples, 1 / MILLIVOLTS.sampling_rate)
    peak = freqs[np.abs(np.fft.rfft(noise, axis=-1)).argmax(-1)]
    assert np.all(np.minimum(np.abs(peak - 50), np.abs(peak - 60)) <= 0.3), peak
    # mV contract: amplitudes are millivolts exactly
    assert float(np.abs(noise).max()) <= 0.05 + 1e-6

    aug = Augmenter.from_config([{"name": "baseline_wander", "p": 1.0, "amplitude": 0.3}], MILLIVOLTS)
    drift = (aug(batch, torch.Generator().manual_seed(0))["input_values"] - batch["input_values"]).numpy()
    assert float(np.abs(drift).max()) <= 0.3 + 1e-6 and float(np.abs(drift).max()) > 0.01
    # a sum of sinusoids below 0.5 Hz of total amplitude <= 0.3 mV changes at most 2*pi*0.5*0.3 mV/s
    slope = np.abs(np.diff(drift, axis=-1)).max() * MILLIVOLTS.sampling_rate
    assert slope <= 2 * math.pi * 0.5 * 0.3 * 1.01


def test_mv_units_scale_with_the_lead_amplitude_of_normalised_inputs():
    batch = ecg_like(CHANNELS, n=4)
    x = batch["input_values"]
    aug = Augmenter.from_config([{"name": "gaussian_noise", "p": 1.0, "std": 0.05}], CHANNELS)
    small = aug(batch, torch.Generator().manual_seed(0))["input_values"] - x
    big = aug({**batch, "input_values": 10 * x}, torch.Generator().manual_seed(0))["input_values"] - 10 * x
    torch.testing.assert_close(big, 10 * small, rtol=1e-4, atol=1e-5)
    expected = 0.05 * x.std(-1, unbiased=False) / REFERENCE_LEAD_STD_MV
    assert float((small.std(-1) / expected - 1).abs().max()) < 0.15
    as_input = Augmenter.from_config([{"name": "gaussian_noise", "p": 1.0, "std": 0.05, "units": "input"}], CHANNELS)
    assert abs(float((as_input(batch, torch.Generator().manual_seed(0))["input_values"] - x).std()) - 0.05) < 0.005


def test_augmentation_is_reproducible_with_a_seed_and_applies_with_probability_p():
    config = [{"name": n} for n in ALL_NAMES]
    aug = Augmenter.from_config(config, CHANNELS)
    batch = ecg_like(CHANNELS, n=64)
    a = aug(batch, batch_generator(7, epoch=1, step=3))
    b = aug(batch, batch_generator(7, epoch=1, step=3))
    c = aug(batch, batch_generator(7, epoch=1, step=4))
    d = aug(batch, batch_generator(7, epoch=1, step=3, rank=1))
    assert torch.equal(a["input_values"], b["input_values"]) and torch.equal(a["attention_mask"], b["attention_mask"])
    assert not torch.equal(a["input_values"], c["input_values"]) and not torch.equal(a["input_values"], d["input_values"])
    one = Augmenter.from_config([{"name": "amplitude_scale", "p": 0.25}], CHANNELS)
    changed = [(one(batch, torch.Generator().manual_seed(s))["input_values"] != batch["input_values"]).any(-1).any(-1)
               for s in range(20)]
    assert 0.18 < float(torch.cat(changed).float().mean()) < 0.32
    assert torch.equal(Augmenter.from_config([{"name": "gaussian_noise", "p": 0.0}], CHANNELS)(
        batch, torch.Generator().manual_seed(0))["input_values"], batch["input_values"])


def test_augmenter_serialisation_round_trip():
    config = [
        {"name": "random_crop", "p": 0.3, "min_fraction": 0.7},
        {"name": "gaussian_noise", "min_snr_db": "1e1", "max_snr_db": 30},  # YAML strings are accepted for numbers
        {"name": "powerline_noise", "frequency_hz": 60, "units": "input", "amplitude": 0.02},
        {"name": "lead_dropout", "rate": 0.5, "mask_dropped": False},
    ]
    aug = Augmenter.from_config(config, CHANNELS)
    saved = json.loads(json.dumps(aug.to_dict()))
    again = Augmenter.from_dict(saved)
    assert again.to_dict() == aug.to_dict() and again.config() == aug.config()
    assert saved["steps"][1]["min_snr_db"] == 10.0
    for step in aug.steps:  # the processors' registry rebuilds every augmentation by name
        assert step_from_dict(step.to_dict()) == step
    batch = ecg_like(CHANNELS, n=16)
    torch.testing.assert_close(aug(batch, batch_generator(0, 0, 0)), again(batch, batch_generator(0, 0, 0)), rtol=0, atol=0)
    assert Augmenter.from_config(None, CHANNELS)(batch, None) is batch


def test_augmenter_docstring_table_lists_every_default():
    lines = Augmenter.__doc__.splitlines()
    for cls in AUGMENTATIONS:
        start = next(i for i, line in enumerate(lines) if line.strip().startswith(f"``{cls.name}``"))
        row = [lines[start]]
        for line in lines[start + 1:]:
            if line[:25].strip():  # a continuation line is indented past the name and p columns
                break
            row.append(line)
        text = " ".join(row)
        assert text.split()[1] == f"{cls.p}", cls.name  # the p column
        for f in dataclasses.fields(cls):
            if f.name != "p":
                shown = json.dumps(f.default).replace("null", "None").replace("true", "True").replace("false", "False")
                assert f"``{f.name}={shown}``" in text, (cls.name, f.name, text)


@pytest.mark.parametrize(
    "config, error, match",
    [
        ([{"name": "gausian_noise"}], ValueError, "did you mean 'gaussian_noise'"),
        ([{"name": "lead_dropout", "rates": 0.2}], ValueError, "unknown parameter 'rates'.*did you mean 'rate'"),
        ([{"name": "normalize"}], ValueError, "preprocessing step"),
        ([{"p": 0.5}], ValueError, "missing 'name'"),
        ([{"name": "amplitude_scale", "p": 1.5}], ValueError, r"augmentation 0: amplitude_scale.p is a probability"),
        ([{"name": "amplitude_scale", "min_scale": 2, "max_scale": 1}], ValueError, "min_scale <= max_scale"),
        ([{"name": "gaussian_noise", "units": "inptu"}], ValueError, "did you mean 'input'"),
        ([{"name": "baseline_wander", "amplitude": "big"}], TypeError, "baseline_wander.amplitude must be a number"),
        ([{"name": "lead_dropout", "min_leads": 0}], ValueError, "never drop every lead"),
        ({"name": "gaussian_noise"}, TypeError, "must be a list"),
        (["gaussian_noise"], TypeError, "expected a mapping"),
    ],
)
def test_bad_augmentation_config_errors(config, error, match):
    with pytest.raises(error, match=match):
        Augmenter.from_config(config, CHANNELS)


def test_augmentations_that_the_contract_cannot_carry_are_errors():
    with pytest.raises(ValueError, match="cannot be represented in 100 Hz input"):
        Augmenter.from_config([{"name": "powerline_noise"}], HUBERT_ECG_CONTRACT)
    one_lead = SignalContract(leads=("I",), sampling_rate=500, window_samples=5000)
    with pytest.raises(ValueError, match="no lead could ever be dropped"):
        Augmenter.from_config([{"name": "lead_dropout"}], one_lead)
    aug = Augmenter.from_config([{"name": "gaussian_noise"}], CHANNELS)
    with pytest.raises(ValueError, match="do not end with the contract's input shape"):
        aug({"input_values": torch.zeros(2, 3, 999)}, torch.Generator())
    with pytest.raises(ValueError, match="needs a torch.Generator"):
        aug(ecg_like(CHANNELS), None)
    with pytest.raises(TypeError, match="training-time augmentation"):
        ECGProcessor(CHANNELS, [Window(seconds=4.0), aug.steps[0]]).process(np.zeros((3, 1000)), 250, ["I", "II", "V1"])


# ----------------------------------------------------------------------------------------------- context windows
SMALL = SignalContract(leads=("I", "II"), sampling_rate=100, window_samples=100)


class UnitSource:
    """Units ``"<record>/<index>"`` of long recordings; every sample of unit i of record r is 100*r + i (+0.5 in
    the unit's second window), so a window's value says where it came from."""

    name = "units"

    def __init__(self, units: dict[int, list[int]], seconds: float = 1.0) -> None:
        self.units, self.seconds = units, seconds

    def ids(self) -> list[str]:
        return [f"r{r}/{i}" for r, idx in self.units.items() for i in idx]

    def iter_records(self, ids=None):
        for uid in ids if ids is not None else self.ids():
            r, i = uid[1:].split("/")
            n = int(self.seconds * SMALL.sampling_rate)
            sig = np.full((2, n), 100.0 * int(r) + int(i)) + 0.5 * (np.arange(n) >= 100)
            yield uid, ECGRecord(sig, SMALL.sampling_rate, ["I", "II"], record_id=uid)

    def fingerprint(self):
        return {"source": self.name, "units": {str(k): v for k, v in self.units.items()}, "seconds": self.seconds}


def _context_cache(tmp_path: Path, units: dict[int, list[int]], seconds: float = 1.0):
    source = UnitSource(units, seconds)
    processor = ECGProcessor(SMALL, [Window(seconds=1.0, mode="all")])
    # Constant units by design (the value says where a window came from): keep them past the flat-lead check.
    return build_cache(source, processor, source.ids(), cache_dir=tmp_path, progress=False,
                       quality=QualityThresholds(max_flat_leads=None))


def test_context_dataset_orders_neighbours_and_pads_the_ends(tmp_path):
    # r1 has units 0-5 with unit 3 missing (skipped), r2 has units 0-2; r2/1 is not labelled.
    cache = _context_cache(tmp_path, {1: [0, 1, 2, 4, 5], 2: [0, 1, 2]})
    labelled = ["r1/0", "r1/1", "r1/2", "r1/4", "r1/5", "r2/0", "r2/2"]
    labels = np.arange(len(labelled), dtype=np.float32)[:, None]
    ds = ContextWindowDataset(cache, labelled, labels, SMALL.input_shape, context=2)
    assert len(ds) == len(labelled)
    batch = ds.__getitems__(list(range(len(ds))))
    assert batch["input_values"].shape == (7, 5, 2, 100) and batch["attention_mask"].dtype == torch.int64
    value = batch["input_values"][:, :, 0, 0]
    present = batch["attention_mask"].bool().all(-1).all(-1)
    assert torch.equal(present, batch["attention_mask"].bool().any(-1).any(-1))  # a window is all there or all absent
    expected = {  # centre unit -> the 5 window values (None: no window there)
        "r1/0": [None, None, 100, 101, 102],
        "r1/1": [None, 100, 101, 102, None],
        "r1/2": [100, 101, 102, None, 104],
        "r1/4": [102, None, 104, 105, None],
        "r1/5": [None, 104, 105, None, None],
        "r2/0": [None, None, 200, 201, 202],  # the unlabelled r2/1 is a neighbour (its signal, not its label)
        "r2/2": [200, 201, 202, None, None],
    }
    for i, uid in enumerate(labelled):
        want = expected[uid]
        assert [bool(p) for p in present[i]] == [w is not None for w in want], uid
        assert [float(v) for v in value[i]] == [float(w or 0) for w in want], uid
        assert torch.equal(batch["input_values"][i][~present[i]], torch.zeros_like(batch["input_values"][i][~present[i]]))
    assert torch.equal(batch["labels"], torch.from_numpy(labels)) and torch.equal(batch["record_index"], torch.arange(7))
    single = ds[2]
    assert single["input_values"].shape == (5, 2, 100) and torch.equal(single["input_values"], batch["input_values"][2])

    only_labelled = ContextWindowDataset(cache, labelled, labels, SMALL.input_shape, context=1, neighbours="labelled")
    b = only_labelled.__getitems__([5, 6])  # r2/0 and r2/2: r2/1 is not labelled, so it is absent
    assert [float(v) for v in b["input_values"][:, :, 0, 0].reshape(-1)] == [0, 200, 0, 0, 202, 0]


def test_context_dataset_orders_multi_window_units_in_time(tmp_path):
    cache = _context_cache(tmp_path, {3: [0, 1, 2]}, seconds=2.0)  # two windows per unit
    ds = ContextWindowDataset(cache, ["r3/1"], np.zeros((1, 1), np.float32), SMALL.input_shape, context=2)
    assert len(ds) == 2  # both windows of r3/1 are items
    value = ds.__getitems__([0, 1])["input_values"][:, :, 0, 0]
    assert value.tolist() == [[300.0, 300.5, 301.0, 301.5, 302.0], [300.5, 301.0, 301.5, 302.0, 302.5]]


def test_context_dataset_rejects_ids_without_an_index(tmp_path):
    cache = _context_cache(tmp_path, {1: [0, 1]})
    with pytest.raises(ValueError, match=r"'r1' is not of the form '<record>/<index>'"):
        ContextWindowDataset(cache, ["r1"], np.zeros((1, 1)), SMALL.input_shape, context=1)
    with pytest.raises(ValueError, match="non-negative integer"):
        ContextWindowDataset(cache, ["r1/0"], np.zeros((1, 1)), SMALL.input_shape, context=-1)
    records, index = parse_unit_ids(["a/b/3", "x/0", "a01/0012"])  # sources zero-pad indices (Apnea-ECG minutes)
    assert records.tolist() == ["a/b", "x", "a01"] and index.tolist() == [3, 0, 12]


def test_augmenter_takes_context_batches_and_keeps_absent_neighbours_zero(tmp_path):
    cache = _context_cache(tmp_path, {1: [0, 1, 2]})
    ds = ContextWindowDataset(cache, ["r1/0", "r1/1", "r1/2"], np.zeros((3, 1), np.float32), SMALL.input_shape, context=1)
    batch = ds.__getitems__([0, 1, 2])
    out = Augmenter.from_config([{"name": n, "p": 1.0} for n in ALL_NAMES if n != "powerline_noise"], SMALL)(
        batch, torch.Generator().manual_seed(0))
    absent = ~batch["attention_mask"].bool().any(-1).any(-1)
    assert int(absent.sum()) == 2
    assert not bool(out["input_values"][absent].any()) and not bool(out["attention_mask"][absent].any())
    assert not torch.equal(out["input_values"][~absent], batch["input_values"][~absent])


# ----------------------------------------------------------------------------------------------- sequence classifier
def tiny_window_classifier(seed: int = 0) -> ECGClassifier:
    torch.manual_seed(seed)
    backbone = HubertECGModel(HubertECGConfig(**TINY_HUBERT))
    return ECGClassifier.from_backbone(backbone, ["W", "N", "R"], problem_type="single_label_classification")


def context_batch(b: int = 3, k: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((b, k) + HUBERT_ECG_CONTRACT.input_shape, generator=g)
    m = torch.ones_like(x, dtype=torch.long)
    x[0, 0], m[0, 0] = 0, 0  # the first unit of a recording: no left neighbour
    return {"input_values": x, "attention_mask": m, "labels": torch.tensor([0, 1, 2][:b])}


@pytest.mark.parametrize("kind", ["gru", "transformer"])
def test_sequence_classifier_trains_a_step_and_round_trips_with_identical_logits(kind, tmp_path):
    model = ECGSequenceClassifier.from_backbone(
        tiny_window_classifier().backbone, ["W", "N", "R"], context=1, problem_type="single_label_classification",
        sequence_model=kind, sequence_hidden_size=16, sequence_num_heads=2)
    assert model.config.window_count == 3
    batch = context_batch(b=2)
    # out_proj starts at zero, which would leave the sequence model without gradient for the first step
    torch.nn.init.normal_(model.context_encoder.out_proj.weight, std=0.1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    out = model(**batch)
    assert out.logits.shape == (2, 3) and torch.isfinite(out.loss)
    out.loss.backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    for part in ("context_encoder.out_proj.weight", "context_encoder.in_proj.weight", "window_classifier.classifier.weight"):
        assert part in changed
    assert any(n.startswith("window_classifier.backbone.encoder") for n in changed)
    assert any(n.startswith("context_encoder.gru" if kind == "gru" else "context_encoder.layers") for n in changed)

    model.eval()
    with torch.no_grad():
        logits = model(**batch).logits
    model.save_pretrained(tmp_path / "seq")
    reloaded = ECGSequenceClassifier.from_pretrained(tmp_path / "seq").eval()
    assert reloaded.config.sequence_model == kind and reloaded.labels == ["W", "N", "R"]
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, logits)


def test_fresh_sequence_classifier_equals_its_window_classifier_and_skips_absent_windows():
    window = tiny_window_classifier().eval()
    batch = context_batch(b=2, k=5)
    batch["input_values"][0, 0] = float("nan")  # an absent neighbour (mask 0) is never run through the backbone
    with torch.no_grad():
        ref = window(input_values=batch["input_values"][:, 2], attention_mask=batch["attention_mask"][:, 2]).logits
        for kind in ("gru", "transformer", "none"):
            model = ECGSequenceClassifier.from_classifier(window, context=2, sequence_model=kind, sequence_hidden_size=8,
                                                          sequence_num_heads=2).eval()
            out = model(input_values=batch["input_values"], attention_mask=batch["attention_mask"])
            assert torch.isfinite(out.logits).all()
            torch.testing.assert_close(out.logits, ref, rtol=0, atol=1e-6)  # out_proj starts at zero
            if kind != "none":
                assert torch.equal(out.window_embeddings[0, 0], model.context_encoder.missing_window)
    none = ECGSequenceClassifier.from_classifier(window, context=2, sequence_model="none").eval()
    other = dict(batch, input_values=batch["input_values"].clone())
    other["input_values"][:, [1, 3, 4]] = torch.randn(2, 3, 6000)
    with torch.no_grad():  # "none" looks at the centre only
        assert torch.equal(none(**other).logits, none(**batch).logits)


def test_sequence_classifier_input_errors():
    model = ECGSequenceClassifier.from_classifier(tiny_window_classifier(), context=1, sequence_hidden_size=8)
    batch = context_batch(k=3)
    with pytest.raises(ValueError, match="K=3"):
        model(input_values=batch["input_values"][:, :2])
    batch["attention_mask"][1, 1] = 0
    with pytest.raises(ValueError, match="centre window has an all-zero attention_mask"):
        model(input_values=batch["input_values"], attention_mask=batch["attention_mask"])
    with pytest.raises(ValueError, match="sequence_model must be one of"):
        ECGSequenceClassifier.from_classifier(tiny_window_classifier(), sequence_model="lstm")


def test_a_step_or_augmentation_missing_its_method_cannot_be_created():
    from ecg_adapt.processing.augment import Augmentation
    from ecg_adapt.processing.steps import Step

    @dataclasses.dataclass
    class NoCall(Step):
        pass

    @dataclasses.dataclass
    class NoAugment(Augmentation):
        pass

    with pytest.raises(TypeError, match="abstract.*__call__"):
        NoCall()
    with pytest.raises(TypeError, match="abstract.*augment"):
        NoAugment()
    assert isinstance(Window(), Step)  # a step that implements __call__ is created as before
