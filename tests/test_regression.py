"""Regression and binary targets: metrics equal sklearn/scipy with NaN targets masked, the loss ignores records
without a value, standardisation round-trips to the target's unit, PTB-XL/CinC expose age and sex, a recipe with
``task.name: age`` trains and selects by the lowest validation MAE, and ``compare`` ranks the lowest MAE first."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import pearsonr
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from ecg_adapt.data.cinc import CinC2021
from ecg_adapt.data.ptbxl import PTBXL
from ecg_adapt.data.synthetic import make_synthetic_ptbxl
from ecg_adapt.evaluation import Predictions, compare_runs, load_predictions, save_predictions
from ecg_adapt.models.classifier import ECGClassifierConfig, head_loss_and_logits, regression_loss
from ecg_adapt.tasks import RegressionTask, lower_is_better, regression_metrics, task_from_dict
from ecg_adapt.training import Recipe, RecipeError, train
from ecg_adapt.training.selection import BestTracker

from conftest import SAMPLES, need


def _noisy(n: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = rng.normal(60, 12, (n, 2))
    p = t + rng.normal(0, 6, (n, 2))
    t[::7, 0] = np.nan  # records without the first target
    t[::5, 1] = np.nan
    return t, p


def test_regression_metrics_equal_sklearn_and_scipy_on_the_records_with_a_value() -> None:
    t, p = _noisy()
    m = regression_metrics(t, p, ["age", "weight"])
    for c, name in enumerate(["age", "weight"]):
        keep = np.isfinite(t[:, c])
        assert m["per_target_mae"][name] == pytest.approx(mean_absolute_error(t[keep, c], p[keep, c]))
        assert m["per_target_rmse"][name] == pytest.approx(np.sqrt(mean_squared_error(t[keep, c], p[keep, c])))
        assert m["per_target_r2"][name] == pytest.approx(r2_score(t[keep, c], p[keep, c]))
        assert m["per_target_pearson_r"][name] == pytest.approx(pearsonr(t[keep, c], p[keep, c])[0])
        assert m["n_samples_per_target"][name] == int(keep.sum())
    assert m["mae"] == pytest.approx(np.mean(list(m["per_target_mae"].values())))
    assert (m["n_samples"], m["n_missing"]) == (int(np.isfinite(t[:, 0]).sum()), int(np.isnan(t[:, 0]).sum()))
    one = regression_metrics(t[:, :1], p[:, :1], ["age"])
    assert "per_target_mae" not in one and one["mae"] == m["per_target_mae"]["age"]
    assert regression_metrics(np.full((3, 1), 5.0), np.array([[4.0], [5.0], [6.0]]), ["age"])["r2"] is None
    with pytest.raises(ValueError, match="NaN"):
        regression_metrics(t[:, :1], np.full((len(t), 1), np.nan), ["age"])


def test_lower_is_better_drives_model_selection_and_compare_direction() -> None:
    assert lower_is_better("mae") and lower_is_better("eval_rmse") and lower_is_better("per_target_mae/age")
    assert not lower_is_better("r2") and not lower_is_better("macro_auroc") and not lower_is_better("pearson_r")
    tracker = BestTracker("mae")
    assert tracker.greater_is_better is False
    assert [tracker.update(v, step=s, epoch=s) for s, v in enumerate([9.0, 7.5, 8.0, 7.0])] == [True, True, False, True]
    assert tracker.best_epoch == 3
    assert BestTracker("mae", greater_is_better=True).greater_is_better is True  # an explicit choice is kept


def test_the_loss_masks_records_without_a_value() -> None:
    out = torch.tensor([[1.0], [2.0], [3.0]], requires_grad=True)
    target = torch.tensor([[2.0], [float("nan")], [5.0]])
    loss = regression_loss(out, target, "mse")
    assert loss.item() == pytest.approx((1.0 + 4.0) / 2)  # the NaN record is neither an error nor a count
    loss.backward()
    assert out.grad[1].item() == 0.0 and torch.isfinite(out.grad).all()
    assert regression_loss(out, target, "l1").item() == pytest.approx((1.0 + 2.0) / 2)
    none = regression_loss(out, torch.full((3, 1), float("nan")), "mse")
    assert none.item() == 0.0 and none.requires_grad  # a batch without any value: no NaN loss, no step


def test_standardised_targets_train_on_z_scores_and_the_model_outputs_the_unit() -> None:
    config = ECGClassifierConfig(problem_type="regression", num_labels=1, target_mean=[60.0], target_std=[10.0],
                                 regression_loss="mse")
    raw = torch.tensor([[0.5], [-1.0]])
    loss, values = head_loss_and_logits(raw, torch.tensor([[65.0], [40.0]]), config)
    assert values.tolist() == [[65.0], [50.0]]  # years, not z-scores
    assert loss.item() == pytest.approx(((0.5 - 0.5) ** 2 + (-1.0 + 2.0) ** 2) / 2)
    with pytest.raises(ValueError, match="regression_loss"):
        ECGClassifierConfig(problem_type="regression", regression_loss="huber")
    with pytest.raises(ValueError, match="together"):
        ECGClassifierConfig(problem_type="regression", target_mean=[1.0])


def test_regression_task_encodes_stratifies_and_roundtrips() -> None:
    task = RegressionTask("ptbxl/age", ["age"], units={"age": "years"})
    y = task.encode([[30.0], [float("nan")], [50.0], [70.0], [None]])
    assert np.isnan(y[[1, 4], 0]).all() and y[3, 0] == 70.0
    strata = task.stratification_labels(task.encode([[float(a)] for a in range(100)] + [[None]]))
    assert sorted(np.bincount(strata).tolist()) == [1, 20, 20, 20, 20, 20]  # quintiles, missing values apart
    cfg = task.head_config(y)
    assert cfg["target_mean"] == pytest.approx([50.0]) and cfg["target_std"] == pytest.approx([np.std([30, 50, 70])])
    assert task_from_dict(json.loads(json.dumps(task.to_dict()))) == task
    with pytest.raises(ValueError, match="not a number"):
        task.encode([["old"]])
    with pytest.raises(ValueError, match="no training record"):
        task.head_config(np.full((3, 1), np.nan))


# ------------------------------------------------------------------------------------------ sources
@pytest.fixture(scope="module")
def ptbxl_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic PTB-XL whose age follows the superclass (NORM 30, else 70, plus noise) and where every tenth
    record has PTB-XL's anonymised age 300: a target a probe can learn, with missing values."""
    root = make_synthetic_ptbxl(tmp_path_factory.mktemp("ptbxl"), n_records=120, progress=False)
    db = pd.read_csv(root / "ptbxl_database.csv")
    norm = db["scp_codes"].apply(lambda s: "NORM" in ast.literal_eval(s))
    db["age"] = np.where(norm, 30.0, 70.0) + np.random.default_rng(0).normal(0, 3, len(db))
    db.loc[db.index[::10], "age"] = 300
    db.loc[db.index[1::10], "sex"] = np.nan
    db.to_csv(root / "ptbxl_database.csv", index=False)
    return root


