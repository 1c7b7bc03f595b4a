"""``compare_runs`` on fixed predictions: shared records only, paired differences, tied ranks, the table and
the files it reads (no pickle)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ecg_adapt.evaluation import Predictions, compare_runs, load_predictions, plot_curves, save_predictions

LABELS = ["CD", "HYP", "MI", "NORM", "STTC"]


def _truth(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, len(LABELS))) < 0.3).astype(int)


def _run(tmp_path, name: str, y: np.ndarray, noise: float, seed: int, ids=None, drop: int = 0) -> str:
    rng = np.random.default_rng(seed)
    score = 1 / (1 + np.exp(-(2 * y - 1) * 2 + rng.normal(0, noise, y.shape)))
    ids = np.array([f"rec{i:04d}" for i in range(len(y))]) if ids is None else ids
    run = tmp_path / name
    save_predictions(run / "predictions" / "test.npz",
                     Predictions(ids[drop:], y[drop:], score[drop:], LABELS, "multi_label_classification"))
    (run / "metrics.json").write_text(json.dumps({"primary_metric": "macro_auroc"}))
    return str(run)


def test_predictions_roundtrip_without_pickle(tmp_path):
    y = _truth(20)
    p = Predictions([f"r{i}" for i in range(20)], y, y * 0.9, LABELS, "multi_label_classification", np.full(5, 0.4))
    save_predictions(tmp_path / "p.npz", p)
    q = load_predictions(tmp_path / "p.npz")
    assert q.labels == LABELS and np.array_equal(q.y_true, y) and np.allclose(q.thresholds, 0.4)
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed into place
    with np.load(tmp_path / "p.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_duplicate_record_ids_are_refused():
    with pytest.raises(ValueError, match="not unique"):
        Predictions(["a", "a"], np.zeros((2, 5)), np.zeros((2, 5)), LABELS, "multi_label_classification")


def test_clearly_better_run_ranks_first_alone_and_close_runs_tie(tmp_path):
    y = _truth(400)
    good = _run(tmp_path, "good", y, noise=1.0, seed=1)
    good_twin = _run(tmp_path, "good_twin", y, noise=1.0, seed=2)  # same quality, other noise
    bad = _run(tmp_path, "bad", y, noise=4.0, seed=3)
    table = compare_runs([bad, good_twin, good], n_resamples=200)
    by_name = {r.name: r for r in table.rows}
    assert table.rows[0].rank == 1 and table.rows[0].best
    assert by_name["good"].rank == by_name["good_twin"].rank == 1
    assert by_name["bad"].rank == 2
    assert by_name["bad"].difference_to_best.high < 0 and by_name["bad"].p_value < 0.05
    md = table.to_markdown()
    assert "**" in md.splitlines()[4] and "| 2 | bad |" in md
    csv_lines = table.to_csv().splitlines()
    assert csv_lines[0].startswith("rank,run,path,metric") and len(csv_lines) == 4


def test_epochs_of_one_recording_are_resampled_together(tmp_path):
    from ecg_adapt.tasks.bootstrap import bootstrap_interval
    from ecg_adapt.tasks.metrics import multilabel_metrics

    y = _truth(360)
    ids = np.array([f"night{i // 60}/{i % 60:02d}" for i in range(360)])  # 6 recordings of 60 epochs
    row = compare_runs([_run(tmp_path, "a", y, noise=1.0, seed=1, ids=ids)], n_resamples=100).rows[0]
    score = load_predictions(tmp_path / "a" / "predictions" / "test.npz").y_score
    nights = [u.split("/")[0] for u in ids]
    expected = bootstrap_interval(lambda r: multilabel_metrics(y[r], score[r], LABELS)["macro_auroc"], 360, nights, 100)
    assert (row.metric.low, row.metric.high) == pytest.approx((expected.low, expected.high))


def test_only_shared_records_are_scored(tmp_path):
    y = _truth(300)
    a = _run(tmp_path, "a", y, noise=1.0, seed=1)
    b = _run(tmp_path, "b", y, noise=1.0, seed=2, drop=100)  # predicted only 200 of the 300 records
    table = compare_runs([a, b], n_resamples=50)
    assert table.n_shared_records == 200


def test_runs_of_different_tasks_or_records_are_refused(tmp_path):
    y = _truth(50)
    a = _run(tmp_path, "a", y, 1.0, 1)
    other = tmp_path / "other"
    save_predictions(other / "predictions" / "test.npz",
                     Predictions([f"x{i}" for i in range(50)], y, y * 1.0, LABELS, "multi_label_classification"))
    with pytest.raises(ValueError, match="share no test record"):
        compare_runs([a, str(other)], n_resamples=10)
    wrong = tmp_path / "wrong"
    save_predictions(wrong / "predictions" / "test.npz",
                     Predictions([f"rec{i:04d}" for i in range(50)], y[:, :2], y[:, :2] * 1.0, ["A", "B"],
                                 "multi_label_classification"))
    with pytest.raises(ValueError, match="different tasks"):
        compare_runs([a, str(wrong)], n_resamples=10)
    with pytest.raises(FileNotFoundError, match="predictions"):
        compare_runs([a, str(tmp_path / "missing")])


def test_curves_png_is_written(tmp_path):
    run = _run(tmp_path, "a", _truth(60), 1.0, 1)
    out = plot_curves(run, tmp_path / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_fast_macro_auroc_equals_the_metrics_dict(tmp_path):
    from ecg_adapt.evaluation import metric_value
    from ecg_adapt.tasks.metrics import multilabel_metrics

    y = _truth(80)
    y[:, 1] = 0  # a class without positives is left out of both
    p = load_predictions(_run(tmp_path, "a", y, 1.0, 1) + "/predictions/test.npz")
    full = multilabel_metrics(p.y_true, p.y_score, LABELS)
    assert metric_value(p, "macro_auroc") == pytest.approx(full["macro_auroc"])
    assert metric_value(p, "macro_auprc") == pytest.approx(full["macro_auprc"])
    assert metric_value(p, "macro_f1") == pytest.approx(full["macro_f1"])
    assert metric_value(p, "per_class_auroc/MI") == pytest.approx(full["per_class_auroc"]["MI"])


def test_compare_command_writes_the_table_and_plots_and_refuses_mismatched_runs(tmp_path, capsys):
    from ecg_adapt.cli import main

    y = _truth(120)
    a, b = _run(tmp_path, "a", y, 1.0, 1), _run(tmp_path, "b", y, 3.0, 2)
    assert main(["compare", a, b, "--resamples", "50", "--out", str(tmp_path / "cmp"), "--plots"]) == 0
    out = capsys.readouterr().out
    assert "| 1 | a |" in out and "macro_auroc on 120 shared test records" in out
    assert (tmp_path / "cmp" / "comparison.csv").read_text().startswith("rank,run")
    assert (tmp_path / "cmp" / "curves_a.png").stat().st_size > 10_000
    other = tmp_path / "other"
    save_predictions(other / "predictions" / "test.npz",
                     Predictions(["z1", "z2"], y[:2], y[:2] * 1.0, LABELS, "multi_label_classification"))
    assert main(["compare", a, str(other)]) == 2
    assert "share no test record" in capsys.readouterr().err
