"""Sleep staging from the ECG: slpdb (WFDB + .st), SHHS / MESA (EDF + NSRR XML), tasks, splits, metrics.

No real slpdb or NSRR data can be shipped, so the fixtures are written in the exact layouts: the NSRR folder
tree and XML schema, multi-rate EDF files with SHHS-like channels (by the hand writer in edf_writer.py),
and WFDB records with the real slpdb header geometry and NOTE annotations in ``.st``. Every ECG encodes its
own epoch index in its samples (digital value ``100 * k + i % 100`` at sample ``i`` of epoch ``k``), so alignment is checked
sample for sample.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import wfdb
from edf_writer import EDFChannel, write_edf
from wfdb.io.convert.edf import read_edf

from ecg_adapt.data import RecordError, build_cache, open_source
from ecg_adapt.data.sleep import (
    NSRRSleep,
    SlpDB,
    merge_stages,
    read_edf_header,
    read_edf_signal,
    stage_labels,
)
from ecg_adapt.processing import ECGProcessor
from ecg_adapt.tasks.staging import staging_metrics

EPOCH = 30


def epoch_coded(n_epochs: int, fs: int) -> np.ndarray:
    """Digital ECG whose sample i of epoch k (counted from the epoch's start) is 100 * k + i % 100."""
    k, i = np.divmod(np.arange(n_epochs * EPOCH * fs), EPOCH * fs)
    return (100 * k + i % 100).astype(np.int16)


# ------------------------------------------------------------------------------------------ NSRR fixtures
def psg_channels(n_seconds: int, ecg_label: str = "ECG", ecg_fs: int = 125, ecg_unit: str = "mV",
                 ecg_range: float = 2.5) -> list[EDFChannel]:
    """SHHS-like montage with mixed rates; the ECG is epoch-coded."""
    rng = np.random.default_rng(n_seconds)
    chans = [
        EDFChannel("SaO2", rng.integers(0, 100, n_seconds).astype(np.int16), 1, "%", 0, 100, 0, 100),
        EDFChannel("EEG(sec)", rng.integers(-2000, 2000, n_seconds * 125).astype(np.int16), 125, "uV", -125, 125, -2048, 2047),
        EDFChannel("THOR RES", rng.integers(-100, 100, n_seconds * 10).astype(np.int16), 10, "", -1, 1, -128, 127),
        EDFChannel("EOG(L)", rng.integers(-100, 100, n_seconds * 50).astype(np.int16), 50, "uV", -200, 200, -128, 127),
    ]
    if ecg_label:
        ecg = EDFChannel(ecg_label, epoch_coded(n_seconds // EPOCH, ecg_fs), ecg_fs, ecg_unit, -ecg_range, ecg_range, -2048, 2047)
        chans.insert(3, ecg)
    return chans


def nsrr_xml(path: Path, runs: list[tuple[str, float, float]], epoch_length: str = "30") -> Path:
    """NSRR XML: runs of (EventConcept, Start, Duration) as Stages|Stages, plus non-stage events."""
    events = [
        ("<ScoredEvent><EventType/><EventConcept>Recording Start Time</EventConcept><Start>0</Start>"
         "<Duration>99999.0</Duration><ClockTime>00.00.00 22.00.00</ClockTime></ScoredEvent>")
    ]
    for concept, start, duration in runs:
        events.append(f"<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>{concept}</EventConcept>"
                      f"<Start>{start}</Start><Duration>{duration}</Duration></ScoredEvent>")
    events.append("<ScoredEvent><EventType>Respiratory|Respiratory</EventType><EventConcept>Hypopnea|Hypopnea"
                  "</EventConcept><Start>95.3</Start><Duration>14.2</Duration><SignalLocation>ABDO RES</SignalLocation>"
                  "</ScoredEvent>")
    events.append("<ScoredEvent><EventType>Arousals|Arousals</EventType><EventConcept>Arousal|Arousal ()"
                  "</EventConcept><Start>100.0</Start><Duration>7.0</Duration></ScoredEvent>")
    text = ('<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n<PSGAnnotation>\n'
            "<SoftwareVersion>Compumedics</SoftwareVersion>\n"
            f"<EpochLength>{epoch_length}</EpochLength>\n<ScoredEvents>\n" + "\n".join(events)
            + "\n</ScoredEvents>\n</PSGAnnotation>\n")
    path.write_text(text)
    return path


def runs_of(stages: list[str]) -> list[tuple[str, float, float]]:
    """Merge consecutive equal concepts into one event, as the NSRR files do."""
    out: list[tuple[str, float, float]] = []
    for k, s in enumerate(stages):
        if out and out[-1][0] == s:
            out[-1] = (s, out[-1][1], out[-1][2] + EPOCH)
        else:
            out.append((s, float(k * EPOCH), float(EPOCH)))
    return out


W, S1, S2, S3, S4, R, MV, UN = ("Wake|0", "Stage 1 sleep|1", "Stage 2 sleep|2", "Stage 3 sleep|3",
                                "Stage 4 sleep|4", "REM sleep|5", "Movement|6", "Unscored|9")
# 12 epochs: W W N1 N2 N2 N2 N3(S3) N3(S4) MT REM REM unscored
NIGHT_200001 = [W, W, S1, S2, S2, S2, S3, S4, MV, R, R, UN]


def shhs_record(root: Path, visit: str, record: str, stages: list[str] | None, n_epochs: int = 12,
                channels: list[EDFChannel] | None = None, runs: list[tuple[str, float, float]] | None = None) -> None:
    edf_dir = root / "polysomnography" / "edfs" / visit
    xml_dir = root / "polysomnography" / "annotations-events-nsrr" / visit
    edf_dir.mkdir(parents=True, exist_ok=True)
    xml_dir.mkdir(parents=True, exist_ok=True)
    if channels is not False:
        write_edf(edf_dir / f"{record}.edf", channels or psg_channels(n_epochs * EPOCH))
    if stages is not None or runs is not None:
        nsrr_xml(xml_dir / f"{record}-nsrr.xml", runs if runs is not None else runs_of(stages))


@pytest.fixture(scope="module")
def shhs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shhs")
    shhs_record(root, "shhs1", "shhs1-200001", NIGHT_200001)
    cycle = [W, S1, S2, S3, R, S2]
    for i in range(2, 8):
        shhs_record(root, "shhs1", f"shhs1-20000{i}", [cycle[(i + k) % 6] for k in range(12)])
    shhs_record(root, "shhs2", "shhs2-200001", [W] * 4 + [S2] * 8)  # the same participant, visit 2
    return root


@pytest.fixture(scope="module")
def bad_shhs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad_shhs")
    shhs_record(root, "shhs1", "shhs1-300001", [W] * 12)  # fine
    shhs_record(root, "shhs1", "shhs1-300002", [W] * 14)  # stages run 2 epochs past the 12-epoch ECG
    shhs_record(root, "shhs1", "shhs1-300003", None, runs=[(W, 0.0, 60.0), (S2, 60.0, 45.0), (R, 120.0, 240.0)])
    shhs_record(root, "shhs1", "shhs1-300004", None)  # EDF, no XML
    shhs_record(root, "shhs1", "shhs1-300005", [W] * 12, channels=psg_channels(360, ecg_label=""))  # no ECG
    shhs_record(root, "shhs1", "shhs1-300006", [W] * 12, channels=False)  # XML, no EDF
    shhs_record(root, "shhs1", "shhs1-300007", None, runs=[(W, 0.0, 120.0), (S2, 90.0, 60.0), ("Stage 9 sleep|9", 150, 30)])
    return root


# ------------------------------------------------------------------------------------------ slpdb fixtures
SLPDB_SIGNALS = ["ECG", "BP", "EEG (C4-A1)", "Resp (sum)"]


def slpdb_record(root: Path, name: str, notes: list[tuple[int, str]] | None, n_epochs: int = 8,
                 sig_names: list[str] = SLPDB_SIGNALS, real_header: bool = False) -> None:
    fs = 250
    n = n_epochs * EPOCH * fs
    rng = np.random.default_rng(len(name))
    d = rng.integers(-500, 500, size=(n, len(sig_names))).astype(np.int64)
    if sig_names[0] == "ECG":
        d[:, 0] = epoch_coded(n_epochs, fs)
    gains = [200.0, 4.77778, 6430.0, 690.0, 100.0][: len(sig_names)]
    units = ["mV", "mmHg", "mV", "l", "mV"][: len(sig_names)]
    wfdb.wrsamp(name, fs=fs, units=units, sig_name=sig_names, d_signal=d, fmt=["212"] * len(sig_names),
                adc_gain=gains, baseline=[0] * len(sig_names), comments=["44 M 89 32-01-89"], write_dir=str(root))
    if real_header:  # the geometry of PhysioNet's slp01a.hea: counter frequency, negative ECG/EEG gains
        (root / f"{name}.hea").write_text(
            f"{name} 4 250/0.033333333(94) {n} 23:07:00 19/1/1989\n"
            f"{name}.dat 212 -200/mV 12 0 -17 59911 0 ECG\n"
            f"{name}.dat 212 4.77778(-477)/mmHg 12 0 -248 19332 0 BP\n"
            f"{name}.dat 212 -6430/mV 12 0 252 49594 0 EEG (C4-A1)\n"
            f"{name}.dat 212 690/l 12 0 -180 912 0 Resp (sum)\n"
            "# 44 M 89 32-01-89\n"
        )
    if notes is not None:
        wfdb.wrann(name, "st", np.array([s for s, _ in notes]), symbol=['"'] * len(notes),
                   aux_note=[a for _, a in notes], write_dir=str(root))


E250 = EPOCH * 250  # 7500 samples per epoch at 250 Hz
# slp01a: W 1 2 3 4 MT R and no annotation for epoch 7; the first annotation at sample 1 as in slpdb
SLP01A_NOTES = [(1, "W"), (E250, "1"), (2 * E250, "2 OA"), (3 * E250, "3"), (4 * E250, "4 H"), (5 * E250, "MT"),
                (6 * E250, "R")]


@pytest.fixture(scope="module")
def slpdb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slpdb")
    slpdb_record(root, "slp01a", SLP01A_NOTES, real_header=True)
    slpdb_record(root, "slp01b", [(1 + 0 * E250, "2")] + [(k * E250, "2") for k in range(1, 8)])
    slpdb_record(root, "slp03", [(1, "W")] + [(k * E250, "R" if k > 4 else "3") for k in range(1, 8)])
    # slp14: one annotation half an epoch off the grid and one with no stage character
    slpdb_record(root, "slp14", [(1, "W"), (E250, "1"), (2 * E250 + 3750, "2"), (3 * E250, "?"),
                                 (4 * E250, "2")] + [(k * E250, "W") for k in range(5, 8)])
    slpdb_record(root, "slp67x", [(1, "W")] + [(k * E250, "2 CA") for k in range(1, 8)])
    slpdb_record(root, "slp04", [(1, "W")], sig_names=["BP", "EEG (C3-O1)", "Resp (nasal)"])  # no ECG
    slpdb_record(root, "slp16", None)  # no .st
    records = ["slp01a", "slp01b", "slp03", "slp04", "slp14", "slp16", "slp67x"]
    (root / "RECORDS").write_text("".join(f"{r}\n" for r in records))
    return root


# ------------------------------------------------------------------------------------------ EDF
def test_edf_reader_returns_every_channel_of_a_mixed_rate_psg_exactly(tmp_path: Path) -> None:
    chans = psg_channels(90)
    path = write_edf(tmp_path / "x.edf", chans)
    header = read_edf_header(path)
    assert header.labels == ["SaO2", "EEG(sec)", "THOR RES", "ECG", "EOG(L)"]
    assert [header.sampling_rate(i) for i in range(5)] == [1.0, 125.0, 10.0, 125.0, 50.0]
    assert header.find(["EKG", "ecg"]) == 3 and header.find(["EKG"]) is None
    for i, ch in enumerate(chans):
        np.testing.assert_array_equal(read_edf_signal(path, i, header), ch.physical())
    # the record length in the header need not be 1 s
    path2 = write_edf(tmp_path / "y.edf", [EDFChannel("ECG", epoch_coded(2, 125), 3750, "mV", -2.5, 2.5, -2048, 2047)],
                      record_seconds=30)
    np.testing.assert_array_equal(read_edf_signal(path2, 0), EDFChannel("ECG", epoch_coded(2, 125), 3750, "mV", -2.5, 2.5,
                                                                        -2048, 2047).physical())


def test_hand_written_edf_is_read_back_by_wfdb_which_cannot_keep_mixed_rates(tmp_path: Path) -> None:
    ecg = EDFChannel("ECG", epoch_coded(2, 125), 125, "mV", -2.5, 2.5, -2048, 2047)
    single = read_edf(str(write_edf(tmp_path / "single.edf", [ecg])))
    assert single.sig_name == ["ECG"] and single.units == ["mV"] and single.fs == 125 and single.sig_len == 7500
    step = 5.0 / 4095
    assert np.abs(single.p_signal[:, 0] - ecg.physical()).max() <= step  # wfdb's baseline is off by < 1 step
    # every PSG mixes rates: wfdb resamples all signals to their common divisor (1 Hz here), which is why
    # ecg_adapt reads the ECG channel itself
    mixed = read_edf(str(write_edf(tmp_path / "mixed.edf", psg_channels(60))), header_only=True)
    assert mixed["fs"] == 1 and mixed["sig_len"] == 60


def test_bad_edf_files_are_record_errors(tmp_path: Path) -> None:
    path = write_edf(tmp_path / "x.edf", psg_channels(60))
    short = tmp_path / "short.edf"
    short.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(RecordError) as e:
        read_edf_header(short)
    assert e.value.reason == "truncated"
    bogus = tmp_path / "bogus.edf"
    bogus.write_bytes(b"not an edf" * 40)
    with pytest.raises(RecordError) as e:
        read_edf_header(bogus)
    assert e.value.reason == "corrupt_header"
    disc = write_edf(tmp_path / "d.edf", psg_channels(60), reserved="EDF+D")
    with pytest.raises(RecordError) as e:
        read_edf_header(disc)
    assert e.value.reason == "unsupported"
    with pytest.raises(RecordError) as e:
        read_edf_header(tmp_path / "absent.edf")
    assert e.value.reason == "missing_file"


def test_a_named_edf_channel_is_read_in_mv_and_one_not_in_volts_is_refused(tmp_path: Path) -> None:
    from ecg_adapt.data.edf import read_edf as read_edf_mv

    chans = psg_channels(60, ecg_unit="uV", ecg_range=2500.0)
    path = write_edf(tmp_path / "x.edf", chans)
    rec = read_edf_mv(path, channels=["ECG"])
    assert rec.lead_names == ["ECG"] and rec.sampling_rate == 125
    np.testing.assert_allclose(rec.signal[0], chans[3].physical() * 1e-3)  # uV -> mV
    with pytest.raises(RecordError, match="'SaO2' has unit '%', not a voltage") as e:  # never fed to a model as mV
        read_edf_mv(path, channels=["SaO2"])
    assert e.value.reason == "bad_signal"


# ------------------------------------------------------------------------------------------ stages
def test_stage_merges() -> None:
    five = ["W", "N1", "N2", "N3", "REM"]
    assert merge_stages(five, "stages5") == five
    assert merge_stages(five, "stages4") == ["W", "light", "light", "deep", "REM"]
    assert merge_stages(five, "stages3") == ["W", "NREM", "NREM", "NREM", "REM"]
    assert merge_stages(five, "stages2") == ["wake", "sleep", "sleep", "sleep", "sleep"]
    assert stage_labels("stages4") == ["W", "light", "deep", "REM"]
    with pytest.raises(ValueError, match="S3"):
        merge_stages(["S3"], "stages5")
    with pytest.raises(ValueError, match="stages6"):
        stage_labels("stages6")


# ------------------------------------------------------------------------------------------ SHHS
def test_shhs_stage_counts_exclusions_and_merges(shhs_root: Path) -> None:
    shhs = NSRRSleep(shhs_root, cohort="shhs")
    assert len(shhs.report) == 0 and sorted(shhs.recordings) == [f"shhs1-20000{i}" for i in range(1, 8)]
    rec = shhs.recordings["shhs1-200001"]
    assert rec.sampling_rate == 125.0 and rec.n_samples == 12 * 3750 and rec.channel == "ECG"
    counts = shhs.epoch_counts().loc["shhs1-200001"]
    assert counts[["W", "N1", "N2", "N3", "REM", "movement", "unscored", "unannotated"]].tolist() == [2, 1, 3, 2, 2, 1, 1, 0]
    assert shhs.hypnogram("shhs1-200001") == ["W", "W", "N1", "N2", "N2", "N2", "N3", "N3", None, "REM", "REM", None]
    assert shhs.epochs_of("shhs1-200001") == [f"shhs1-200001/{k}" for k in (0, 1, 2, 3, 4, 5, 6, 7, 9, 10)]
    five = shhs.label_sets("stages5")
    assert five["shhs1-200001/7"] == ["N3"] and "shhs1-200001/8" not in five.index  # S4 -> N3; movement out
    four = shhs.label_sets("stages4")
    assert [four[f"shhs1-200001/{k}"][0] for k in (0, 2, 3, 6, 9)] == ["W", "light", "light", "deep", "REM"]
    three = shhs.label_sets("stages3")
    assert three["shhs1-200001/6"] == ["NREM"]
    task = shhs.task("stages4")
    assert task.name == "shhs/stages4" and not task.multi_label and task.labels == ["W", "light", "deep", "REM"]
    assert task.encode([four[u] for u in shhs.epochs_of("shhs1-200001")]).tolist() == [0, 0, 1, 1, 1, 1, 2, 2, 3, 3]
    assert len(five) == sum(len(shhs.epochs_of(r)) for r in shhs.recordings)


def test_shhs_epoch_k_is_samples_k_times_30_fs_exactly(shhs_root: Path) -> None:
    shhs = NSRRSleep(shhs_root, cohort="shhs", lead_name="II")
    units = ["shhs1-200001/0", "shhs1-200001/9", "shhs1-200003/11", "shhs1-200001/3"]
    got = dict(shhs.iter_records(units))
    assert list(got) == ["shhs1-200001/0", "shhs1-200001/9", "shhs1-200001/3", "shhs1-200003/11"]  # one read per record
    scale = 5.0 / 4095
    for unit, rec in got.items():
        k = int(unit.split("/")[1])
        assert rec.signal.shape == (1, 3750) and rec.sampling_rate == 125.0 and rec.lead_names == ["II"]
        assert shhs.epoch_span(unit) == (k * 3750, (k + 1) * 3750)
        digital = np.round((rec.signal[0] + 2.5) / scale - 2048).astype(int)
        np.testing.assert_array_equal(digital, 100 * k + np.arange(3750) % 100)
    assert got["shhs1-200001/9"].meta["stage"] == "REM" and got["shhs1-200001/9"].meta["subject"] == "200001"


def test_shhs_context_window_has_the_labelled_epoch_in_its_centre(shhs_root: Path) -> None:
    shhs = NSRRSleep(shhs_root, cohort="shhs", context_epochs=2)
    assert shhs.epochs_of("shhs1-200001") == [f"shhs1-200001/{k}" for k in (2, 3, 4, 5, 6, 7, 9)]
    assert shhs.epoch_counts().loc["shhs1-200001", "context_edge"] == 3  # epochs 0, 1, 10
    (unit, rec), = shhs.iter_records(["shhs1-200001/4"])
    assert rec.signal.shape == (1, 5 * 3750) and shhs.epoch_span(unit) == (2 * 3750, 7 * 3750)
    first = np.round((rec.signal[0, ::3750] + 2.5) / (5.0 / 4095) - 2048).astype(int)
    assert first.tolist() == [200, 300, 400, 500, 600]  # epochs 2..6, epoch 4 in the middle
    (_, err), = shhs.iter_records(["shhs1-200001/11"])
    assert isinstance(err, RecordError) and err.reason == "out_of_range"
    assert shhs.fingerprint()["context_epochs"] == 2 != NSRRSleep(shhs_root, cohort="shhs").fingerprint()["context_epochs"]


def test_shhs_visits_and_subject_splits(shhs_root: Path) -> None:
    both = NSRRSleep(shhs_root, cohort="shhs", visit="all")
    assert "shhs2-200001" in both.recordings and both.subject_of("shhs2-200001/3") == "200001"
    splits = {s: both.split_ids("stages5", s) for s in ("train", "validation", "test")}
    subjects = {s: {both.subject_of(u) for u in ids} for s, ids in splits.items()}
    assert all(subjects.values()) and not (subjects["train"] & subjects["validation"]) \
        and not (subjects["train"] & subjects["test"]) and not (subjects["validation"] & subjects["test"])
    assert sorted(u for ids in splits.values() for u in ids) == sorted(both.label_sets("stages5").index)
    split_of = both.subject_splits()
    assert {both.split_records(s).count("shhs2-200001") for s in splits} == {0, 1}
    assert "shhs1-200001" in both.split_records(split_of["200001"]) and "shhs2-200001" in both.split_records(split_of["200001"])
    again = NSRRSleep(shhs_root, cohort="shhs", visit="all")
    assert again.subject_splits() == split_of and again.split_ids("stages5", "test") == splits["test"]
    assert NSRRSleep(shhs_root, cohort="shhs", visit="all", split_seed=1).subject_splits() != split_of
    assert sorted(NSRRSleep(shhs_root, cohort="shhs", visit="shhs2").recordings) == ["shhs2-200001"]
    with pytest.raises(ValueError, match="shhs3"):
        NSRRSleep(shhs_root, cohort="shhs", visit="shhs3")


def test_nsrr_mismatches_are_reported_and_raise_on_request(bad_shhs_root: Path) -> None:
    shhs = NSRRSleep(bad_shhs_root, cohort="shhs")
    reasons = sorted((e["record_id"], e["reason"]) for e in shhs.report.entries)
    assert reasons == [
        ("shhs1-300002", "stages_past_end"),
        ("shhs1-300003", "bad_stage_timing"),
        ("shhs1-300004", "missing_annotation"),
        ("shhs1-300005", "missing_ecg"),
        ("shhs1-300006", "missing_file"),
        ("shhs1-300007", "overlapping_stages"),
        ("shhs1-300007", "unknown_stage"),
    ]
    assert sorted(shhs.recordings) == ["shhs1-300001", "shhs1-300002", "shhs1-300003", "shhs1-300007"]
    counts = shhs.epoch_counts()
    assert counts.loc["shhs1-300002", "past_end"] == 2 and counts.loc["shhs1-300002", "W"] == 12
    # the 45 s N2 event is ignored, the events around it are kept
    assert shhs.hypnogram("shhs1-300003")[:5] == ["W", "W", None, None, "REM"]
    # epochs 3 and 4 scored twice (W until 120 s, N2 from 90 s) are excluded
    assert shhs.hypnogram("shhs1-300007")[:6] == ["W", "W", "W", None, "N2", None]
    assert counts.loc["shhs1-300007", "conflict"] == 1
    assert "past the end" in next(e["detail"] for e in shhs.report.entries if e["reason"] == "stages_past_end")
    with pytest.raises(RecordError):
        NSRRSleep(bad_shhs_root, cohort="shhs", on_error="raise")


def test_xml_with_another_epoch_length_is_refused(tmp_path: Path) -> None:
    shhs_record(tmp_path, "shhs1", "shhs1-400001", [W] * 12)
    nsrr_xml(tmp_path / "polysomnography/annotations-events-nsrr/shhs1/shhs1-400001-nsrr.xml", [(W, 0, 40)], epoch_length="20")
    shhs = NSRRSleep(tmp_path, cohort="shhs")
    assert shhs.report.by_reason == {"epoch_length_mismatch": 1} and not shhs.recordings


def test_mesa_ekg_in_microvolts_at_256_hz(tmp_path: Path) -> None:
    edf_dir = tmp_path / "polysomnography" / "edfs"
    xml_dir = tmp_path / "polysomnography" / "annotations-events-nsrr"
    edf_dir.mkdir(parents=True)
    xml_dir.mkdir(parents=True)
    for i in (1, 2, 3):
        write_edf(edf_dir / f"mesa-sleep-000{i}.edf", psg_channels(120, ecg_label="EKG", ecg_fs=256, ecg_unit="uV",
                                                                    ecg_range=2500.0))
        nsrr_xml(xml_dir / f"mesa-sleep-000{i}-nsrr.xml", runs_of([W, S2, S2, R]))
    mesa = open_source("mesa", tmp_path, lead_name="I")
    assert mesa.name == "mesa" and mesa.subject_of("mesa-sleep-0002") == "0002" and len(mesa.report) == 0
    (_, rec), = mesa.iter_records(["mesa-sleep-0001/2"])
    assert rec.sampling_rate == 256.0 and rec.signal.shape == (1, 7680) and rec.lead_names == ["I"]
    physical_uv = EDFChannel("EKG", epoch_coded(4, 256), 256, "uV", -2500.0, 2500.0, -2048, 2047).physical()
    np.testing.assert_array_equal(rec.signal[0], physical_uv[2 * 7680: 3 * 7680] * 1e-3)
    assert mesa.label_sets("stages3")["mesa-sleep-0003/3"] == ["REM"]
    with pytest.raises(ValueError, match="single sleep exam"):
        NSRRSleep(tmp_path, cohort="mesa", visit="shhs1")


# ------------------------------------------------------------------------------------------ slpdb
def test_slpdb_stages_subjects_and_reports(slpdb_root: Path) -> None:
    db = SlpDB(slpdb_root)
    assert sorted(db.recordings) == ["slp01a", "slp01b", "slp03", "slp14", "slp67x"]
    assert sorted((e["record_id"], e["reason"]) for e in db.report.entries) == [
        ("slp04", "missing_ecg"), ("slp14", "misaligned_annotation"), ("slp14", "unknown_stage"),
        ("slp16", "missing_annotation"),
    ]
    # "W" at sample 1 is epoch 0; "4 H" is N3; MT excluded; epoch 7 has no annotation
    assert db.hypnogram("slp01a") == ["W", "N1", "N2", "N3", "N3", None, "REM", None]
    counts = db.epoch_counts().loc["slp01a"]
    assert counts[["W", "N1", "N2", "N3", "REM", "movement", "unannotated"]].tolist() == [1, 1, 1, 2, 1, 1, 1]
    assert db.hypnogram("slp14") == ["W", "N1", None, None, "N2", "W", "W", "W"]
    assert db.recordings["slp01a"].meta["age"] == "44" and db.recordings["slp01a"].sampling_rate == 250.0
    assert db.subject_of("slp01a") == db.subject_of("slp01b/3") == "slp01" and db.subject_of("slp67x") == "slp67x"
    assert db.label_sets("stages2")["slp01a/6"] == ["sleep"] and db.label_sets("stages2")["slp01a/0"] == ["wake"]
    with pytest.raises(RecordError, match="missing_ecg"):
        SlpDB(slpdb_root, on_error="raise")


def test_slpdb_epochs_are_aligned_and_read_from_the_ecg_channel_only(slpdb_root: Path) -> None:
    db = SlpDB(slpdb_root)
    got = dict(db.iter_records(["slp01a/3", "slp01a/0", "slp67x/7"]))
    for unit, rec in got.items():
        k = int(unit.split("/")[1])
        assert rec.signal.shape == (1, E250) and rec.lead_names == ["ECG"] and rec.units == ["mV"]
        gain = -200.0 if unit.startswith("slp01a") else 200.0  # slp01a carries PhysioNet's negative ECG gain
        np.testing.assert_array_equal(rec.signal[0], (100 * k + np.arange(E250) % 100) / gain)
    with_context = SlpDB(slpdb_root, context_epochs=1)
    assert with_context.epochs_of("slp01a") == ["slp01a/1", "slp01a/2", "slp01a/3", "slp01a/4", "slp01a/6"]
    (_, rec), = with_context.iter_records(["slp01a/3"])
    np.testing.assert_array_equal(rec.signal[0, E250: 2 * E250], got["slp01a/3"].signal[0])


def test_slpdb_split_keeps_the_two_halves_of_a_night_together(slpdb_root: Path) -> None:
    db = SlpDB(slpdb_root)
    split_of = db.subject_splits()
    assert sorted(split_of) == ["slp01", "slp03", "slp14", "slp67x"]
    assert sorted(split_of.values()) == ["test", "train", "train", "validation"]
    home = split_of["slp01"]
    assert {"slp01a", "slp01b"} <= set(db.split_records(home))
    ids = {s: set(db.split_ids(db.task("stages5"), s)) for s in ("train", "validation", "test")}
    assert not (ids["train"] & ids["test"]) and sum(map(len, ids.values())) == len(db.label_sets("stages5"))


def test_build_cache_with_a_tiny_hubert_processor(slpdb_root: Path, tiny_backbone_dir: Path, tmp_path: Path) -> None:
    db = open_source("slpdb", slpdb_root, lead_name="II")
    processor = ECGProcessor.from_pretrained(tiny_backbone_dir, missing_leads="mask")
    ids = ["slp01a/0", "slp01a/6", "slp03/5", "slp99/0"]
    cache = build_cache(db, processor, ids, cache_dir=tmp_path, progress=False)
    assert cache.report["n_cached"] == 3 and [s["reason"] for s in cache.skipped] == ["unknown_record"]
    assert cache.report["n_windows"] == 3 * 6  # 30 s epochs, 5 s windows
    assert sorted(set(cache.row_record_ids.tolist())) == ["slp01a/0", "slp01a/6", "slp03/5"]
    (_, rec), = db.iter_records(["slp03/5"])
    direct = processor.process(rec.signal, rec.sampling_rate, rec.lead_names).input_values
    rows = np.flatnonzero(cache.row_record_ids == "slp03/5")
    # sleep epochs go to the recording store (float16 values for a normalising processor: within its rounding)
    assert cache.report["layout"] == "store"
    np.testing.assert_allclose(cache.take("input_values", rows).reshape(direct.shape), direct, rtol=2**-11, atol=2**-24)
    windows = build_cache(db, processor, ids, cache_dir=tmp_path, progress=False, layout="windows")
    rows = np.flatnonzero(windows.row_record_ids == "slp03/5")
    np.testing.assert_array_equal(windows.take("input_values", rows).reshape(direct.shape), direct)
    other = build_cache(open_source("slpdb", slpdb_root, lead_name="II", context_epochs=1), processor, ids[:2],
                        cache_dir=tmp_path, progress=False)
    assert other.path != cache.path


# ------------------------------------------------------------------------------------------ metrics
# 6 epochs of 2 subjects; predictions (argmax) 0 1 1 1 2 0 against truth 0 0 1 1 2 2.
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
Y_PROB = np.array([[0.6, 0.3, 0.1], [0.3, 0.5, 0.2], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.5, 0.1, 0.4]])
SUBJECTS = ["a", "a", "a", "b", "b", "b"]


def test_staging_metrics_on_hand_checked_numbers() -> None:
    m = staging_metrics(Y_TRUE, Y_PROB, SUBJECTS, ["W", "NREM", "REM"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    # p_o = 4/6, p_e = (2*2 + 2*3 + 2*1) / 36 = 1/3 → kappa = (2/3 - 1/3) / (2/3)
    assert m["kappa"] == pytest.approx(0.5)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["per_class_f1"] == pytest.approx({"W": 0.5, "NREM": 0.8, "REM": 2 / 3})
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # W: positives 0.6, 0.3 against 0.2, 0.1, 0.1, 0.5 → 7 of 8 pairs ordered; NREM and REM separate perfectly
    assert m["per_class_auroc"] == pytest.approx({"W": 7 / 8, "NREM": 1.0, "REM": 1.0})
    assert m["macro_auroc"] == pytest.approx((7 / 8 + 2) / 3)
    assert m["support"] == {"W": 2, "NREM": 2, "REM": 2}
    # subject a: truth 0 0 1, pred 0 1 1 → kappa (2/3 - 4/9) / (5/9) = 0.4; subject b: truth 1 2 2, pred 1 2 0 → 0.5
    assert m["per_subject"]["a"] == pytest.approx({"n_epochs": 3, "accuracy": 2 / 3, "kappa": 0.4})
    assert m["per_subject"]["b"]["kappa"] == pytest.approx(0.5)
    assert m["subject_kappa_mean"] == pytest.approx(0.45) and m["subject_kappa_sd"] == pytest.approx(math.sqrt(0.005))
    assert m["subject_accuracy_mean"] == pytest.approx(2 / 3) and m["subject_accuracy_sd"] == pytest.approx(0.0)
    assert (m["subject_kappa_min"], m["subject_kappa_max"]) == pytest.approx((0.4, 0.5))
    assert m["n_subjects"] == 2 and m["subjects_kappa_undefined"] == []


def test_staging_metrics_edge_cases() -> None:
    # subject c is all wake, predicted all wake: its kappa is undefined and left out of the mean
    y = np.array([0, 0, 1, 1, 0, 0])
    p = np.eye(3)[[0, 1, 1, 1, 0, 0]]
    m = staging_metrics(y, p, ["a", "a", "a", "a", "c", "c"], ["W", "NREM", "REM"])
    assert m["per_subject"]["c"]["kappa"] is None and m["subjects_kappa_undefined"] == ["c"]
    assert m["subject_kappa_mean"] == pytest.approx(0.5) and m["subject_kappa_sd"] is None
    assert m["subject_kappa_min"] == m["subject_kappa_max"] == pytest.approx(0.5)  # over defined kappas only
    assert m["per_class_auroc"]["REM"] is None and m["per_class_f1"]["REM"] == 0.0
    assert "per_subject" not in staging_metrics(y, p, None, ["W", "NREM", "REM"])
    with pytest.raises(ValueError, match="shape"):
        staging_metrics(y, p[:, :2], None, ["W", "NREM", "REM"])
    with pytest.raises(ValueError, match="class indices"):
        staging_metrics(np.array([0, 3, 1, 1, 0, 0]), p, None, ["W", "NREM", "REM"])
    with pytest.raises(ValueError, match="subject ids"):
        staging_metrics(y, p, ["a"], ["W", "NREM", "REM"])