def test_ptbxl_age_sex_and_numeric_columns_are_targets(ptbxl_root: Path) -> None:
    ds = PTBXL(ptbxl_root)
    age = ds.task("age")
    assert isinstance(age, RegressionTask) and age.labels == ["age"] and age.units == {"age": "years"}
    values = ds.label_sets("age")
    assert len(values) == len(ds)  # every record stays; age 300 ("over 89") is missing, not 300 years
    assert np.isnan(age.encode([values[i] for i in ds.database.index[::10]])).all()
    report = ds.target_report("age")
    assert report["age"] == {"with_value": 108, "missing": 12, "over_89_coded_300": 12}
    sex = ds.task("sex")
    assert sex.binary and sex.labels == ["female"] and sex.problem_type == "multi_label_classification"
    sets = ds.label_sets("sex")
    assert len(sets) == len(ds) - 12 and set(map(tuple, sets)) == {("female",), ()}
    assert ds.target_report("sex")["missing"] == 12
    both = ds.task("age+weight")
    assert both.labels == ["age", "weight"] and both.num_labels == 2
    with pytest.raises(ValueError, match="did you mean 'age'"):
        ds.task("aeg")
    with pytest.raises(ValueError, match="Unknown PTB-XL task 'strat_fold'"):
        ds.task("strat_fold")  # a split column is no target
    assert "infarction_stadium2" not in ds.regression_targets()  # empty in this file: read as float, still no target


