"""Long-recording sources on real PhysioNet files: MIT-BIH beats (AAMI), Apnea-ECG minutes, CPSC 2021 AF windows.

Real data (../shared/ecg-samples): MIT-BIH record 100 (.hea/.dat/.atr), the real Apnea-ECG a01/a02 headers and
.apn files (their signal files are not redistributable here, so a signal of the header's exact length is written
as a real WFDB format-16 .dat), and 18 real CPSC 2021 records with rhythm annotations.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import wfdb
from conftest import SAMPLES, need

from ecg_adapt.data import LabelledSource, RecordError, build_cache
from ecg_adapt.data.apnea import (
    APNEA_VALIDATION_RECORDS,
    ApneaECG,
    apnea_record_class,
    parse_event2_answers,
    record_level_metrics,
)
from ecg_adapt.data.cpsc2021 import CPSC2021, patient_of, patient_split, rhythm_intervals
from ecg_adapt.data.mitdb import (
    MITDB_DS1,
    MITDB_DS2,
    MITDB_PACED,
    MITDB_RECORDS,
    MITDB_VALIDATION_RECORDS,
    MITBIHArrhythmia,
)
from ecg_adapt.models.hubert_ecg import HubertECGModel
from ecg_adapt.processing import ECGProcessor


def _tiny_processor(tiny_backbone_dir: Path) -> ECGProcessor:
    # The tiny HuBERT-ECG has the real 12-lead contract; these records have 1-2 leads, so the rest are masked.
    return ECGProcessor.from_pretrained(tiny_backbone_dir, missing_leads="mask")


def _count_reads(monkeypatch: pytest.MonkeyPatch, module: str) -> list[str]:
    """Record every whole-record read made by a source module (to check each recording is read once)."""
    import importlib

    mod = importlib.import_module(module)
    calls: list[str] = []
    real = mod.read_wfdb

    def counting(path, record_id=None):  # type: ignore[no-untyped-def]
        calls.append(str(record_id))
        return real(path, record_id=record_id)

    monkeypatch.setattr(mod, "read_wfdb", counting)
    return calls


# ====================================================================== MIT-BIH
@pytest.fixture
def mitdb(samples: Path) -> Path:
    return samples / "mitdb"


def test_mitdb_record_100_beats_and_aami_classes_match_the_atr_file(mitdb: Path) -> None:
    ds = MITBIHArrhythmia(mitdb)
    assert isinstance(ds, LabelledSource) and ds.records == ["100"] and len(ds.report) == 0
    table = ds.beat_table()
    # 100.atr (checked with wfdb.rdann): 2,274 annotations = N 2239, A 33, V 1 beats and one '+' rhythm change.
    assert Counter(table["symbol"]) == {"N": 2239, "A": 33, "V": 1}
    assert Counter(table["aami"]) == {"N": 2239, "S": 33, "V": 1}
    assert ds.non_beat_counts == {"100": {"+": 1}}
    ann = wfdb.rdann(str(mitdb / "100"), "atr")
    assert len(table) + 1 == len(ann.sample) == 2274
    beats = [s for s, sym in zip(ann.sample, ann.symbol) if sym != "+"]
    np.testing.assert_array_equal(table["sample"].to_numpy(), beats)
    assert table.index[0] == "100/0000" and table.loc["100/0007", "sample"] == beats[7]
    # aami4 drops only Q (none here); ids are beats whose centred 2 s window fits the recording
    labels = ds.label_sets("aami")
    assert labels.equals(ds.label_sets("aami4"))
    assert set(labels.index) == set(table.index[table["in_window"]])
    assert ds.task("aami").labels == ["N", "S", "V", "F", "Q"] and ds.task("aami4").labels == ["N", "S", "V", "F"]
    assert ds.task("aami").encode(labels.iloc[:3].tolist()).tolist() == [0, 0, 0]


def test_mitdb_inter_patient_splits(mitdb: Path) -> None:
    assert len(MITDB_RECORDS) == 48 and len(MITDB_DS1) == len(MITDB_DS2) == 22 and len(MITDB_PACED) == 4
    assert set(MITDB_DS1) | set(MITDB_DS2) | set(MITDB_PACED) == set(MITDB_RECORDS)
    assert not (set(MITDB_DS1) & set(MITDB_DS2)) and not (set(MITDB_PACED) & (set(MITDB_DS1) | set(MITDB_DS2)))
    assert set(MITDB_VALIDATION_RECORDS) < set(MITDB_DS1)
    ds = MITBIHArrhythmia(mitdb)
    test = ds.split_ids("aami", "test")
    assert "100" in MITDB_DS2 and test == list(ds.label_sets("aami").index) and len(test) == 2270
    assert ds.split_ids("aami", "train") == ds.split_ids("aami", "validation") == [] and ds.split_ids("aami", "ds2") == test
    assert ds.split_records("train") == [] and ds.split_records("test") == ["100"]
    with pytest.raises(ValueError, match="DS1"):
        MITBIHArrhythmia(mitdb, validation_records=["100"])  # a DS2 (test) patient cannot validate
    with pytest.raises(ValueError, match="Unknown split"):
        ds.split_ids("aami", "fold1")


@pytest.mark.parametrize("window_seconds", [2.0, 251 / 360])  # even (720) and odd (251) window lengths
def test_mitdb_window_is_centred_on_the_annotated_sample(
    mitdb: Path, window_seconds: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = MITBIHArrhythmia(mitdb, window_seconds=window_seconds)
    n = round(window_seconds * 360)
    full = wfdb.rdrecord(str(mitdb / "100")).p_signal.T
    table = ds.beat_table()
    ids = list(ds.label_sets("aami").index[::10])  # 227 beats across the whole record
    reads = _count_reads(monkeypatch, "ecg_adapt.data.mitdb")
    got = list(ds.iter_records(ids))
    assert reads == ["100"]  # the 30-min record is read once for all its beats
    assert [i for i, _ in got] == ids
    for sid, rec in got:
        s = int(table.loc[sid, "sample"])
        assert rec.signal.shape == (2, n) and rec.lead_names == ["MLII", "V5"] and rec.sampling_rate == 360
        np.testing.assert_array_equal(rec.signal[:, n // 2], full[:, s])  # the R peak sits at sample n // 2
        np.testing.assert_array_equal(rec.signal, full[:, s - n // 2 : s - n // 2 + n])
        assert rec.meta["aami"] == table.loc[sid, "aami"]
    # the first beat (sample 77) and the last two are too close to an end for a centred 2 s window
    edge = table.index[~table["in_window"]].tolist()
    if n == 720:
        assert edge == ["100/0000", "100/2271", "100/2272"]
    with pytest.raises(ValueError, match="not a usable MIT-BIH beat"):
        next(ds.iter_records([edge[0]]))


def _mitdb_fixture(mitdb: Path, root: Path) -> Path:
    """The MIT-BIH layout with three records: 100 (real), 101 (100's files, its .dat truncated), 103 (the first
    60 s of 100 written as a real format-212 record, paired with 100's 30-min .atr: the annotations do not match)."""
    root.mkdir()
    for ext in ("hea", "dat", "atr"):
        shutil.copy(mitdb / f"100.{ext}", root / f"100.{ext}")
    header = (mitdb / "100.hea").read_text().replace("100 2 360", "101 2 360").replace("100.dat", "101.dat")
    (root / "101.hea").write_text(header)
    (root / "101.dat").write_bytes((mitdb / "100.dat").read_bytes()[:1_000_000])
    shutil.copy(mitdb / "100.atr", root / "101.atr")
    head = wfdb.rdrecord(str(mitdb / "100"), sampto=21600, physical=False)
    wfdb.wrsamp("103", fs=360, units=head.units, sig_name=head.sig_name, d_signal=head.d_signal, fmt=["212", "212"],
                adc_gain=head.adc_gain, baseline=head.baseline, write_dir=str(root))
    shutil.copy(mitdb / "100.atr", root / "103.atr")
    return root


def test_mitdb_truncated_dat_and_foreign_annotation_file(mitdb: Path, tmp_path: Path, tiny_backbone_dir: Path) -> None:
    root = _mitdb_fixture(mitdb, tmp_path / "mitdb")
    ds = MITBIHArrhythmia(root)
    assert ds.records == ["100", "101", "103"]
    ds.index  # noqa: B018 - builds the index, which checks the annotations against each header
    assert [(e["record_id"], e["reason"]) for e in ds.report.entries] == [("103", "annotation_mismatch")]
    assert "649991" in ds.report.entries[0]["detail"] and "21600" in ds.report.entries[0]["detail"]
    labels = ds.label_sets("aami")
    assert not any(i.startswith("103/") for i in labels.index)  # no beat of a record whose labels are foreign
    ids = [i for i in labels.index if i.startswith("100/")][:12] + [i for i in labels.index if i.startswith("101/")][:4]
    out = dict(ds.iter_records(ids))
    assert all(isinstance(out[i], RecordError) and out[i].reason == "truncated" for i in ids[12:])
    cache = build_cache(ds, _tiny_processor(tiny_backbone_dir), ids, cache_dir=tmp_path / "cache", progress=False)
    assert {s["record_id"]: s["reason"] for s in cache.skipped} == {i: "truncated" for i in ids[12:]}
    assert cache.report["n_windows"] == 12  # one 5 s HuBERT window per 2 s beat (padded, masked)
    with pytest.raises(RecordError, match="annotation_mismatch"):
        MITBIHArrhythmia(root, on_error="raise").index  # noqa: B018
    missing = MITBIHArrhythmia(root, records=["100", "105"])
    assert missing.records == ["100"] and missing.report.by_reason == {"missing_file": 1}


def test_mitdb_beats_cached_for_a_backbone(mitdb: Path, tmp_path: Path, tiny_backbone_dir: Path) -> None:
    ds = MITBIHArrhythmia(mitdb)
    processor = _tiny_processor(tiny_backbone_dir)
    beat = next(ds.iter_records(["100/0001"]))[1]
    report = processor.process(beat.signal, beat.sampling_rate, beat.lead_names).report
    assert report.lead_approximations == ["MLII used as II"] and report.padded
    # the processor costs ~0.1 s per beat on this machine (FIR filtfilt set-up), so a few dozen beats: all the
    # beat-level checks over hundreds of beats are in the centring test above, which needs no processing
    ids = ds.split_ids("aami", "test")[:16] + [i for i, v in ds.label_sets("aami").items() if v != ["N"]][:8]
    cache = build_cache(ds, processor, ids, cache_dir=tmp_path, progress=False)
    assert cache.report["n_cached"] == len(ids) == cache.report["n_windows"] and not cache.skipped
    x = cache.take("input_values", np.arange(4))
    m = cache.take("attention_mask", np.arange(4))
    # lead-major 12 x 500 at 100 Hz: MLII feeds II, V5 feeds V5, 2 s of the 5 s window are real, the rest masked
    per_lead = m.reshape(4, 12, 500).sum(axis=2)
    assert (per_lead[:, 1] == 200).all() and (per_lead[:, 10] == 200).all() and per_lead.sum() == 4 * 400
    model = HubertECGModel.from_pretrained(tiny_backbone_dir).eval()
    with torch.no_grad():
        hidden = model(torch.from_numpy(x.reshape(4, -1)), attention_mask=torch.from_numpy(m.reshape(4, -1).astype(np.int64)))
    hidden = hidden.last_hidden_state
    assert hidden.shape[0] == 4 and torch.isfinite(hidden).all()


# ====================================================================== Apnea-ECG
def _write_signal(header: Path) -> np.ndarray:
    """Write a real format-16 .dat of exactly the header's length (the real signals are not available here)."""
    h = wfdb.rdheader(str(header.with_suffix("")))
    t = np.arange(h.sig_len) / h.fs
    adu = 200 * np.exp(-(((t % 0.9) - 0.3) ** 2) / 2e-4) + 30 * np.sin(2 * np.pi * 0.25 * t)  # beats + respiration
    d = np.round(adu).astype("<i2")
    d.tofile(header.with_name(h.file_name[0]))
    return d


@pytest.fixture(scope="module")
def apnea_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = need(SAMPLES / "apnea-ecg")
    root = tmp_path_factory.mktemp("apnea")
    for r in ("a01", "a02"):
        shutil.copy(src / f"{r}.hea", root / f"{r}.hea")
        shutil.copy(src / f"{r}.apn", root / f"{r}.apn")
        _write_signal(root / f"{r}.hea")
    return root


def test_apnea_minute_labels_from_the_real_apn_files(apnea_root: Path) -> None:
    ds = ApneaECG(apnea_root)
    assert isinstance(ds, LabelledSource) and ds.records == ["a01", "a02"] and len(ds.report) == 0
    labels = ds.label_sets("apnea")
    counts = {r: Counter(v[0] for i, v in labels.items() if i.startswith(r)) for r in ("a01", "a02")}
    assert counts == {"a01": {"A": 470, "N": 19}, "a02": {"A": 420, "N": 108}}
    ann = wfdb.rdann(str(apnea_root / "a01"), "apn")
    assert labels["a01/0000"] == [ann.symbol[0]] and labels["a01/0488"] == [ann.symbol[488]]
    table = ds.record_table()
    assert table.loc["a01", "record_class"] == table.loc["a01", "name_class"] == "A"
    assert table.loc["a01", "apnea_minutes"] == 470 and table.loc["a02", "minutes"] == 528
    assert ds.task("apnea").labels == ["N", "A"]
    assert ds.split_ids("apnea", "train") == list(labels.index) and ds.split_ids("apnea", "test") == []
    assert set(APNEA_VALIDATION_RECORDS).isdisjoint({"c05", "c06"})  # the same night stays on one side


def test_apnea_context_window_centres_the_labelled_minute(apnea_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = ApneaECG(apnea_root, context_minutes=2, lead_name="II")
    labels = ds.label_sets("apnea")
    # minutes 0-1 lack 2 min of left context; every labelled minute has right context (signal 492.8 / 530.3 min)
    assert labels.index[0] == "a01/0002" and len(labels) == (489 - 2) + (528 - 2)
    full = wfdb.rdrecord(str(apnea_root / "a01")).p_signal[:, 0]
    ids = ["a01/0002", "a01/0100", "a01/0488", "a02/0300"]
    reads = _count_reads(monkeypatch, "ecg_adapt.data.apnea")
    got = dict(ds.iter_records(ids))
    assert sorted(reads) == ["a01", "a02"]
    seg = got["a01/0100"]
    assert seg.signal.shape == (1, 5 * 6000) and seg.lead_names == ["II"] and seg.meta["label"] == labels["a01/0100"][0]
    np.testing.assert_array_equal(seg.signal[0], full[98 * 6000 : 103 * 6000])
    np.testing.assert_array_equal(seg.signal[0, 2 * 6000 : 3 * 6000], full[100 * 6000 : 101 * 6000])
    with pytest.raises(ValueError, match="not a usable labelled Apnea-ECG minute"):
        next(ds.iter_records(["a01/0001"]))


def test_apnea_annotation_problems_are_reported(apnea_root: Path, tmp_path: Path) -> None:
    # a01's real .apn (489 minutes) with a signal of only 100 minutes
    shutil.copy(apnea_root / "a01.apn", tmp_path / "a01.apn")
    (tmp_path / "a01.hea").write_text((apnea_root / "a01.hea").read_text().replace("2957000", "600000"))
    _write_signal(tmp_path / "a01.hea")
    # a03: 10 minutes, its .apn with a gap (minute 2), a V symbol (minute 3) and one annotation off the minute grid
    wfdb.wrsamp("a03", fs=100, units=["mV"], sig_name=["ECG"], p_signal=np.zeros((60_000, 1)), fmt=["16"],
                adc_gain=[200.0], baseline=[0], write_dir=str(tmp_path))
    wfdb.wrann("a03", "apn", np.array([0, 6000, 18000, 24000, 30001]), symbol=["N", "A", "V", "A", "N"],
               write_dir=str(tmp_path))
    ds = ApneaECG(tmp_path)
    ds.index  # noqa: B018 - builds the index, which checks the labels against each header
    found = {(e["record_id"], e["reason"]) for e in ds.report.entries}
    assert found == {("a01", "annotation_mismatch"), ("a03", "annotation_mismatch"), ("a03", "missing_minutes"),
                     ("a03", "unknown_code")}
    past = next(e for e in ds.report.entries if e["record_id"] == "a01")
    assert "389 minute(s) from minute 100" in past["detail"]
    labels = ds.label_sets("apnea")
    assert sum(i.startswith("a01/") for i in labels.index) == 100
    assert [i for i in labels.index if i.startswith("a03/")] == ["a03/0000", "a03/0001", "a03/0004"]
    with pytest.raises(RecordError, match="annotation_mismatch"):
        ApneaECG(tmp_path, on_error="raise").index  # noqa: B018


def _answers_text(labels: dict[str, str]) -> str:
    """Text in the layout of the challenge's event-2-answers file."""
    blocks = []
    for r, lab in labels.items():
        lines = [r] + [f" {h} {lab[60 * h : 60 * h + 60]}" for h in range((len(lab) + 59) // 60)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def test_apnea_test_set_labels_from_the_event2_answers_file(apnea_root: Path, tmp_path: Path) -> None:
    x01 = "N" * 25 + "A" * 17 + "N" * 60 + "A" * 28  # 130 minutes
    (tmp_path / "event-2-answers").write_text(_answers_text({"x01": x01, "x02": "N" * 61}))
    assert parse_event2_answers(tmp_path / "event-2-answers") == {"x01": x01, "x02": "N" * 61}
    wfdb.wrsamp("x01", fs=100, units=["mV"], sig_name=["ECG"], p_signal=np.zeros((131 * 6000, 1)), fmt=["16"],
                adc_gain=[200.0], baseline=[0], write_dir=str(tmp_path))
    wfdb.wrsamp("x03", fs=100, units=["mV"], sig_name=["ECG"], p_signal=np.zeros((10 * 6000, 1)), fmt=["16"],
                adc_gain=[200.0], baseline=[0], write_dir=str(tmp_path))
    for ext in ("hea", "dat", "apn"):
        shutil.copy(apnea_root / f"a01.{ext}", tmp_path / f"a01.{ext}")
    ds = ApneaECG(tmp_path)  # finds <root>/event-2-answers by itself
    test = ds.split_ids("apnea", "test")
    assert test == [f"x01/{k:04d}" for k in range(130)]
    assert "".join(ds.label_sets("apnea")[i][0] for i in test) == x01
    assert [(e["record_id"], e["reason"]) for e in ds.report.entries] == [("x03", "missing_labels")]
    # an .apn next to an x record wins over the answers file, and a disagreement is reported
    wfdb.wrann("x01", "apn", np.arange(130) * 6000, symbol=["N"] * 130, write_dir=str(tmp_path))
    ds2 = ApneaECG(tmp_path, records=["x01"])
    assert ds2.index["x01"].label_source == "x01.apn" and ds2.report.by_reason == {"annotation_mismatch": 1}
    bad = tmp_path / "bad-answers"
    bad.write_text("x01\n 0 " + "N" * 60 + "\n 2 " + "A" * 10 + "\n")
    with pytest.raises(ValueError, match=r"bad-answers:3: record x01: hour 2 where hour 1 was expected"):
        parse_event2_answers(bad)


def test_apnea_record_class_rule() -> None:
    one_hour = lambda n_apnea: "A" * n_apnea + "N" * (60 - n_apnea)
    assert apnea_record_class("N" * 400 + "A" * 4) == "C"
    assert apnea_record_class(one_hour(5) + "N" * 300) == "B"
    assert apnea_record_class(one_hour(50) + one_hour(49) + "N" * 300) == "B"  # 99 minutes
    assert apnea_record_class(one_hour(50) + one_hour(50) + "N" * 300) == "A"  # 100 minutes, an hour with >= 10
    assert apnea_record_class(one_hour(9) * 12) == "B"  # 108 minutes but no hour reaches an index of 10
    assert apnea_record_class(one_hour(4) * 3) == "B"  # 12 minutes, no hour reaches 5: the documented B fallback
    # hours are blocks of minute indices, so labels at minutes 0-9 and 60-69 fall in two different hours
    assert apnea_record_class(["A"] * 10, minutes=list(range(5)) + list(range(60, 65))) == "B"


def test_apnea_record_level_metrics() -> None:
    ref = {f"a01/{k:04d}": ("A" if 10 <= k < 200 else "N") for k in range(420)}  # 190 apnea minutes: class A
    ref |= {f"c01/{k:04d}": "N" for k in range(400)}  # class C
    ref |= {f"b01/{k:04d}": ("A" if k < 20 else "N") for k in range(400)}  # 20 minutes: class B
    ids = list(ref)
    truth = np.array([ref[i] == "A" for i in ids], dtype=float)
    perfect = record_level_metrics(ids, truth, ref)
    assert perfect["minute_accuracy"] == 1.0 and perfect["class_accuracy"] == 1.0
    assert perfect["screening_n"] == 2 and perfect["screening_correct"] == 2  # B is not screened (event 1)
    rows = {r["record"]: r for r in perfect["per_record"]}
    assert rows["a01"]["true_apnea_index"] == pytest.approx(190 * 60 / 420) and rows["b01"]["true_class"] == "B"
    assert perfect["apnea_minutes_correlation"] == pytest.approx(1.0)
    # call every c01 minute apnea: c01 screens positive (index 60 >= 5), is classed A; a01 and b01 unchanged
    scores = truth.copy()
    scores[[i.startswith("c01/") for i in ids]] = 0.9
    worse = record_level_metrics(ids, scores, ref)
    assert worse["screening_correct"] == 1 and worse["screening_specificity"] == 0.0 and worse["screening_sensitivity"] == 1.0
    assert worse["class_accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="no reference label"):
        record_level_metrics(["x09/0000"], [1.0], ref)


def test_apnea_minutes_cached_for_a_backbone(apnea_root: Path, tmp_path: Path, tiny_backbone_dir: Path) -> None:
    processor = _tiny_processor(tiny_backbone_dir)
    ids = ["a01/0003", "a01/0250", "a02/0007"]
    cache = build_cache(ApneaECG(apnea_root, lead_name="II"), processor, ids, cache_dir=tmp_path, progress=False)
    assert cache.report["n_windows"] == 3 * 12 and not cache.skipped  # a minute is twelve 5 s HuBERT windows
    assert (cache.take("attention_mask", np.arange(12)).reshape(12, 12, 500).sum(axis=2)[:, 1] == 500).all()
    # without lead_name the channel is called "ECG", which no contract lead matches: said, not guessed
    with pytest.raises(ValueError, match="No record of apnea_ecg could be cached"):
        build_cache(ApneaECG(apnea_root), processor, ids[:1], cache_dir=tmp_path / "2", progress=False)


# ====================================================================== CPSC 2021
@pytest.fixture
def cpsc(samples: Path) -> Path:
    return samples / "cpsc2021"


def test_cpsc2021_rhythm_intervals_and_record_classes(cpsc: Path) -> None:
    ds = CPSC2021(cpsc)
    assert isinstance(ds, LabelledSource) and len(ds.records) == 18 and len(ds.report) == 0
    table = ds.record_table()
    expected = {8: "persistent_af", 84: "persistent_af", 21: "non_af", 35: "non_af", 92: "paroxysmal_af",
                101: "paroxysmal_af"}
    assert {r: expected[p] for r, p in table["patient"].items()} == table["record_class"].to_dict()
    assert (table.loc[table.record_class == "non_af", "af_fraction"] == 0).all()
    assert (table.loc[table.record_class == "persistent_af", "af_episodes"] == 1).all()
    assert table.loc[["data_101_6", "data_101_8", "data_101_9", "data_92_4", "data_92_12", "data_92_19"],
                     "af_episodes"].tolist() == [4, 2, 1, 1, 1, 2]
    # data_101_6.atr: (AFIB at 3132, 8468, 11121, 21303; (N at 5639, 9100, 16050 and 22355 = one past the end
    assert ds.rhythm_intervals("data_101_6") == [
        (0, 3132, "N"), (3132, 5639, "AFIB"), (5639, 8468, "N"), (8468, 9100, "AFIB"), (9100, 11121, "N"),
        (11121, 16050, "AFIB"), (16050, 21303, "N"), (21303, 22355, "AFIB"),
    ]
    # persistent AF: (AFIB at 0, closing (N on the last sample
    assert ds.rhythm_intervals("data_8_4") == [(0, 8234, "AFIB"), (8234, 8235, "N")]
    assert rhythm_intervals([5, 9], ["(AFL\x00", "(N"], 20) == [(0, 5, "N"), (5, 9, "AFL"), (9, 20, "N")]


@pytest.mark.parametrize("rule, expected_af_windows", [("majority", [32]), ("any", [31, 32])])
def test_cpsc2021_window_labels_follow_the_documented_rule(cpsc: Path, rule: str, expected_af_windows: list[int]) -> None:
    # data_92_4: one AF episode at samples 63250-65213; 10 s windows are 2000 samples, so window 31 is
    # 37.5 % AF and window 32 is 60.65 % AF
    ds = CPSC2021(cpsc, window_seconds=10, label_rule=rule, records=["data_92_4"])  # type: ignore[arg-type]
    labels = ds.label_sets("af")
    assert len(labels) == 82903 // 2000 == 41
    assert [int(i[-4:]) for i, v in labels.items() if v == ["AF"]] == expected_af_windows
    assert ds.index["data_92_4"].af_fraction[31:33].tolist() == pytest.approx([0.375, 0.6065])


def test_cpsc2021_patient_wise_splits(cpsc: Path) -> None:
    ds = CPSC2021(cpsc)
    splits = {s: ds.split_records(s) for s in ("train", "validation", "test")}
    assert sorted(r for recs in splits.values() for r in recs) == sorted(ds.records)
    patients = {s: {patient_of(r) for r in recs} for s, recs in splits.items()}
    assert not (patients["train"] & patients["validation"]) and not (patients["train"] & patients["test"])
    assert not (patients["validation"] & patients["test"])
    assert patient_of("data_101_6") == 101
    # a patient's split depends only on its number, not on the other records present
    sub = CPSC2021(cpsc, records=["data_84_1", "data_21_7"])
    assert {r: patient_split(patient_of(r)) for r in sub.records} == {
        r: s for s, recs in splits.items() for r in recs if r in sub.records}
    windows = ds.split_ids("af", "test")
    assert windows and {i.rpartition("/")[0] for i in windows} == set(splits["test"])


def test_cpsc2021_windows_are_the_record_samples(cpsc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = CPSC2021(cpsc, window_seconds=5, stride_seconds=2.5, records=["data_101_6", "data_35_4"])
    ids = ["data_101_6/0000", "data_101_6/0007", "data_35_4/0003", "data_101_6/0013"]
    reads = _count_reads(monkeypatch, "ecg_adapt.data.cpsc2021")
    got = dict(ds.iter_records(ids))
    assert sorted(reads) == ["data_101_6", "data_35_4"]
    full = wfdb.rdrecord(str(cpsc / "data_101_6")).p_signal.T
    np.testing.assert_allclose(got["data_101_6/0007"].signal, full[:, 3500:4500], rtol=0, atol=1e-12)
    assert got["data_101_6/0013"].meta["start"] == 6500 and got["data_101_6/0013"].lead_names == ["I", "II"]


def test_cpsc2021_foreign_annotations_and_contradicting_class(cpsc: Path, tmp_path: Path) -> None:
    root = tmp_path / "training_I"
    root.mkdir()
    for ext in ("hea", "dat", "atr"):  # a header that says 4000 samples, with a .atr ending at 8234
        shutil.copy(cpsc / f"data_8_4.{ext}", root / f"data_8_4.{ext}")
        shutil.copy(cpsc / f"data_21_7.{ext}", root / f"data_21_7.{ext}")
    (root / "data_8_4.hea").write_text((cpsc / "data_8_4.hea").read_text().replace("2 200 8235", "2 200 4000"))
    (root / "data_21_7.hea").write_text(
        (cpsc / "data_21_7.hea").read_text().replace("non atrial fibrillation", "persistent atrial fibrillation"))
    ds = CPSC2021(tmp_path)
    assert ds.records == ["data_8_4", "data_21_7"]
    ds.index  # noqa: B018
    assert {(e["record_id"], e["reason"]) for e in ds.report.entries} == {
        ("data_8_4", "annotation_mismatch"), ("data_21_7", "annotation_mismatch")}
    assert list(ds.index) == ["data_21_7"]  # labels follow the annotations; the class contradiction is reported
    assert set(ds.label_sets("af").map(tuple)) == {("non-AF",)}


def test_cpsc2021_windows_cached_for_a_backbone(cpsc: Path, tmp_path: Path, tiny_backbone_dir: Path) -> None:
    ds = CPSC2021(cpsc, records=["data_92_12", "data_8_4"])
    ids = list(ds.label_sets("af").index)
    assert len(ids) == 4 + 4
    cache = build_cache(ds, _tiny_processor(tiny_backbone_dir), ids, cache_dir=tmp_path, progress=False)
    assert cache.report["n_windows"] == 2 * len(ids) and not cache.skipped  # 10 s -> two 5 s HuBERT windows
    per_lead = cache.take("attention_mask", np.arange(4)).reshape(4, 12, 500).sum(axis=2)
    assert (per_lead[:, :2] == 500).all() and per_lead[:, 2:].sum() == 0  # leads I and II present, the rest masked
