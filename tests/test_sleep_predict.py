"""`ecg-adapt predict` with a sequence model on PSG files: one row per 30 s epoch, from the ECG channel only.

The EDF fixture has the SHHS-1 montage (14 channels at 1-125 Hz, two EEGs at 125 Hz next to the ECG), written by
the hand EDF writer; the WFDB fixture has the slpdb geometry (ECG, BP, EEG, Resp at 250 Hz).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from edf_writer import SHHS1_MONTAGE, EDFChannel, to_digital, write_edf
from test_sleep import SLP01A_NOTES, nsrr_xml, runs_of, slpdb_record
from test_sleep_store import beating_ecg

from ecg_adapt import load_backbone
from ecg_adapt.cli import main
from ecg_adapt.data import ContextWindowDataset, RecordError, build_cache
from ecg_adapt.data.sleep import NSRRSleep, stage_labels
from ecg_adapt.inference import Predictor, SequencePredictor, read_night
from ecg_adapt.models.sequence import ECGSequenceClassifier
from ecg_adapt.processing import ECGProcessor

N_EPOCHS, TAIL_S = 9, 17  # nine whole 30 s epochs, then 17 s that make no whole epoch


def shhs1_edf(path: Path, eeg_seed: int = 0, ecg_label: str = "ECG", seconds: int = N_EPOCHS * 30 + TAIL_S) -> Path:
    rng = np.random.default_rng(eeg_seed)
    channels = []
    for label, unit, pmin, pmax, dmin, dmax, spr in SHHS1_MONTAGE:
        ch = EDFChannel(label, np.zeros(0, np.int16), spr, unit, pmin, pmax, dmin, dmax)
        if label == "ECG":
            ch.label = ecg_label
            ch.digital = to_digital(beating_ecg(seconds, spr, seed=5), ch)
        else:
            ch.digital = rng.integers(dmin, dmax + 1, seconds * spr).astype(np.int16)
        channels.append(ch)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_edf(path, channels, start_date="01.01.85", start_time="22.00.00")


@pytest.fixture
def sequence_model(tiny_backbone_dir: Path, tmp_path: Path) -> Path:
    """A tiny HuBERT-ECG (12 leads) sequence classifier for 4 stages, saved with save_pretrained: ECG is lead II."""
    torch.manual_seed(0)
    model = ECGSequenceClassifier.from_backbone(
        load_backbone(tiny_backbone_dir), stage_labels("stages4"), context=2, problem_type="single_label_classification",
        sequence_model="gru", sequence_hidden_size=8, ecg_channels=["ECG", "EKG"], ecg_lead="II", epoch_seconds=30.0)
    with torch.no_grad():  # out_proj starts at zero: give the neighbours a say, so context matters in the tests
        model.context_encoder.out_proj.weight.normal_(0, 0.5)
        model.window_classifier.classifier.weight.normal_(0, 2.0)
    path = tmp_path / "staging"
    model.save_pretrained(path)
    ECGProcessor.from_pretrained(tiny_backbone_dir, missing_leads="mask").save_pretrained(path)
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["predict", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_predict_one_row_per_whole_epoch_of_an_shhs_edf_with_a_hypnogram(
        sequence_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edf = shhs1_edf(tmp_path / "shhs1-200001.edf")
    png = tmp_path / "night.png"
    code, _, err = run_cli(capsys, sequence_model, edf, "-o", tmp_path / "night.csv", "--hypnogram", png)
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "night.csv").open()))
    assert len(rows) == N_EPOCHS  # the trailing 17 s are no epoch
    labels = ["W", "light", "deep", "REM"]
    assert list(rows[0])[:5] == ["record_id", "epoch", "start_s", "clock_time", "predicted"] and list(rows[0])[5:9] == labels
    assert [int(r["epoch"]) for r in rows] == list(range(N_EPOCHS))
    assert [float(r["start_s"]) for r in rows] == [30.0 * k for k in range(N_EPOCHS)]
    assert rows[0]["clock_time"] == "1985-01-01T22:00:00" and rows[3]["clock_time"] == "1985-01-01T22:01:30"
    probs = np.array([[float(r[n]) for n in labels] for r in rows])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert [r["predicted"] for r in rows] == [labels[i] for i in probs.argmax(1)]
    assert len({r["predicted"] for r in rows}) > 1 or probs.std(0).max() > 1e-3  # epochs differ: not one constant row
    assert "channel ECG as lead II at 125 Hz" in err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(png).shape[:2] == (300, 1000)
    assert not list(tmp_path.glob(".night.png*"))  # written through a temporary file, renamed


def test_the_eeg_channels_never_reach_the_model(sequence_model: Path, tmp_path: Path) -> None:
    predictor = Predictor.from_pretrained(sequence_model)
    assert isinstance(predictor, SequencePredictor)
    a = predictor.predict_night(read_night(shhs1_edf(tmp_path / "a.edf", eeg_seed=1), predictor.ecg_channels))
    b = predictor.predict_night(read_night(shhs1_edf(tmp_path / "b.edf", eeg_seed=2), predictor.ecg_channels))
    assert a.ecg_channel == "ECG" and a.lead == "II"
    # every other channel (two EEGs, EOGs, EMG at the ECG's rate) differs between the files; the predictions do not
    assert [e.probabilities for e in a.epochs] == [e.probabilities for e in b.epochs]


def test_predict_gives_the_probabilities_of_the_training_inputs(sequence_model: Path, tmp_path: Path) -> None:
    """Per-epoch prediction sees each epoch with its neighbours exactly as ContextWindowDataset gives them in
    training (the ends of the night: absent neighbours, mask 0), and averages the epoch's windows."""
    root = tmp_path / "shhs"
    shhs1_edf(root / "polysomnography" / "edfs" / "shhs1" / "shhs1-200001.edf")
    xml_dir = root / "polysomnography" / "annotations-events-nsrr" / "shhs1"
    xml_dir.mkdir(parents=True)
    nsrr_xml(xml_dir / "shhs1-200001-nsrr.xml", runs_of(["Wake|0"] * N_EPOCHS))
    source = NSRRSleep(root, cohort="shhs", lead_name="II")
    predictor = Predictor.from_pretrained(sequence_model)
    ids = source.epochs_of("shhs1-200001")
    cache = build_cache(source, predictor.processor, ids, cache_dir=tmp_path / "cache", progress=False, layout="windows")
    ds = ContextWindowDataset(cache, ids, np.zeros((len(ids), 1)), predictor.processor.contract.input_shape, context=2)
    with torch.no_grad():
        batch = ds.__getitems__(list(range(len(ds))))
        p = torch.softmax(predictor.model(input_values=batch["input_values"], attention_mask=batch["attention_mask"]).logits, -1)
    per_epoch = np.stack([p[batch["record_index"] == i].mean(0).numpy() for i in range(len(ids))])
    night = predictor.predict_night(read_night(root / "polysomnography" / "edfs" / "shhs1" / "shhs1-200001.edf"))
    got = np.array([[e.probabilities[n] for n in night.labels] for e in night.epochs])
    np.testing.assert_allclose(got, per_epoch, rtol=1e-5, atol=1e-6)


