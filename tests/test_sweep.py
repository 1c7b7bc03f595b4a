"""Label-efficiency sweeps: stratified nested train subsets, and `ecg-adapt sweep` (grid, resume, table, plot)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from ecg_adapt.cli import main
from ecg_adapt.data.synthetic import make_synthetic_ptbxl
from ecg_adapt.demo import write_embedded_backbone
from ecg_adapt.tasks.subset import stratified_order, stratified_subset
from ecg_adapt.training import Recipe, RecipeError
from ecg_adapt.training.sweep import SweepError, SweepSpec, run_sweep

from conftest import TINY_HUBERT, free_port


# ------------------------------------------------------------------------------------------- stratified subsets
def _multilabel(n: int = 2000, seed: int = 1) -> np.ndarray:
    prevalence = np.array([0.3, 0.1, 0.02, 0.5, 0.004])
    return (np.random.default_rng(seed).random((n, prevalence.size)) < prevalence).astype(np.float32)


def _rows(ids: list[str]) -> list[int]:
    return [int(i[1:]) for i in ids]


def test_multilabel_subset_keeps_label_shares_and_every_class_with_a_positive() -> None:
    y = _multilabel()
    ids = [f"r{i}" for i in range(len(y))]
    full = y.sum(0)
    for fraction in (0.01, 0.1, 0.5):
        sub = stratified_subset(ids, y, fraction, seed=0)
        assert len(sub) == round(fraction * len(ids))
        got = y[_rows(sub)].sum(0)
        assert (got >= 1).all(), (fraction, got)  # the 8-positive class survives even at 1 % (20 records)
        # each common label keeps its share within a few records (a random draw of 20 misses by far more often)
        common = full >= 100
        assert np.all(np.abs(got[common] - full[common] * fraction) <= 2 + 0.05 * full[common] * fraction), (fraction, got)


def test_single_label_subset_keeps_class_proportions() -> None:
    classes = np.array([0] * 600 + [1] * 300 + [2] * 90 + [3] * 10)
    ids = [f"r{i}" for i in range(len(classes))]
    sub = stratified_subset(ids, classes, 0.1, seed=3)
    counts = np.bincount(classes[_rows(sub)], minlength=4)
    assert counts.tolist() == [60, 30, 9, 1]


def test_subsets_are_nested_and_deterministic_in_the_seed() -> None:
    y = _multilabel(500)
    ids = [f"r{i}" for i in range(len(y))]
    for seed in (0, 7):
        sizes = [set(stratified_subset(ids, y, f, seed)) for f in (0.01, 0.05, 0.1, 0.2, 0.5, 1.0)]
        assert all(a <= b for a, b in zip(sizes, sizes[1:]))  # 1 % inside 5 % inside ... inside the whole split
        assert stratified_subset(ids, y, 0.1, seed) == stratified_subset(ids, y, 0.1, seed)
    assert set(stratified_subset(ids, y, 0.1, 0)) != set(stratified_subset(ids, y, 0.1, 1))
    order = stratified_order(y, 0)
    assert sorted(order.tolist()) == list(range(len(y)))  # a ranking of every record, each once
    assert stratified_subset(ids, y, 1.0, 0) == ids


def test_subset_refuses_bad_fractions_and_mismatched_labels() -> None:
    ids = ["a", "b", "c"]
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
            stratified_subset(ids, np.array([0, 1, 0]), bad)
    with pytest.raises(ValueError, match="3 ids but labels for 2"):
        stratified_subset(ids, np.array([0, 1]), 0.5)
    with pytest.raises(ValueError, match="empty split"):
        stratified_subset([], np.zeros((0, 2)), 0.5)
    assert len(stratified_subset(ids, np.array([0, 1, 0]), 0.01)) == 1  # at least one record


def test_recipe_checks_the_train_fraction_range_by_key() -> None:
    with pytest.raises(RecipeError, match=r"'data.train_fraction' must be in \(0, 1\], got 0.0"):
        Recipe.from_dict({"data": {"train_fraction": 0}})
    r = Recipe.from_dict({"data": {"train_fraction": "1e-2", "train_fraction_seed": 3}})
    assert (r.data.train_fraction, r.data.train_fraction_seed) == (0.01, 3)


# ------------------------------------------------------------------------------------------------------ sweeps
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny backbones, PTB-XL-layout data and a tiny base recipe (2 steps a run)."""
    root = tmp_path_factory.mktemp("sweepworld")
    a = write_embedded_backbone(root / "tiny_a", dict(TINY_HUBERT))
    b = write_embedded_backbone(root / "tiny_b", dict(TINY_HUBERT, hidden_size=16, num_attention_heads=2,
                                                      intermediate_size=32))
    data = make_synthetic_ptbxl(root / "ptbxl", n_records=60, progress=False)
    base = root / "base.yaml"
    base.write_text(yaml.safe_dump({
        "model": {"model_name_or_path": str(a)},
        "adaptation": {"method": "lora", "r": 2},
        "data": {"path": str(data), "cache_dir": str(root / "cache"), "max_records_per_split": 20},
        "task": {"name": "superdiagnostic"},
        "training": {"max_steps": 2, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 16,
                     "eval_strategy": "no", "logging_steps": 1, "warmup_ratio": 0.0},
    }))
    return {"a": a, "b": b, "data": data, "base": base, "root": root}


