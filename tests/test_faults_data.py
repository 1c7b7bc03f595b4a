"""Bad records and stale caches (issue 11): real PhysioNet records from ../shared/ecg-samples, broken in copies.

Each test reproduces a failure of the previous code; the comments say what it did.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch

from conftest import SAMPLES, need
from ecg_adapt.data import RecordError, build_cache
from ecg_adapt.data.cinc import CinC2021
from ecg_adapt.data.record import ECGRecord, read_wfdb
from ecg_adapt.models.hubert_ecg import HUBERT_ECG_CONTRACT, default_processor_steps
from ecg_adapt.processing import ECGProcessor, QualityThresholds


@pytest.fixture(scope="module")
def real() -> Path:
    return need(SAMPLES) / "cinc2021"


def _copy(real: Path, name: str, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for ext in (".hea", ".mat"):
        shutil.copyfile(real / f"{name}{ext}", dst / f"{name}{ext}")
    return dst / name


def _edit_mat(base: Path, edit) -> None:
    """Edit the samples of a CinC ``.mat`` (MATLAB v4: 24-byte header, int16 samples interleaved by lead)."""
    mat = base.with_suffix(".mat")
    raw = mat.read_bytes()
    samples = np.frombuffer(raw[24:], dtype="<i2").reshape(-1, 12).copy()
    edit(samples)
    mat.write_bytes(raw[:24] + samples.astype("<i2").tobytes())


def _edit_header(base: Path, old: str, new: str) -> None:
    hea = base.with_suffix(".hea")
    text = hea.read_text()
    assert old in text, old
    hea.write_text(text.replace(old, new, 1))


def _processor() -> ECGProcessor:
    return ECGProcessor(HUBERT_ECG_CONTRACT, default_processor_steps())


# ---------------------------------------------------------------------------------------------- cache
def test_cache_key_follows_the_files_so_a_repaired_record_is_read_again(real: Path, tmp_path: Path) -> None:
    root = tmp_path / "training"
    for name in ("E07500", "E07501", "E07502"):
        _copy(real, name, root / "georgia" / "g1")
    mat = root / "georgia" / "g1" / "E07502.mat"
    mat.write_bytes(mat.read_bytes()[:60_000])  # a download cut short
    ids = ["E07500", "E07501", "E07502"]
    first = build_cache(CinC2021(root), _processor(), ids, cache_dir=tmp_path / "cache", progress=False)
    assert first.report["skipped_by_reason"] == {"truncated": 1}
    shutil.copyfile(real / "E07502.mat", mat)  # repaired on disk
    second = build_cache(CinC2021(root), _processor(), ids, cache_dir=tmp_path / "cache", progress=False)
    # Before: the same key, so the stale cache was reused and E07502 stayed "truncated".
    assert second.path != first.path
    assert second.report["n_cached"] == 3 and second.report["skipped"] == []
    third = build_cache(CinC2021(root), _processor(), ids, cache_dir=tmp_path / "cache", progress=False)
    assert third.path == second.path  # unchanged files: the cache is reused


def test_a_cache_build_killed_midway_is_never_reused(real: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "training"
    ids = ["E07500", "E07501", "E07502", "E07503"]
    for name in ids:
        _copy(real, name, root / "georgia" / "g1")
    processor = _processor()
    real_process = ECGProcessor.process
    calls = {"n": 0}

    def dying(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real_process(self, *a, **kw)

    monkeypatch.setattr(ECGProcessor, "process", dying)
    with pytest.raises(KeyboardInterrupt):
        build_cache(CinC2021(root), processor, ids, cache_dir=tmp_path / "cache", progress=False)
    monkeypatch.setattr(ECGProcessor, "process", real_process)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # nothing half-written left to pick up
    cache = build_cache(CinC2021(root), processor, ids, cache_dir=tmp_path / "cache", progress=False)
    assert cache.report["n_cached"] == 4 and len(cache) == 8
    # A build killed by SIGKILL leaves its temporary folder: never read, and removed once it is a day old.
    import os
    import time

    key = cache.path.name.split("-", 1)[1]  # <source>-<key>
    leftover = tmp_path / "cache" / f".cinc2021-{key}-killed"
    leftover.mkdir()
    (leftover / "windows.arrow").write_bytes(b"half")
    shutil.rmtree(cache.path)
    old = time.time() - 2 * 86400
    os.utime(leftover, (old, old))
    again = build_cache(CinC2021(root), processor, ids, cache_dir=tmp_path / "cache", progress=False)
    assert again.report["n_cached"] == 4 and not leftover.exists()


class _SingleLeadSource:
    """Records with one channel called ``ECG`` (as Apnea-ECG/SHHS headers name it): the real MIT-BIH 100 signal."""

    name = "single_lead"

    def __init__(self, n: int) -> None:
        rec = read_wfdb(need(SAMPLES) / "mitdb" / "100")
        self.signal = rec.signal[:1, : 360 * 12]
        self.n = n

    def iter_records(self, ids: list[Any] | None = None) -> Iterator[tuple[Any, ECGRecord | RecordError]]:
        for i in ids or range(self.n):
            yield i, ECGRecord(self.signal, 360.0, ["ECG"], record_id=str(i))

    def fingerprint(self) -> dict[str, object]:
        return {"source": self.name, "n": self.n}


def test_no_record_cached_says_why_per_reason_with_a_hint(tmp_path: Path) -> None:
    source = _SingleLeadSource(6)
    with pytest.raises(ValueError) as err:
        build_cache(source, _processor(), list(range(6)), cache_dir=tmp_path, progress=False)
    msg = str(err.value)
    # Before: "No record of single_lead could be cached: {'processing': 6}".
    assert "6 record(s), unknown_leads: lead(s) ['ECG'] are none of the model's leads" in msg
    assert "set source_options.lead_name" in msg


# ---------------------------------------------------------------------------------------------- quality
def test_flat_lead_and_all_zero_records_are_skipped_by_default_with_a_reason(real: Path, tmp_path: Path) -> None:
    root = tmp_path / "training"
    g = root / "georgia" / "g1"
    for name in ("E07500", "E07501", "E07502", "E07503"):
        _copy(real, name, g)

    def flat_v2(s):
        s[:, 7] = 0

    _edit_mat(g / "E07501", flat_v2)  # lead V2 disconnected
    ids = ["E07500", "E07501", "E07502", "E07503"]
    cache = build_cache(CinC2021(root), _processor(), ids, cache_dir=tmp_path / "c1", progress=False)
    # Before: kept and trained on with its labels; only counted in processing_notes as "flat lead(s)".
    assert cache.report["skipped_by_reason"] == {"flat_leads": 1}
    assert "['V2']" in cache.skipped[0]["detail"] and cache.skipped[0]["record_id"] == "E07501"
    kept = build_cache(CinC2021(root), _processor(), ids, cache_dir=tmp_path / "c1", progress=False,
                       quality=QualityThresholds(max_flat_leads=None))
    assert kept.report["n_cached"] == 4 and kept.report["processing_notes"] == {"flat lead(s)": 1}
    # A threshold in mV: a lead of under 0.05 mV peak-to-peak counts as flat too.
    _edit_mat(g / "E07502", lambda s: s.__setitem__((slice(None), 0), np.arange(len(s)) % 20))
    strict = build_cache(CinC2021(root), _processor(), ids, cache_dir=tmp_path / "c1", progress=False,
                         quality=QualityThresholds(flat_lead_max_ptp_mv=0.05))
    assert {s["record_id"] for s in strict.skipped} == {"E07501", "E07502"}


def test_all_zero_record_from_a_wfdb_reader_is_skipped(tmp_path: Path) -> None:
    from ecg_adapt.data.cache import build_cache as bc

    class Zeros(_SingleLeadSource):
        def iter_records(self, ids=None):
            for i in ids:
                sig = np.zeros((12, 5000)) if i == 0 else read_wfdb(need(SAMPLES) / "cinc2021" / "E07500").signal
                yield i, ECGRecord(sig, 500.0, list(HUBERT_ECG_CONTRACT.leads), record_id=str(i))

    cache = bc(Zeros(2), _processor(), [0, 1], cache_dir=tmp_path, progress=False)
    assert cache.report["skipped_by_reason"] == {"flat_signal": 1} and cache.report["n_cached"] == 1


def test_recipe_data_quality_is_typed_and_checked() -> None:
    from ecg_adapt.training import Recipe, RecipeError

    r = Recipe.from_dict({"data": {"quality": {"max_flat_leads": 2, "flat_lead_max_ptp_mv": 0.01}}})
    assert r.data.quality == QualityThresholds(flat_lead_max_ptp_mv=0.01, max_flat_leads=2)
    with pytest.raises(RecipeError, match="flat_lead_max_ptp_mv must be >= 0"):
        Recipe.from_dict({"data": {"quality": {"flat_lead_max_ptp_mv": -1}}})
    with pytest.raises(RecipeError, match="max_flat_lead"):
        Recipe.from_dict({"data": {"quality": {"max_flat_lead": 1}}})


# ---------------------------------------------------------------------------------------------- readers
def test_header_declaring_fewer_samples_than_the_file_holds_is_an_error(tmp_path: Path) -> None:
    src = need(SAMPLES) / "mitdb"
    for ext in (".hea", ".dat"):
        shutil.copyfile(src / f"100{ext}", tmp_path / f"100{ext}")
    assert read_wfdb(tmp_path / "100").signal.shape == (2, 650000)
    _edit_header(tmp_path / "100", "100 2 360 650000", "100 2 360 600000")
    # Before: wfdb read the first 600000 samples and the rest was dropped without a word.
    with pytest.raises(RecordError, match="holds 650000 samples x 2 signals.*declares 600000") as err:
        read_wfdb(tmp_path / "100")
    assert err.value.reason == "length_mismatch"


def test_cinc_header_with_two_dx_lines_gives_the_union(real: Path, tmp_path: Path) -> None:
    base = _copy(real, "E07502", tmp_path / "training" / "georgia" / "g1")
    _edit_header(base, "# Dx: 427084000\n", "# Dx: 427084000\n# Dx: 164934002,426783006\n")
    ds = CinC2021(tmp_path / "training")
    # Before: only the first line's 427084000.
    assert ds.records.at["E07502", "dx"] == ["427084000", "164934002", "426783006"]
    assert len(ds.report) == 0


# ---------------------------------------------------------------------------------------------- predict
@pytest.fixture
def model_dir(tiny_backbone_dir: Path, tmp_path: Path) -> Path:
    from ecg_adapt import ECGClassifier, adapt, load_backbone, load_processor, save_adapted

    torch.manual_seed(0)
    clf = ECGClassifier.from_backbone(load_backbone(tiny_backbone_dir), ["NORM", "AFIB", "CD"])
    return save_adapted(adapt(clf, "linear_probe"), tmp_path / "model", load_processor(tiny_backbone_dir))


def test_predict_on_a_folder_predicts_the_good_records_and_reports_each_bad_one(
        model_dir: Path, real: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from ecg_adapt.cli import main

    folder = tmp_path / "in"
    for name in ("E07500", "E07501"):
        _copy(real, name, folder)
    _edit_header(_copy(real, "E07502", folder), "0 II\n", "0 I\n")  # two leads named I

    def nan_run(s):
        s[:3000, 2] = -32768  # WFDB's invalid sample: 60 % of lead III is NaN

    _edit_mat(_copy(real, "E07503", folder), nan_run)
    _edit_header(_copy(real, "E07504", folder), "0 V1\n", "0 X1\n")  # a lead the model has no use for: V1 missing
    _copy(real, "E07505", folder).with_suffix(".mat").unlink()  # unreadable
    out = tmp_path / "preds.csv"
    rc = main(["predict", str(model_dir), str(folder), "-o", str(out)])
    err = capsys.readouterr().err
    # Before: the first bad record aborted the whole run with a traceback, nothing written.
    assert rc == 0
    rows = {r["record_id"]: r for r in csv.DictReader(out.open())}
    assert set(rows) == {"E07500", "E07501", "E07502", "E07503", "E07504", "E07505"}
    assert rows["E07500"]["error"] == "" and float(rows["E07500"]["NORM"]) >= 0
    reasons = {rid: rows[rid]["error"].split(":")[0] for rid in ("E07502", "E07503", "E07504", "E07505")}
    assert reasons == {"E07502": "duplicate_leads", "E07503": "nan_run", "E07504": "missing_leads",
                       "E07505": "missing_file"}
    for rid, reason in reasons.items():
        assert f"skipped {rid}: {reason}" in err
    assert "2 of 6 record(s) predicted, 4 skipped" in err
    assert main(["predict", str(model_dir), str(folder), "-o", str(tmp_path / "preds.json")]) == 0
    saved = json.loads((tmp_path / "preds.json").read_text())
    assert {r["record_id"]: r["error"]["reason"] for r in saved if "error" in r} == reasons

    only_bad = tmp_path / "bad"
    _copy(real, "E07505", only_bad).with_suffix(".mat").unlink()
    assert main(["predict", str(model_dir), str(only_bad)]) == 1  # none succeeded
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", str(model_dir), str(empty)]) == 1
    assert "no records found" in capsys.readouterr().err


def test_predictor_predict_each_returns_errors_with_reasons_instead_of_stopping(model_dir: Path, real: Path) -> None:
    from ecg_adapt.inference import Predictor

    good = read_wfdb(real / "E07500")
    inf = read_wfdb(real / "E07501")
    inf.signal[3, 100] = np.inf
    zero_rate = ECGRecord(read_wfdb(real / "E07502").signal, 0.0, good.lead_names, record_id="E07502")
    predictor = Predictor.from_pretrained(model_dir)
    preds, errors = predictor.predict_each([good, inf, zero_rate])
    assert [p.record_id for p in preds] == ["E07500"]
    assert [(e.record, e.reason) for e in errors] == [("E07501", "infinite_values"), ("E07502", "bad_sampling_rate")]
    # the plain API keeps raising on the first bad record
    with pytest.raises(ValueError, match="infinite"):
        predictor.predict([good, inf])
    # and the good record's prediction does not depend on the bad ones around it
    alone = predictor.predict([good])[0].probabilities
    assert alone == pytest.approx(preds[0].probabilities, abs=1e-6)
