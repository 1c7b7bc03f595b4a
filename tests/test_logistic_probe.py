"""The logistic-regression probe on cached embeddings: it beats chance on separable features, equals scikit-learn
run directly (same C chosen on validation, same probabilities), folds into the linear head exactly, and a recipe
with ``training.probe: logistic_regression`` reports the usual metrics.json (intervals included)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ecg_adapt.data.synthetic import make_synthetic_ptbxl
from ecg_adapt.evaluation import load_predictions
from ecg_adapt.tasks import ClassificationTask
from ecg_adapt.tasks.windows import aggregate_windows
from ecg_adapt.training import Recipe, RecipeError, train
from ecg_adapt.training.embeddings import fit_logistic_probe


GRID = [1e-3, 1e-2, 1e-1, 1.0]


def _split(n_records: int, seed: int, multi_label: bool, n_classes: int = 3, windows: int = 2, dim: int = 16):
    """Records with ``windows`` windows each; class c shifts feature c (separable, with noise)."""
    rng = np.random.default_rng(seed)
    if multi_label:
        y = (rng.random((n_records, n_classes)) < 0.4).astype(np.float32)
        shift = y
    else:
        y = rng.integers(0, n_classes, n_records)
        shift = np.eye(n_classes)[y]
    owner = np.repeat(np.arange(n_records), windows)
    x = rng.normal(0, 1, (n_records * windows, dim))
    x[:, :n_classes] += 2.5 * shift[owner]
    return SimpleNamespace(embeddings=torch.from_numpy(x.astype(np.float32)), labels=y, row_record=owner,
                           n_records=n_records)


def _sklearn_direct(train, c: float, multi_label: bool):
    lr = LogisticRegression(C=c, max_iter=1000, random_state=0)
    x = train.embeddings.numpy().astype(np.float64)
    y = train.labels[train.row_record]
    return make_pipeline(StandardScaler(), OneVsRestClassifier(lr) if multi_label else lr).fit(x, y.astype(int) if multi_label else y)


def _records(split, window_probs):
    return aggregate_windows(window_probs, split.row_record, n_records=split.n_records)


@pytest.mark.parametrize("multi_label,n_classes", [(True, 3), (False, 3), (False, 2)])
def test_probe_beats_chance_and_equals_sklearn_run_directly(multi_label: bool, n_classes: int) -> None:
    labels = [f"c{i}" for i in range(n_classes)]
    task = ClassificationTask("toy", labels, "multi_label_classification" if multi_label else "single_label_classification")
    train_set, val_set, test_set = (_split(n, s, multi_label, n_classes) for n, s in ((200, 0), (80, 1), (80, 2)))
    out = fit_logistic_probe(train_set, val_set, task, "macro_auroc", True, GRID)
    # the C that scikit-learn itself scores best on the validation records
    scores = []
    for c in GRID:
        p = _records(val_set, _sklearn_direct(train_set, c, multi_label).predict_proba(val_set.embeddings.numpy().astype(np.float64)))
        scores.append(task.metrics(val_set.labels, p)["macro_auroc"])
    assert out["C"] == GRID[int(np.argmax(scores))]
    assert [h["val_macro_auroc"] for h in out["history"]] == pytest.approx(scores)
    direct = _sklearn_direct(train_set, out["C"], multi_label)
    x_test = test_set.embeddings.numpy().astype(np.float64)
    expected = direct.predict_proba(x_test)
    assert np.allclose(out["pipeline"].predict_proba(x_test), expected, atol=1e-10)
    # folded into one linear layer on the raw features: the head the saved classifier carries
    logits = x_test @ out["weight"].T + out["bias"]
    folded = 1 / (1 + np.exp(-logits)) if multi_label else np.exp(logits - logits.max(1, keepdims=True))
    if not multi_label:
        folded /= folded.sum(1, keepdims=True)
    assert np.allclose(folded, expected, atol=1e-8)
    auroc = task.metrics(test_set.labels, _records(test_set, expected))["macro_auroc"]
    assert auroc > 0.9  # chance is 0.5


def test_a_class_constant_in_training_keeps_the_probabilities_of_sklearn() -> None:
    task = ClassificationTask("toy", ["a", "b", "never"])
    train_set, val_set = _split(100, 0, True), _split(40, 1, True)
    train_set.labels[:, 2] = 0  # no positive: one-vs-rest predicts exactly 0 for it
    out = fit_logistic_probe(train_set, val_set, task, "macro_auroc", True, [1.0])
    x = val_set.embeddings.numpy().astype(np.float64)
    logits = x @ out["weight"].T + out["bias"]
    assert np.allclose(1 / (1 + np.exp(-logits)), out["pipeline"].predict_proba(x), atol=1e-9)


def test_the_probe_refuses_regression_frames_and_an_empty_grid() -> None:
    from ecg_adapt.tasks import RegressionTask

    s = _split(10, 0, True)
    with pytest.raises(ValueError, match="classification"):
        fit_logistic_probe(s, s, RegressionTask("age", ["age"]), "mae", False, GRID)
    with pytest.raises(ValueError, match="empty"):
        fit_logistic_probe(s, s, ClassificationTask("t", ["a", "b", "c"]), "macro_auroc", True, [])
    frames = SimpleNamespace(**{**vars(s), "embeddings": torch.zeros(20, 4, 16)})
    with pytest.raises(ValueError, match="pooled"):
        fit_logistic_probe(frames, frames, ClassificationTask("t", ["a", "b", "c"]), "macro_auroc", True, GRID)
    # a metric the task does not report fails, naming the key (it used to pick the grid's first C silently)
    with pytest.raises(RecipeError, match="metric_for_best_model 'macro_aurc'.*did you mean 'macro_auroc'"):
        fit_logistic_probe(s, s, ClassificationTask("t", ["a", "b", "c"]), "macro_aurc", True, GRID)


def test_recipe_keys_of_the_probe_are_checked_by_name() -> None:
    with pytest.raises(RecipeError, match="'adaptation.method' must be linear_probe"):
        Recipe.from_dict({"adaptation": {"method": "lora"}, "training": {"probe": "logistic_regression"}})
    with pytest.raises(RecipeError, match="'model.pooling' must be mean"):
        Recipe.from_dict({"adaptation": {"method": "linear_probe"}, "model": {"pooling": "attention"},
                          "training": {"probe": "logistic_regression"}})
    with pytest.raises(RecipeError, match="logistic_regression_c"):
        Recipe.from_dict({"adaptation": {"method": "linear_probe"},
                          "training": {"probe": "logistic_regression", "logistic_regression_c": [0.0]}})
    with pytest.raises(RecipeError, match="training.probe"):
        Recipe.from_dict({"training": {"probe": "logistic"}})


def test_a_logistic_regression_run_writes_the_usual_metrics_and_a_working_classifier(tmp_path: Path, tiny_backbone_dir: Path) -> None:
    data = make_synthetic_ptbxl(tmp_path / "ptbxl", n_records=120, progress=False)
    recipe = Recipe.from_dict({
        "model": {"model_name_or_path": str(tiny_backbone_dir)}, "adaptation": {"method": "linear_probe"},
        "data": {"path": str(data), "cache_dir": str(tmp_path / "cache")}, "task": {"name": "superdiagnostic"},
        "training": {"probe": "logistic_regression", "logistic_regression_c": GRID, "bootstrap_resamples": 100},
        "output": {"output_dir": str(tmp_path / "run")},
    })
    metrics = train(recipe)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["selection"]["selected"] == "logistic_regression" and saved["selection"]["C"] in GRID
    assert [h["C"] for h in saved["history"]] == GRID
    test = saved["test"]
    assert {"macro_auroc", "macro_auprc", "macro_f1", "per_class_auroc", "ci", "per_class"} <= set(test)
    assert test["ci"]["macro_auroc"]["low"] <= test["macro_auroc"] <= test["ci"]["macro_auroc"]["high"]
    assert metrics["test"]["macro_auroc"] > 0.6  # learnable synthetic classes; chance is 0.5
    # the saved classifier (the folded head, a normal linear head) predicts what the run evaluated
    from ecg_adapt.data import open_source
    from ecg_adapt.inference import Predictor

    pred = load_predictions(tmp_path / "run" / "predictions" / "test.npz")
    source = open_source("ptbxl", data)
    ids = source.split_ids(source.task("superdiagnostic"), "test")[:6]
    outputs = Predictor.from_pretrained(tmp_path / "run" / "model").predict([rec for _, rec in source.iter_records(ids)])
    row = {str(r): i for i, r in enumerate(pred.record_ids)}
    for rid, p in zip(ids, outputs):
        np.testing.assert_allclose([p.probabilities[n] for n in pred.labels], pred.y_score[row[str(rid)]], atol=1e-5)
