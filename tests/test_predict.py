"""`ecg-adapt predict` on real files: every CinC record, a 30-min 2-lead Holter on a 12-lead model, EDF, .npy."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ecg_adapt import ECGClassifier, adapt, load_backbone, load_processor, read_wfdb, save_adapted
from ecg_adapt.inference import Predictor, find_inputs, read_records


@pytest.fixture
def model_dir(tiny_backbone_dir: Path, tmp_path: Path) -> Path:
    torch.manual_seed(0)
    clf = ECGClassifier.from_backbone(load_backbone(tiny_backbone_dir), ["NORM", "AFIB", "CD"])
    return save_adapted(adapt(clf, "linear_probe"), tmp_path / "model", load_processor(tiny_backbone_dir))


def _predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecg_adapt.cli", "predict", *args], capture_output=True, text=True, timeout=600)


def test_predict_every_cinc_record_and_a_two_lead_holter_on_a_12_lead_model(model_dir: Path, samples: Path, tmp_path: Path) -> None:
    out = tmp_path / "preds.csv"
    proc = _predict(str(model_dir), str(samples / "cinc2021"), str(samples / "mitdb" / "100"),
                    "--missing-leads", "mask", "--per-window", "-o", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(out.open()))
    records = {r["record_id"] for r in rows if r["window"] == "record"}
    assert records == {p.stem for p in (samples / "cinc2021").glob("*.hea")} | {"100"}
    holter = [r for r in rows if r["record_id"] == "100" and r["window"] != "record"]
    assert len(holter) == 362  # 1805.6 s: 361 full 5 s windows + one aligned to the end for the last 0.6 s
    assert float(holter[-1]["start_s"]) == pytest.approx(1805.556 - 5.0, abs=0.01)
    assert all(np.isfinite(float(r["NORM"])) for r in rows)
    # how the missing leads were handled is stated, per record
    line = next(x for x in proc.stderr.splitlines() if x.startswith("100:"))
    assert "missing leads I, III, aVR, aVL, aVF, V1, V2, V3, V4, V6 masked" in line and "MLII used as II" in line
    assert "model input: 12 leads" in proc.stderr


def test_edf_and_npy_inputs(model_dir: Path, samples: Path, tmp_path: Path) -> None:
    import wfdb.io.convert.edf as edf

    rec = read_wfdb(samples / "cinc2021" / "HR06000")
    edf.wfdb_to_edf(str(samples / "cinc2021" / "HR06000"), output_filename=str(tmp_path / "HR06000.edf"))
    np.save(tmp_path / "arr.npy", rec.signal.astype(np.float32))
    paths = find_inputs([tmp_path])
    assert sorted(p.name for p in paths) == ["HR06000.edf", "arr.npy"]
    records, bad = read_records(paths, sampling_rate=500, lead_names=rec.lead_names)
    assert not bad and records[1].signal.shape == (12, 5000)
    # wfdb's EDF writer pads the last 1 s data record (5500 samples); EDF stores 16-bit digital values
    assert records[0].signal.shape[0] == 12 and records[0].signal.shape[1] >= 5000
    assert records[0].lead_names == rec.lead_names and records[0].sampling_rate == 500
    np.testing.assert_allclose(records[0].signal[:, :5000], rec.signal, atol=2e-3)
    preds = Predictor.from_pretrained(model_dir).predict(records)
    assert preds[1].n_windows == 2 and preds[0].n_windows >= 2
    proc = _predict(str(model_dir), str(tmp_path / "arr.npy"))
    assert proc.returncode == 1 and "needs --sampling-rate and --leads" in proc.stderr
