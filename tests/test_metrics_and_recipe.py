"""Metrics on hand-checkable cases, and strict recipe parsing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecg_adapt.tasks import ClassificationTask, multilabel_metrics, single_label_metrics, tune_thresholds
from ecg_adapt.training.recipe import Recipe, RecipeError


def test_macro_auroc_by_hand() -> None:
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    s = np.array([[0.9, 0.2], [0.1, 0.8], [0.8, 0.3], [0.3, 0.4]])
    # class A: positives {0.9, 0.8} all above negatives {0.1, 0.3} -> 1.0
    # class B: positives {0.8, 0.3}, negatives {0.2, 0.4}: pairs won 0.8>0.2, 0.8>0.4, 0.3>0.2 -> 3/4
    m = multilabel_metrics(y, s, ["A", "B"])
    assert m["per_class_auroc"] == {"A": 1.0, "B": 0.75}
    assert m["macro_auroc"] == pytest.approx(0.875)
    # F1 at 0.5: A predicted {0,2} = truth -> 1; B predicted {1} vs truth {1,2} -> 2/3
    assert m["per_class_f1"]["A"] == pytest.approx(1.0) and m["per_class_f1"]["B"] == pytest.approx(2 / 3)


def test_classes_without_both_outcomes_are_left_out_and_reported() -> None:
    y = np.array([[1, 1], [0, 1], [1, 1]])
    s = np.array([[0.9, 0.5], [0.2, 0.5], [0.7, 0.5]])
    m = multilabel_metrics(y, s, ["A", "B"])
    assert m["per_class_auroc"]["B"] is None and m["macro_auroc"] == 1.0
    assert m["classes_without_both_outcomes"] == ["B"]


def test_thresholds_tuned_on_validation_maximise_f1() -> None:
    y = np.array([[1], [1], [0], [0]])
    s = np.array([[0.30], [0.35], [0.2], [0.1]])
    t = tune_thresholds(y, s)
    assert 0.2 < t[0] <= 0.30
    assert multilabel_metrics(y, s, ["A"], t)["per_class_f1"]["A"] == 1.0
    assert multilabel_metrics(y, s, ["A"])["per_class_f1"]["A"] == 0.0  # the default 0.5 misses both


def test_single_label_metrics() -> None:
    m = single_label_metrics(np.array([0, 1, 2, 1]), np.eye(3)[[0, 1, 1, 1]] * 0.8 + 0.05, ["N", "S", "V"])
    assert m["accuracy"] == 0.75


def test_task_encodes_labels_and_rejects_unknown_ones() -> None:
    task = ClassificationTask("t", ["CD", "MI", "NORM"])
    np.testing.assert_array_equal(task.encode([["MI"], ["CD", "NORM"]]), [[0, 1, 0], [1, 0, 1]])
    with pytest.raises(ValueError, match="Unknown label 'XX'"):
        task.encode([["XX"]])


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_misspelt_key_fails_with_a_message_naming_it(tmp_path: Path) -> None:
    p = _write(tmp_path, "training:\n  learning_rte: 1.0e-3\n")
    with pytest.raises(RecipeError, match=r"Unknown recipe key 'training.learning_rte' \(did you mean 'learning_rate'\?\)"):
        Recipe.from_yaml(p)
    with pytest.raises(RecipeError, match=r"Unknown recipe key 'adaptaton' \(did you mean 'adaptation'\?\)"):
        Recipe.from_yaml(_write(tmp_path, "adaptaton:\n  method: lora\n"))


def test_yaml_strings_like_1e_3_become_floats_and_wrong_types_are_named(tmp_path: Path) -> None:
    r = Recipe.from_yaml(_write(tmp_path, "training:\n  learning_rate: 1e-3\n  per_device_train_batch_size: 16\n"))
    assert r.training.learning_rate == 1e-3 and isinstance(r.training.learning_rate, float)
    with pytest.raises(RecipeError, match="'training.per_device_train_batch_size' must be an integer"):
        Recipe.from_yaml(_write(tmp_path, "training:\n  per_device_train_batch_size: sixteen\n"))
    with pytest.raises(RecipeError, match=r"'adaptation.method' must be one of .*lorra.*did you mean 'lora'"):
        Recipe.from_yaml(_write(tmp_path, "adaptation:\n  method: lorra\n"))
    with pytest.raises(RecipeError, match="'training.bf16' must be true or false"):
        Recipe.from_yaml(_write(tmp_path, "training:\n  bf16: maybe\n"))


def test_command_line_overrides(tmp_path: Path) -> None:
    p = _write(tmp_path, "adaptation:\n  method: lora\n")
    r = Recipe.from_yaml(p, ["adaptation.r=16", "training.learning_rate=3e-4", "adaptation.target_modules=[q_proj, v_proj]"])
    assert r.adaptation.r == 16 and r.training.learning_rate == 3e-4
    assert r.adaptation.target_modules == ["q_proj", "v_proj"]
    with pytest.raises(RecipeError, match="section.key=value"):
        Recipe.from_yaml(p, ["lora_r16"])


def test_shipped_recipes_parse() -> None:
    for path in sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml")):
        Recipe.from_yaml(path)


def test_vectorised_metrics_equal_scikit_learn_ties_and_missing_classes_included() -> None:
    # multilabel_metrics / single_label_metrics compute AUROC, AUPRC, F1, kappa and balanced accuracy themselves
    # (bootstrapped 1,000 times per run); they must give scikit-learn's numbers.
    import warnings

    from sklearn.metrics import (average_precision_score, balanced_accuracy_score, cohen_kappa_score, f1_score,
                                 roc_auc_score)

    from ecg_adapt.tasks.metrics import multilabel_metrics, single_label_metrics

    rng = np.random.default_rng(0)
    labels = ["a", "b", "c", "d"]
    for _ in range(100):
        n = int(rng.integers(3, 60))
        y = (rng.random((n, 4)) < rng.random()).astype(int)
        s = np.round(rng.random((n, 4)), int(rng.integers(1, 3)))  # coarse scores: many ties
        m = multilabel_metrics(y, s, labels)
        ok = [c for c in range(4) if 0 < y[:, c].sum() < n]
        for c in range(4):
            expected = roc_auc_score(y[:, c], s[:, c]) if c in ok else None
            assert m["per_class_auroc"][labels[c]] == (None if expected is None else pytest.approx(expected, abs=1e-12))
        if ok:
            assert m["macro_auroc"] == pytest.approx(roc_auc_score(y[:, ok], s[:, ok], average="macro"), abs=1e-12)
            assert m["macro_auprc"] == pytest.approx(average_precision_score(y[:, ok], s[:, ok], average="macro"), abs=1e-12)
        yc = rng.integers(0, int(rng.integers(1, 5)), n)
        single = single_label_metrics(yc, s, labels)
        pred = s.argmax(axis=1)
        every = list(range(4))
        assert single["macro_f1"] == pytest.approx(f1_score(yc, pred, average="macro", labels=every, zero_division=0),
                                                   abs=1e-12)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if single["kappa"] is not None:
                assert single["kappa"] == pytest.approx(cohen_kappa_score(yc, pred, labels=every), abs=1e-12)
            if single["balanced_accuracy"] is not None:
                assert single["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(yc, pred), abs=1e-12)