def test_cinc_header_age_and_sex_are_targets() -> None:
    ds = CinC2021(need(SAMPLES / "cinc2021"))
    age = ds.task("age")
    values = ds.label_sets("age")
    assert isinstance(age, RegressionTask) and len(values) == len(ds)
    assert values["E07500"] == [78.0]  # "# Age: 78" in the real header
    sex = ds.label_sets("sex")
    headers = {p.stem: p.read_text() for p in (SAMPLES / "cinc2021").glob("*.hea")}
    for rid, labels in sex.items():
        assert (labels == ["female"]) == ("# Sex: Female" in headers[rid]), rid
    assert sum(1 for v in sex if v) == 19  # 19 of the 30 sample headers say Female
    # every record with a sex is in one split (records without a Dx line too: sex needs no diagnosis)
    assert sorted(r for s in ("train", "validation", "test") for r in ds.split_ids(ds.task("sex"), s)) == sorted(sex.index)
    with pytest.raises(ValueError, match="did you mean 'sex'"):
        ds.task("sx")


# ------------------------------------------------------------------------------------------ training
def _recipe(out: Path, root: Path, backbone: Path, task: dict, **training) -> Recipe:
    return Recipe.from_dict({
        "model": {"model_name_or_path": str(backbone)}, "adaptation": {"method": "linear_probe"},
        "data": {"path": str(root), "cache_dir": str(out.parent / "cache")}, "task": task,
        "training": {"per_device_train_batch_size": 16, "num_train_epochs": 6, "learning_rate": 3e-2,
                     "logging_steps": 50, "bootstrap_resamples": 100, "save_strategy": "no", **training},
        "output": {"output_dir": str(out)},
    })