def _sweep_file(world: dict[str, Path], tmp_path: Path, **extra) -> Path:
    spec = {
        "recipe": str(world["base"]),
        "output_root": str(tmp_path / "sweep"),
        "grid": {
            "model.model_name_or_path": [str(world["a"]), str(world["b"])],
            "adaptation.method": ["linear_probe", "lora"],
            "data.train_fraction": [0.5, 1.0],
        },
        "overrides": {"training.seed": 0},
        **extra,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


class Interrupted(BaseException):
    """Stands for a kill: not an Exception, so the sweep does not catch it as a failing cell."""


def test_a_2x2x2_sweep_resumes_after_a_kill_and_skips_finished_cells(world: dict[str, Path], tmp_path: Path) -> None:
    from ecg_adapt.training import train

    spec = SweepSpec.from_yaml(_sweep_file(world, tmp_path))
    root = tmp_path / "sweep"
    calls: list[tuple[str, str | None]] = []

    def killed_at_fourth(recipe: Recipe, **kw):
        if len(calls) == 3:
            raise Interrupted()
        calls.append((Path(recipe.output.output_dir).name, recipe.training.resume_from_checkpoint))
        return train(recipe, **kw)

    with pytest.raises(Interrupted):
        run_sweep(spec, train_fn=killed_at_fourth)
    first = [name for name, _ in calls]
    assert len(first) == 3 and all((root / n / "metrics.json").is_file() for n in first)
    rows = list(csv.DictReader((root / "sweep_results.csv").open()))
    assert len(rows) == 8 and [r["status"] for r in rows].count("done") == 3  # the table was written per cell

    calls.clear()

    def counted(recipe: Recipe, **kw):
        calls.append((Path(recipe.output.output_dir).name, recipe.training.resume_from_checkpoint))
        return train(recipe, **kw)

    result = run_sweep(spec, train_fn=counted)
    assert result.skipped == first and not result.failed
    assert len(calls) == 5 and not set(first) & {n for n, _ in calls}
    cells = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert len(cells) == 8 and all((root / c / "metrics.json").is_file() for c in cells)
    assert "model-tiny_a__method-linear_probe__frac-0.5" in cells and "model-tiny_b__method-lora__frac-1.0" in cells

    rows = list(csv.DictReader((root / "sweep_results.csv").open()))
    assert [r["cell"] for r in rows] == [c.name for c in spec.cells()]
    assert all(r["status"] == "done" and r["metric"] == "macro_auroc" and r["test"] for r in rows)
    for r in rows:  # the table holds what each run wrote, and the train fraction was applied
        m = json.loads((root / r["cell"] / "metrics.json").read_text())
        assert float(r["test"]) == pytest.approx(m["test"]["macro_auroc"])
        assert m["data"]["train_subset"] == {"fraction": float(r["data.train_fraction"]), "seed": 0,
                                             "records": 10 if r["data.train_fraction"] == "0.5" else 20}
        ci = m["test"]["ci"]["macro_auroc"]  # the run's own interval, copied, not recomputed
        assert float(r["ci_low"]) == pytest.approx(ci["low"], abs=1e-4)
        assert float(r["ci_high"]) == pytest.approx(ci["high"], abs=1e-4)
    md = (root / "sweep_results.md").read_text()
    assert md.count("\n| model-") == 8
    png = root / "sweep.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A cell killed after its checkpoint: its metrics.json is gone but checkpoint_0 stays -> resumed, not restarted.
    victim = rows[5]["cell"]
    (root / victim / "metrics.json").unlink()
    calls.clear()
    result = run_sweep(spec, train_fn=counted)
    assert calls == [(victim, "latest")] and len(result.skipped) == 7
    assert "resumed from" in (root / victim / "train.log").read_text()


def test_a_failing_cell_is_reported_and_the_sweep_goes_on(world: dict[str, Path], tmp_path: Path) -> None:
    spec = SweepSpec.from_yaml(_sweep_file(world, tmp_path))
    seen: list[str] = []

    def fake(recipe: Recipe, **kw):  # writes what a run writes, with a recorded interval; one cell breaks
        out = Path(recipe.output.output_dir)
        seen.append(out.name)
        if len(seen) == 2:
            raise RuntimeError("out of memory (simulated)")
        out.mkdir(parents=True)
        (out / "recipe.yaml").write_text(recipe.to_yaml())
        auroc = 0.5 + 0.05 * len(seen)
        (out / "metrics.json").write_text(json.dumps({"primary_metric": "macro_auroc", "test": {
            "macro_auroc": auroc, "ci": {"macro_auroc": {"low": auroc - 0.1, "high": auroc + 0.1}}}}))
        return {}

    result = run_sweep(spec, train_fn=fake)
    assert len(seen) == 8 and len(result.trained) == 7
    assert result.failed == [(seen[1], "RuntimeError: out of memory (simulated)")]
    rows = {r["cell"]: r for r in csv.DictReader((tmp_path / "sweep" / "sweep_results.csv").open())}
    assert rows[seen[1]]["status"] == "failed" and "out of memory" in rows[seen[1]]["error"]
    assert float(rows[seen[0]]["ci_low"]) == pytest.approx(0.45) and float(rows[seen[0]]["ci_high"]) == pytest.approx(0.65)
    assert "Failed cells:" in (tmp_path / "sweep" / "sweep_results.md").read_text()
    # a rerun retries only the failed cell
    seen.clear()
    assert not run_sweep(spec, train_fn=fake).failed and len(seen) == 1


def test_a_finished_cell_of_another_recipe_is_not_skipped_silently(world: dict[str, Path], tmp_path: Path) -> None:
    spec = SweepSpec.from_yaml(_sweep_file(world, tmp_path, grid={"data.train_fraction": [1.0]}))
    (cell,) = spec.cells()
    cell.output_dir.mkdir(parents=True)
    other = spec.cell_recipe(cell)
    other.training.learning_rate = 0.5
    (cell.output_dir / "recipe.yaml").write_text(other.to_yaml())
    (cell.output_dir / "metrics.json").write_text("{}")
    result = run_sweep(spec, train_fn=lambda r, **kw: pytest.fail("must not train over a finished run"))
    assert len(result.failed) == 1 and "training.learning_rate" in result.failed[0][1]


def test_a_typo_in_a_grid_key_is_an_error_before_anything_runs(world: dict[str, Path], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    path = _sweep_file(world, tmp_path, grid={"adaptation.methd": ["lora"], "training.seed": [0, 1]})
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert "'adaptation.methd' is not a recipe key (did you mean 'adaptation.method'?)" in err
    assert not (tmp_path / "sweep").exists()
    with pytest.raises(SweepError, match="did you mean 'training.seed'"):
        SweepSpec.from_dict({"recipe": "x", "output_root": "y", "grid": {"trainng.seed": [0]}})
    with pytest.raises(SweepError, match="did you mean 'grid'"):
        SweepSpec.from_dict({"recipe": "x", "output_root": "y", "gird": {}})
    with pytest.raises(SweepError, match="set by the sweep"):
        SweepSpec.from_dict({"recipe": "x", "output_root": "y", "grid": {"output.output_dir": ["a"]}})
    # a bad value in any cell also fails up front (every cell's recipe is resolved first)
    path = _sweep_file(world, tmp_path, grid={"data.train_fraction": [0.5, 2.0]})
    assert main(["sweep", str(path)]) == 2
    assert "'data.train_fraction' must be in (0, 1], got 2.0" in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()
    with pytest.raises(SweepError, match="a sweep does not push"):
        from ecg_adapt.training.sweep import plan

        plan(SweepSpec.from_yaml(_sweep_file(world, tmp_path, overrides={"hub.push_to_hub": True,
                                                                         "hub.hub_model_id": "me/x"})))
    # sub-keys of a mapping key are free
    SweepSpec.from_dict({"recipe": "x", "output_root": "y", "grid": {"data.source_options.sampling_rate": [100]}})


def test_dry_run_lists_every_cell_and_trains_nothing(world: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    assert main(["sweep", "--dry-run", str(_sweep_file(world, tmp_path))]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("  model-")]
    assert out.startswith("8 cells") and len(lines) == 8 and all("[new]" in line for line in lines)
    assert "model-tiny_b__method-lora__frac-0.5  [new]  model.model_name_or_path=" in out
    assert not (tmp_path / "sweep").exists()


def test_cell_names_are_unique_when_shortened_values_collide(tmp_path: Path) -> None:
    spec = SweepSpec.from_dict({"recipe": "x", "output_root": str(tmp_path),
                                "grid": {"model.model_name_or_path": ["/a/base", "/b/base"], "training.seed": [0]}})
    names = [c.name for c in spec.cells()]
    assert len(set(names)) == 2 and all(n.startswith("model-base__seed-0-") for n in names)
    assert names == [c.name for c in SweepSpec.from_dict({"recipe": "x", "output_root": str(tmp_path), "grid": {
        "model.model_name_or_path": ["/a/base", "/b/base"], "training.seed": [0]}}).cells()]  # deterministic


def test_plot_points_are_per_backbone_and_method_over_fractions_and_seeds(world: dict[str, Path], tmp_path: Path) -> None:
    from ecg_adapt.training.sweep import plot_sweep, sweep_curves

    path = _sweep_file(world, tmp_path, overrides={}, grid={"adaptation.method": ["linear_probe", "lora"],
                                                            "data.train_fraction": [0.1, 1.0], "training.seed": [0, 1]})
    spec = SweepSpec.from_yaml(path)

    def fake(recipe: Recipe, **kw):  # a known metric per cell: method offset + fraction + seed
        out = Path(recipe.output.output_dir)
        out.mkdir(parents=True)
        (out / "recipe.yaml").write_text(recipe.to_yaml())
        value = (0.5 if recipe.adaptation.method == "lora" else 0.3) + 0.1 * recipe.data.train_fraction + 0.01 * recipe.training.seed
        (out / "metrics.json").write_text(json.dumps({"primary_metric": "macro_auprc", "test": {"macro_auprc": value}}))
        return {}

    run_sweep(spec, train_fn=fake)
    metric, points = sweep_curves(tmp_path / "sweep")
    assert metric == "macro_auprc" and set(points) == {("tiny_a", "linear_probe", "ptbxl/superdiagnostic"),
                                                       ("tiny_a", "lora", "ptbxl/superdiagnostic")}
    assert points[("tiny_a", "lora", "ptbxl/superdiagnostic")][0.1] == pytest.approx([0.51, 0.52])  # both seeds, for the band
    assert points[("tiny_a", "linear_probe", "ptbxl/superdiagnostic")][1.0] == pytest.approx([0.4, 0.41])
    with pytest.raises(ValueError, match="reports accuracy"):
        sweep_curves(tmp_path / "sweep", metric="accuracy")
    out = plot_sweep(tmp_path / "sweep", tmp_path / "again.png")
    assert out.read_bytes()[:4] == b"\x89PNG" and (tmp_path / "sweep" / "sweep.png").is_file()


@pytest.mark.slow
def test_a_sweep_under_accelerate_launch_runs_every_cell_on_both_processes(world: dict[str, Path], tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"recipe": str(world["base"]), "output_root": str(tmp_path / "sweep"),
                                    "grid": {"adaptation.method": ["linear_probe", "lora"]}}))
    # MULTI_CPU needs ACCELERATE_USE_CPU with the multi-process launcher (see tests/test_training.py).
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), "-m", "ecg_adapt.cli", "sweep", str(path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for cell in ("method-linear_probe", "method-lora"):  # the second cell reused the launched process group
        ranks = [json.loads((tmp_path / "sweep" / cell / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
        assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["test_primary_metric"] == ranks[1]["test_primary_metric"]
    assert proc.stdout.count("2 trained, 0 skipped") == 1  # only the main process reports


def test_the_example_sweep_resolves_to_36_ptbxl_cells() -> None:
    from ecg_adapt.training.sweep import plan

    path = Path(__file__).resolve().parents[1] / "examples" / "sweep_label_efficiency.yaml"
    planned = plan(SweepSpec.from_yaml(path))
    assert len(planned) == 2 * 2 * 3 * 3
    recipes = [r for _, r in planned]
    assert {r.adaptation.method for r in recipes} == {"linear_probe", "lora"}
    assert sorted({r.data.train_fraction for r in recipes}) == [0.01, 0.1, 1.0]
    assert {(r.data.source, r.task.name) for r in recipes} == {("ptbxl", "superdiagnostic")}
    assert len({r.output.output_dir for r in recipes}) == 36


def test_the_readme_plot_sweep_resolves_to_12_offline_cells() -> None:
    """examples/sweep_demo.yaml made docs/sweep.png: 2 methods x 3 fractions x 2 seeds on the demo backbone."""
    from ecg_adapt.training.sweep import plan

    path = Path(__file__).resolve().parents[1] / "examples" / "sweep_demo.yaml"
    recipes = [r for _, r in plan(SweepSpec.from_yaml(path))]
    assert len(recipes) == 12 and {r.adaptation.method for r in recipes} == {"linear_probe", "lora"}
    assert sorted({r.data.train_fraction for r in recipes}) == [0.1, 0.3, 1.0]
    assert {(r.model.model_name_or_path, r.data.path) for r in recipes} == {("runs/sweep_demo/backbone", "runs/sweep_demo/ptbxl")}
    assert (path.parents[1] / "docs" / "sweep.png").is_file()


def test_sweep_help_imports_no_torch() -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom ecg_adapt.cli import main\ntry:\n    main(['sweep', '--help'])\nexcept SystemExit as e:\n"
            "    assert e.code == 0\nassert 'torch' not in sys.modules, 'sweep --help imported torch'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "--dry-run" in r.stdout and "accelerate launch -m ecg_adapt.cli sweep" in r.stdout
