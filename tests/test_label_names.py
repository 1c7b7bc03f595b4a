"""Labels that are codes are shown by name: CinC's SNOMED CT codes carry their abbreviations into the task,
``metrics.json`` (``label_names`` and the per-class entries), the ``ecg-adapt train`` table and the model card,
while the code stays the label's id everywhere (config, thresholds, metric keys)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ecg_adapt.cli import per_class_table
from ecg_adapt.data.cinc import CinC2021
from ecg_adapt.hub.card import build_model_card
from ecg_adapt.tasks import ClassificationTask, display_label, per_class_summary
from ecg_adapt.training import Recipe, train

from conftest import SAMPLES, need


def test_cinc_tasks_name_every_code_by_its_abbreviation() -> None:
    ds = CinC2021(need(SAMPLES / "cinc2021"))
    scored = ds.task("scored")
    assert scored.label_names["164889003"] == "AF" and scored.label_names["426783006"] == "NSR"
    assert scored.label_names["713427006|59118001"] == "CRBBB|RBBB"  # a scored pair: both abbreviations
    assert set(scored.label_names) == set(scored.labels)
    assert scored.display("164889003") == "164889003 (AF)"
    everything = ds.task("all")
    assert set(everything.label_names) == set(everything.labels) and all(everything.label_names.values())


def test_display_and_per_class_summary_keep_the_code_as_the_key() -> None:
    assert display_label("NORM", {"NORM": "NORM"}) == "NORM" and display_label("X", None) == "X"
    with pytest.raises(ValueError, match="label_names for labels it does not have"):
        ClassificationTask("t", ["a"], label_names={"b": "B"})
    metrics = {"per_class_auroc": {"164889003": 0.9, "426783006": None}, "per_class_f1": {"164889003": 0.5, "426783006": 0.0},
               "thresholds": {"164889003": 0.3, "426783006": 0.5},
               "ci": {"per_class_auroc/164889003": {"low": 0.8, "high": 0.97}}}
    y = np.array([[1, 0], [0, 0], [1, 0]])
    out = per_class_summary(metrics, ["164889003", "426783006"], y, {"164889003": "AF", "426783006": "NSR"})
    assert out["164889003"] == {"name": "AF", "auroc": 0.9, "auroc_ci": [0.8, 0.97], "f1": 0.5, "threshold": 0.3,
                                "positives": 2}
    assert out["426783006"]["auroc"] is None and out["426783006"]["positives"] == 0


def test_a_cinc_run_shows_names_in_metrics_the_cli_table_and_the_card(tmp_path: Path, tiny_backbone_dir: Path) -> None:
    recipe = Recipe.from_dict({
        "model": {"model_name_or_path": str(tiny_backbone_dir)}, "adaptation": {"method": "linear_probe"},
        "data": {"source": "cinc2021", "path": str(need(SAMPLES / "cinc2021")), "cache_dir": str(tmp_path / "cache")},
        "task": {"name": "all"},
        "training": {"per_device_train_batch_size": 8, "num_train_epochs": 1, "logging_steps": 50,
                     "bootstrap_resamples": 20, "save_strategy": "no"},
        "output": {"output_dir": str(tmp_path / "run")},
    })
    metrics = train(recipe)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["label_names"]["426783006"] == "NSR"  # sinus rhythm: in the sample records' Dx lines
    per_class = saved["test"]["per_class"]
    assert set(per_class) == set(saved["labels"])  # keyed by code
    assert all(per_class[c]["name"] == saved["label_names"][c] for c in per_class)
    assert set(saved["test"]["per_class_auroc"]) == set(saved["labels"])  # metric keys stay codes
    table = per_class_table(metrics).splitlines()
    assert table[0].split() == ["LABEL", "NAME", "AUROC", "[CI]", "F1", "POSITIVES"]
    row = next(line for line in table if line.startswith("426783006 "))
    assert row.split()[1] == "NSR"
    card = build_model_card(tmp_path / "run", "me/cinc", "Edoardo-BS/hubert-ecg-small")
    assert "| label | name | threshold |" in card and "| 426783006 | NSR |" in card
    assert "test AUROC 426783006 (NSR)" in card  # the model-index entry's name carries it too
    assert "426783006 (NSR): 2 positives" in " ".join(saved["test"]["support_warnings"])
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert "426783006" in config["label2id"]  # the id is still the code