def test_age_regression_trains_masks_missing_ages_and_saves_a_model_that_predicts_years(
    ptbxl_root: Path, tiny_backbone_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "age"
    metrics = train(_recipe(run, ptbxl_root, tiny_backbone_dir, {"name": "age"}))
    test = metrics["test"]
    assert metrics["primary_metric"] == "mae" and {"mae", "rmse", "r2", "pearson_r"} <= set(test)
    assert test["ci"]["mae"]["low"] <= test["mae"] <= test["ci"]["mae"]["high"]
    # age 300 records: kept in the splits, masked, and counted
    missing = metrics["data"]["records_without_target"]
    assert sum(m["age"] for m in missing.values()) == 12 and metrics["data"]["target"]["age"]["over_89_coded_300"] == 12
    assert test["n_missing"] == missing["test"]["age"] and test["n_samples"] + test["n_missing"] == metrics["data"]["records"]["test"]
    sel = metrics["selection"]
    assert sel["metric_for_best_model"] == "mae" and sel["greater_is_better"] is False
    best = min(metrics["history"], key=lambda h: h["val_mae"])
    assert sel["best_step"] == best["step"]  # the lowest validation MAE, not the highest
    # predictions are years: the age of a NORM record (30) and of the others (70) are told apart
    pred = load_predictions(run / "predictions" / "test.npz")
    keep = np.isfinite(pred.y_true[:, 0])
    young = pred.y_score[keep & (pred.y_true[:, 0] < 50), 0].mean()
    old = pred.y_score[keep & (pred.y_true[:, 0] >= 50), 0].mean()
    assert 20 < young < old < 80, (young, old)
    assert test["mae"] < np.abs(pred.y_true[keep, 0] - np.nanmean(pred.y_true[keep, 0])).mean()  # beats the mean
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["target_std"][0] > 5
    task = json.loads((run / "model" / "task.json").read_text())["task"]
    assert task["problem_type"] == "regression" and task["labels"] == ["age"]
    # the saved model, reloaded for prediction, gives the run's test values in years (no sigmoid, no threshold)
    from ecg_adapt.inference import Predictor

    ds = PTBXL(ptbxl_root)
    ids = ds.split_ids(ds.task("age"), "test")[:5]
    outputs = Predictor.from_pretrained(run / "model").predict([rec for _, rec in ds.iter_records(ids)])
    row = {str(r): i for i, r in enumerate(pred.record_ids)}
    for rid, p in zip(ids, outputs):
        assert p.predicted == [] and p.probabilities["age"] == pytest.approx(pred.y_score[row[str(rid)], 0], abs=1e-3)
    # the card calls it a regression model and leads with the test MAE and its interval, not a macro AUROC
    from ecg_adapt.hub.card import build_model_card

    card = str(build_model_card(run, repo_id="me/age", base_model=str(tiny_backbone_dir), license="other"))
    assert f"regression model for **{metrics['task']}**" in card and "AUROC" not in card
    assert f"Test MAE **{test['mae']:.4f}**" in card and "| age |" in card


def test_sweep_tables_and_curves_read_a_regression_metric(tmp_path: Path) -> None:
    import yaml

    from ecg_adapt.training.sweep import SweepSpec, result_row, sweep_curves, write_results

    spec = SweepSpec.from_dict({"recipe": "hubert_ecg_linear_probe_ptbxl_age", "output_root": str(tmp_path),
                                "grid": {"data.train_fraction": [0.5, 1.0]}})
    rows = []
    for cell, mae in zip(spec.cells(), (9.0, 7.0)):
        cell.output_dir.mkdir(parents=True)
        (cell.output_dir / "metrics.json").write_text(json.dumps({
            "primary_metric": "mae", "test": {"mae": mae, "r2": 0.3, "ci": {"mae": {"low": mae - 1, "high": mae + 1}}}}))
        (cell.output_dir / "recipe.yaml").write_text(yaml.safe_dump(spec.cell_recipe(cell).to_dict()))
        rows.append(result_row(spec, cell, "done"))
    assert [(r["metric"], r["test"], r["ci_low"]) for r in rows] == [("mae", 9.0, 8.0), ("mae", 7.0, 6.0)]
    write_results(tmp_path, rows)
    metric, points = sweep_curves(tmp_path)
    assert metric == "mae" and list(points.values())[0] == {0.5: [9.0], 1.0: [7.0]}


def test_sex_is_a_single_logit_binary_task_scored_with_auroc(ptbxl_root: Path, tiny_backbone_dir: Path, tmp_path: Path) -> None:
    metrics = train(_recipe(tmp_path / "sex", ptbxl_root, tiny_backbone_dir, {"name": "sex"}, num_train_epochs=1))
    assert metrics["labels"] == ["female"] and metrics["primary_metric"] == "macro_auroc"
    assert set(metrics["test"]["per_class_auroc"]) == {"female"}
    assert metrics["data"]["target"]["missing"] == 12
    config = json.loads((tmp_path / "sex" / "model" / "config.json").read_text())
    assert len(config["id2label"]) == 1 and config["problem_type"] == "multi_label_classification"  # one logit


def test_unknown_targets_and_misplaced_regression_keys_name_the_recipe_key(
    ptbxl_root: Path, tiny_backbone_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(RecipeError, match=r"task.name: .*did you mean 'age'"):
        train(_recipe(tmp_path / "a", ptbxl_root, tiny_backbone_dir, {"name": "agee"}))
    with pytest.raises(RecipeError, match="task.regression_loss is for regression targets"):
        train(_recipe(tmp_path / "b", ptbxl_root, tiny_backbone_dir, {"name": "superdiagnostic", "regression_loss": "l1"}))
    with pytest.raises(RecipeError, match="task.regression_loss"):
        Recipe.from_dict({"task": {"name": "age", "regression_loss": "huber"}})


def test_compare_ranks_the_lowest_mae_first(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(60, 12, (300, 1))
    y[::9] = np.nan
    runs = []
    for name, noise in (("rough", 12.0), ("close", 3.0), ("close_twin", 3.0)):
        run = tmp_path / name
        save_predictions(run / "predictions" / "test.npz",
                         Predictions([f"r{i}" for i in range(300)], y, np.nan_to_num(y, nan=60.0) + rng.normal(0, noise, y.shape),
                                     ["age"], "regression"))
        (run / "metrics.json").write_text(json.dumps({"primary_metric": "mae"}))
        runs.append(str(run))
    table = compare_runs(runs, n_resamples=200)
    by_name = {r.name: r for r in table.rows}
    assert table.metric == "mae" and table.rows[0].name in ("close", "close_twin")
    assert by_name["close"].rank == by_name["close_twin"].rank == 1 and by_name["rough"].rank == 2
    assert by_name["rough"].difference_to_best.low > 0  # its MAE is significantly higher
    assert "lower is better" in table.to_markdown()