def test_a_file_without_the_ecg_channel_is_an_error_listing_its_channels(
        sequence_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edf = shhs1_edf(tmp_path / "night.edf", ecg_label="ECG2")
    code, out, err = run_cli(capsys, sequence_model, edf)
    assert code == 1
    assert "missing_ecg" in err and "'EEG(sec)'" in err and "'ECG2'" in err and "--ecg-channel" in err
    code, out, err = run_cli(capsys, sequence_model, edf, "--ecg-channel", "EKG,ECG2")  # the flag names it
    assert code == 0, err
    assert len(list(csv.DictReader(io.StringIO(out)))) == N_EPOCHS
    code, out, err = run_cli(capsys, sequence_model, edf, "--ecg-channel", "ECG2", "--lead", "V9")
    assert code == 2 and "V9" in err and "aVR" in err  # the model's leads are listed


def test_a_folder_without_psg_files_is_an_error_naming_it(sequence_model: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run_cli(capsys, sequence_model, empty)
    assert code == 1 and out == ""  # no CSV header for no night
    assert "no PSG files found" in err and str(empty) in err


def test_sequence_models_refuse_the_per_record_flags(sequence_model: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    edf = shhs1_edf(tmp_path / "night.edf")
    for flags in (["--per-window"], ["--leads", "I", "--sampling-rate", "125"], ["--aggregation", "max"]):
        code, out, err = run_cli(capsys, sequence_model, edf, *flags, "-o", tmp_path / "out.csv")
        assert code == 2 and "apply to window classifiers" in err and flags[0] in err, (flags, err)
        assert not (tmp_path / "out.csv").exists()
    code, _, err = run_cli(capsys, sequence_model, edf, "--aggregation", "mean")  # the default is no request
    assert code == 0, err


def test_predict_per_epoch_on_an_slpdb_record_to_json(sequence_model: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    slpdb_record(tmp_path, "slp01a", SLP01A_NOTES, real_header=True)  # ECG, BP, EEG (C4-A1), Resp at 250 Hz
    code, _, err = run_cli(capsys, sequence_model, tmp_path / "slp01a", "-o", tmp_path / "out.json")
    assert code == 0, err
    night, = json.loads((tmp_path / "out.json").read_text())
    assert night["ecg_channel"] == "ECG" and night["sampling_rate"] == 250 and len(night["epochs"]) == 8
    assert night["epochs"][1]["clock_time"] == "1989-01-19T23:07:30"  # the header's base date and time
    assert all(abs(sum(e["probabilities"].values()) - 1) < 1e-5 for e in night["epochs"])


def test_a_mesa_style_ekg_channel_is_found_and_an_eeg_label_is_refused(tmp_path: Path) -> None:
    night = read_night(shhs1_edf(tmp_path / "mesa-sleep-0001.edf", ecg_label="EKG"))  # MESA labels its ECG EKG
    assert night.channel == "EKG" and night.sampling_rate == 125 and night.start.hour == 22
    with pytest.raises(RecordError, match="not a voltage") as e:  # SaO2 (%) is never read as an ECG
        read_night(tmp_path / "mesa-sleep-0001.edf", ["SaO2"])
    assert e.value.reason == "bad_signal"


def test_window_classifiers_keep_per_record_prediction_and_refuse_the_epoch_flags(
        tiny_backbone_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ecg_adapt import ECGClassifier, adapt, load_processor, save_adapted

    clf = ECGClassifier.from_backbone(load_backbone(tiny_backbone_dir), ["W", "sleep"])
    model = save_adapted(adapt(clf, "linear_probe"), tmp_path / "window", load_processor(tiny_backbone_dir))
    assert not isinstance(Predictor.from_pretrained(model), SequencePredictor)
    code, _, err = run_cli(capsys, model, shhs1_edf(tmp_path / "n.edf"), "--hypnogram", tmp_path / "h.png")
    assert code == 2 and "--hypnogram apply to sequence models" in err and not (tmp_path / "h.png").exists()
