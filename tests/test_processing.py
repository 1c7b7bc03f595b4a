"""Processor behaviour: resampling, lead mapping, windowing, padding masks, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from ecg_adapt.models.hubert_ecg import HUBERT_ECG_CONTRACT, default_processor_steps
from ecg_adapt.processing import (
    ECGProcessor,
    Normalize,
    Resample,
    SignalContract,
    Window,
    canonical_lead_name,
    map_leads,
)
from ecg_adapt.tasks import aggregate_windows

LEADS3 = ("I", "II", "V1")


def simple_processor(fs: float = 250.0, seconds: float = 2.0, mode: str = "all", **kw) -> ECGProcessor:
    contract = SignalContract(leads=LEADS3, sampling_rate=fs, window_samples=int(fs * seconds), layout="channels_first")
    return ECGProcessor(contract, [Resample(target_hz=fs, method="polyphase"), Window(seconds=seconds, mode=mode)], **kw)


def dominant_frequency(x: np.ndarray, fs: float) -> float:
    spec = np.abs(np.fft.rfft(x - x.mean()))
    return float(np.fft.rfftfreq(len(x), 1 / fs)[np.argmax(spec)])


@pytest.mark.parametrize("method", ["fft", "polyphase", "linear"])
@pytest.mark.parametrize("fs_in", [360.0, 1000.0, 100.0])
def test_resampling_keeps_a_10hz_sine_at_10hz(method: str, fs_in: float) -> None:
    t = np.arange(int(4 * fs_in)) / fs_in
    x = np.sin(2 * np.pi * 10 * t)[None, None, :]
    from ecg_adapt.processing import SignalState

    state = SignalState(x=x.copy(), mask=np.ones_like(x, dtype=bool), fs=fs_in, lead_present=np.ones(1, bool))
    out = Resample(target_hz=250.0, method=method)(state)
    assert out.fs == 250.0
    assert out.x.shape[-1] == int(x.shape[-1] * 250.0 / fs_in)
    assert dominant_frequency(out.x[0, 0], 250.0) == pytest.approx(10.0, abs=0.3)


def test_leads_are_reordered_by_name_case_insensitively() -> None:
    proc = simple_processor()
    fs, n = 250.0, 500
    sig = np.stack([np.full(n, 3.0), np.full(n, 1.0), np.full(n, 2.0)])  # V1, I, II in that order
    out = proc.process(sig, fs, ["v1", "i", "Ii"])
    np.testing.assert_allclose(out.input_values[0, :, 10], [1.0, 2.0, 3.0])
    assert out.report.reordered and not out.report.missing_leads


def test_canonical_names_and_aliases() -> None:
    assert canonical_lead_name("AVR") == "aVR" and canonical_lead_name("avl") == "aVL"
    m = map_leads(["MLII", "V5"], ["I", "II", "V5"])
    assert m.source_index == [None, 0, 1]
    assert m.missing == ["I"] and m.approximations == ["MLII used as II"]


def test_missing_leads_are_an_error_unless_a_choice_is_made() -> None:
    sig = np.random.default_rng(0).normal(size=(2, 500))
    with pytest.raises(ValueError, match=r"lacks lead\(s\) \['V1'\].*missing_leads='zero'"):
        simple_processor().process(sig, 250.0, ["I", "II"])
    zero = simple_processor(missing_leads="zero").process(sig, 250.0, ["I", "II"])
    assert zero.report.missing_leads == ["V1"] and zero.report.missing_leads_policy == "zero"
    assert np.all(zero.input_values[:, 2] == 0) and np.all(zero.attention_mask[:, 2] == 1)
    masked = simple_processor(missing_leads="mask").process(sig, 250.0, ["I", "II"])
    assert np.all(masked.attention_mask[:, 2] == 0) and np.all(masked.attention_mask[:, :2] == 1)
    assert "V1 masked" in masked.report.summary().replace("leads ", "").replace("missing ", "")


def test_short_record_is_padded_and_masked() -> None:
    proc = simple_processor(fs=250.0, seconds=2.0)
    sig = np.ones((3, 300))  # 1.2 s
    out = proc.process(sig, 250.0, list(LEADS3))
    assert out.input_values.shape == (1, 3, 500)
    assert out.attention_mask[0, :, :300].all() and not out.attention_mask[0, :, 300:].any()
    assert np.all(out.input_values[0, :, 300:] == 0)
    assert out.report.padded


def test_long_record_is_cut_into_windows_covering_the_end() -> None:
    proc = simple_processor(fs=250.0, seconds=2.0, mode="all")
    sig = np.arange(3 * 1100, dtype=float).reshape(3, 1100)
    out = proc.process(sig, 250.0, list(LEADS3))
    assert out.report.window_starts_s == [0.0, 2.0, 2.4]  # last window aligned to the end
    np.testing.assert_array_equal(out.input_values[-1, 0, -1], sig[0, -1])
    first = simple_processor(fs=250.0, seconds=2.0, mode="first").process(sig, 250.0, list(LEADS3))
    assert first.input_values.shape[0] == 1


def test_hubert_processor_gives_flat_lead_major_windows_and_masks_padding_per_lead() -> None:
    proc = ECGProcessor(HUBERT_ECG_CONTRACT, default_processor_steps("all"))
    rng = np.random.default_rng(0)
    out = proc.process(rng.normal(size=(12, 3 * 500)), 500.0, list(HUBERT_ECG_CONTRACT.leads))  # 3 s < 5 s
    assert out.input_values.shape == (1, 6000)
    mask = out.attention_mask.reshape(12, 500)
    assert mask[:, :300].all() and not mask[:, 300:].any()  # every lead segment padded at its own end
    ten_s = proc.process(rng.normal(size=(12, 5000)), 500.0, list(HUBERT_ECG_CONTRACT.leads))
    assert ten_s.input_values.shape == (2, 6000) and ten_s.attention_mask.all()


def test_nan_runs_are_interpolated_and_reported_but_mostly_nan_leads_fail() -> None:
    proc = simple_processor()
    sig = np.tile(np.linspace(0, 1, 500), (3, 1))
    sig[1, 100:110] = np.nan
    out = proc.process(sig, 250.0, list(LEADS3))
    assert out.report.nan_interpolated == {"II": 10}
    np.testing.assert_allclose(out.input_values[0, 1], sig[0], atol=1e-6)
    sig[2, :300] = np.nan
    with pytest.raises(ValueError, match="lead V1 is 60% NaN"):
        proc.process(sig, 250.0, list(LEADS3))
    sig[2, :] = np.nan  # an all-NaN lead is a missing lead
    with pytest.raises(ValueError, match="lacks lead"):
        proc.process(sig, 250.0, list(LEADS3))


@pytest.mark.parametrize(
    "signal,fs,names,match",
    [
        (np.zeros((500, 3)), 250.0, list(LEADS3), "transpose"),
        (np.zeros((3, 500)), None, list(LEADS3), "sampling_rate"),
        (np.full((3, 500), np.inf), 250.0, list(LEADS3), "infinite"),
        (np.zeros((3, 500)), 250.0, ["A", "B", "C"], "none of its leads"),
        (np.zeros((3, 500)), 250.0, ["I", "i", "V1"], "two leads named"),
    ],
)
def test_bad_input_gives_a_clear_error(signal, fs, names, match) -> None:
    with pytest.raises(ValueError, match=match):
        simple_processor(missing_leads="zero").process(signal, fs, names)


def test_processor_saves_and_reloads_as_preprocessor_config(tmp_path) -> None:
    proc = ECGProcessor(HUBERT_ECG_CONTRACT, default_processor_steps(), missing_leads="mask")
    proc.save_pretrained(tmp_path)
    assert (tmp_path / "preprocessor_config.json").exists()
    again = ECGProcessor.from_pretrained(tmp_path)
    assert again.steps == proc.steps and again.contract == proc.contract and again.missing_leads == "mask"
    other = SignalContract(leads=("I",), sampling_rate=100, window_samples=500)
    with pytest.raises(ValueError, match="disagree on the signal contract"):
        again.check_compatible(other)


def test_normalize_leaves_absent_leads_at_zero() -> None:
    from ecg_adapt.processing import SignalState

    x = np.random.default_rng(1).normal(size=(1, 2, 100))
    x[:, 1] = 0
    st = SignalState(x=x, mask=np.ones_like(x, bool), fs=100, lead_present=np.array([True, False]))
    out = Normalize(method="minmax", scope="lead")(st)
    assert out.x[0, 0].min() == pytest.approx(-1) and out.x[0, 0].max() == pytest.approx(1)
    assert np.all(out.x[0, 1] == 0)


def test_batch_call_and_window_aggregation() -> None:
    proc = simple_processor(fs=250.0, seconds=2.0)
    a, b = np.ones((3, 1000)), np.ones((3, 500))
    batch = proc([a, b], sampling_rate=250.0, lead_names=list(LEADS3))
    assert batch["input_values"].shape == (3, 3, 500)
    assert batch["window_to_record"].tolist() == [0, 0, 1]
    assert len(batch.reports) == 2
    agg = aggregate_windows(np.array([[0.2, 1.0], [0.6, 0.0], [0.9, 0.5]]), batch["window_to_record"])
    np.testing.assert_allclose(agg, [[0.4, 0.5], [0.9, 0.5]])
    np.testing.assert_allclose(aggregate_windows(np.array([[0.2], [0.6], [0.9]]), np.array([0, 0, 1]), "max"), [[0.6], [0.9]])


@pytest.mark.parametrize("fs,n", [(500, 5000), (360, 720), (100, 1000), (500, 120), (250, 40)])
def test_fir_filtfilt_with_cached_steady_state_equals_scipy_filtfilt(fs: int, n: int) -> None:
    import scipy.signal as sps

    from ecg_adapt.processing.steps import _fir_bandpass, _fir_filtfilt

    numtaps = int(0.3 * fs) | 1
    b, zi = _fir_bandpass(numtaps, 0.05, 47.0, fs)
    x = np.random.default_rng(fs + n).standard_normal((3, n))
    padlen = min(3 * numtaps, n - 1)
    assert np.array_equal(_fir_filtfilt(b, zi, x, padlen), sps.filtfilt(b, [1.0], x, axis=-1, padlen=padlen))
