"""The training loop end to end: outputs, resume at the right step, and a real 2-process DDP run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ecg_adapt.data.synthetic import make_synthetic_ptbxl
from ecg_adapt.training import Recipe, train

from conftest import free_port


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_ptbxl(tmp_path_factory.mktemp("synth"), n_records=80, progress=False)


def _recipe(tmp_path: Path, data_root: Path, backbone: Path, **training) -> dict:
    return {
        "model": {"model_name_or_path": str(backbone)},
        "adaptation": {"method": "lora", "r": 4},
        "data": {"path": str(data_root), "cache_dir": str(tmp_path / "cache"), "max_records_per_split": 24},
        "task": {"name": "superdiagnostic"},
        "training": {"per_device_train_batch_size": 8, "per_device_eval_batch_size": 16, "num_train_epochs": 1,
                     "learning_rate": 1e-3, "logging_steps": 1, **training},
        "output": {"output_dir": str(tmp_path / "run")},
    }


def test_run_writes_model_recipe_metrics_and_log(tmp_path: Path, data_root: Path, tiny_backbone_dir: Path) -> None:
    metrics = train(Recipe.from_dict(_recipe(tmp_path, data_root, tiny_backbone_dir, report_to=["tensorboard"])))
    run = tmp_path / "run"
    assert list((run / "logs").rglob("events.out.tfevents*")), "accelerate tracker wrote nothing"
    for name in ("recipe.yaml", "metrics.json", "train.log", "model/adapter_model.safetensors",
                 "model/preprocessor_config.json", "model/config.json", "model/task.json"):
        assert (run / name).exists(), name
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test"]["macro_auroc"] == metrics["test"]["macro_auroc"]
    assert set(saved["test"]["per_class_auroc"]) == {"CD", "HYP", "MI", "NORM", "STTC"}
    assert saved["validation"]["thresholds"] == saved["test"]["thresholds"]  # tuned on validation, applied to test
    assert saved["global_step"] == 6 and saved["world_size"] == 1  # 24 records x 2 windows / batch 8
    again = Recipe.from_yaml(run / "recipe.yaml")  # the resolved recipe is itself a valid recipe
    assert again.training.learning_rate == 1e-3
    with pytest.raises(FileExistsError, match="already holds a finished run"):
        train(Recipe.from_dict(_recipe(tmp_path, data_root, tiny_backbone_dir)))
    assert json.loads((run / "metrics.json").read_text()) == saved  # the finished run is left intact


def test_resume_from_saved_state_continues_at_the_right_step(tmp_path: Path, data_root: Path, tiny_backbone_dir: Path) -> None:
    full = train(Recipe.from_dict(_recipe(tmp_path / "a", data_root, tiny_backbone_dir, max_steps=6, save_strategy="no")))
    cfg = dict(max_steps=6, save_strategy="steps", save_steps=2, save_total_limit=None)
    train(Recipe.from_dict(_recipe(tmp_path / "b", data_root, tiny_backbone_dir, **cfg)))
    run = tmp_path / "b" / "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint_0", "checkpoint_1", "checkpoint_2"]
    # Simulate a run interrupted after step 4 (mid-epoch: 6 batches per epoch): drop what came later.
    shutil.rmtree(run / "checkpoints" / "checkpoint_2")
    (run / "metrics.json").unlink()
    resumed = train(Recipe.from_dict(_recipe(tmp_path / "b", data_root, tiny_backbone_dir, resume_from_checkpoint="latest", **cfg)))
    assert resumed["global_step"] == 6
    assert "checkpoint_1 at epoch 0, step 4" in (run / "train.log").read_text()
    # checkpoint numbering continues after the one resumed from
    assert sorted(p.name for p in (run / "checkpoints").iterdir())[-1] == "checkpoint_2"
    # same data order (the rest of the epoch), same optimiser, scheduler and RNG state: the interrupted run
    # ends exactly where the uninterrupted one does
    assert resumed["validation"]["loss"] == pytest.approx(full["validation"]["loss"], rel=1e-5)
    assert resumed["test"]["macro_auroc"] == pytest.approx(full["test"]["macro_auroc"], abs=1e-6)


@pytest.mark.slow
def test_two_process_cpu_run_trains_on_both_ranks_and_they_agree(tmp_path: Path, data_root: Path, tiny_backbone_dir: Path) -> None:
    recipe = _recipe(tmp_path, data_root, tiny_backbone_dir, max_steps=3, save_strategy="no")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    # `accelerate launch --cpu --num_processes 2` silently runs ONE process; MULTI_CPU needs ACCELERATE_USE_CPU
    # with the multi-process launcher (see README, "Multi-process on CPU").
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), "-m", "ecg_adapt.train", str(path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / "run" / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["global_step"] for r in ranks] == [3, 3]
    assert all(r["samples_seen"] == 24 for r in ranks)  # each rank saw its own 3 batches of 8
    assert ranks[0]["test_primary_metric"] == ranks[1]["test_primary_metric"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and "MULTI_CPU" in (tmp_path / "run" / "train.log").read_text()


def test_recipe_hub_section_fails_before_training_without_a_token(tmp_path: Path, data_root: Path, tiny_backbone_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ecg_adapt.hub import HubError
    from ecg_adapt.training.recipe import RecipeError

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no stored login
    recipe = _recipe(tmp_path, data_root, tiny_backbone_dir)
    recipe["hub"] = {"push_to_hub": True, "hub_model_id": "me/ecg-lora", "base_model": "me/hubert-ecg-tiny"}
    with pytest.raises(HubError):
        train(Recipe.from_dict(recipe))
    assert not (tmp_path / "run").exists()  # nothing was trained or written
    recipe["hub"] = {"push_to_hub": True}
    with pytest.raises(RecipeError, match="hub.push_to_hub needs hub.hub_model_id"):
        Recipe.from_dict(recipe)


def test_recipe_trains_on_another_registered_source_cinc2021(tmp_path: Path, samples: Path, tiny_backbone_dir: Path) -> None:
    """``data.source`` opens any registered source; CinC's task adds the official challenge score."""
    recipe = {
        "model": {"model_name_or_path": str(tiny_backbone_dir)},
        "adaptation": {"method": "lora", "r": 4},
        "data": {"source": "cinc2021", "path": str(samples / "cinc2021"), "cache_dir": str(tmp_path / "cache"),
                 "source_options": {"unscored_records": "negative", "split_fractions": [0.6, 0.2, 0.2]}},
        "task": {"name": "scored"},
        "training": {"per_device_train_batch_size": 8, "num_train_epochs": 1},
        "output": {"output_dir": str(tmp_path / "run")},
    }
    metrics = train(Recipe.from_dict(recipe))
    assert metrics["data"]["source"] == "cinc2021" and sum(metrics["data"]["records"].values()) == 30
    assert len(metrics["labels"]) == 26 and "challenge_score" in metrics["test"]
    recipe["data"]["source"] = "cinc2012"
    recipe["output"]["output_dir"] = str(tmp_path / "run2")
    with pytest.raises(ValueError, match="Unknown data.source 'cinc2012' \\(did you mean 'cinc2021'\\?\\)"):
        train(Recipe.from_dict(recipe))
    recipe["data"].update(source="mitdb", path=None)
    with pytest.raises(ValueError, match="data.path is required"):
        train(Recipe.from_dict(recipe))
    from ecg_adapt.demo import prepare

    with pytest.raises(ValueError, match="data.path is required for source 'mitdb' \\(only ptbxl has a synthetic"):
        prepare(Recipe.from_dict(recipe))  # the demo synthesises PTB-XL only


def test_recipe_augmentations_run_in_training_and_typos_are_caught(tmp_path: Path, data_root: Path, tiny_backbone_dir: Path) -> None:
    from ecg_adapt.training import RecipeError

    aug = [{"name": "gaussian_noise", "p": 1.0}, {"name": "lead_dropout", "p": 0.5}]
    plain = train(Recipe.from_dict(_recipe(tmp_path / "a", data_root, tiny_backbone_dir, max_steps=2, save_strategy="no")))
    r = _recipe(tmp_path / "b", data_root, tiny_backbone_dir, max_steps=2, save_strategy="no")
    r["data"]["augmentations"] = aug
    augmented = train(Recipe.from_dict(r))
    assert "training augmentations" in (tmp_path / "b" / "run" / "train.log").read_text()
    assert augmented["history"] != plain["history"] or augmented["test"]["loss"] != plain["test"]["loss"]
    r = _recipe(tmp_path / "c", data_root, tiny_backbone_dir, max_steps=2)
    r["data"]["augmentations"] = [{"name": "gausian_noise"}]
    with pytest.raises(RecipeError, match="data.augmentations: .*did you mean 'gaussian_noise'"):
        train(Recipe.from_dict(r))


@pytest.mark.parametrize("adaptation", [
    {"method": "prompt_tuning", "prompt_depth": "deep", "num_prompt_tokens": 4},
    {"method": "partial", "num_trainable_blocks": 1, "layerwise_lr_decay": 0.5},
    {"method": "ia3"},
])
def test_recipe_trains_saves_and_predicts_with_other_methods(tmp_path: Path, data_root: Path, tiny_backbone_dir: Path, samples: Path,
                                                             adaptation: dict) -> None:
    """Every method kind goes through the same loop, save and Predictor (module, native with LLRD, peft)."""
    from ecg_adapt.adaptation import read_adaptation_config
    from ecg_adapt.inference import Predictor
    from ecg_adapt.data import read_wfdb

    r = _recipe(tmp_path, data_root, tiny_backbone_dir, max_steps=2, save_strategy="no")
    r["adaptation"] = adaptation
    metrics = train(Recipe.from_dict(r))
    model_dir = tmp_path / "run" / "model"
    assert read_adaptation_config(model_dir).method == adaptation["method"]
    assert not (model_dir / "model.safetensors").exists()  # only what was trained
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"]
    predictor = Predictor.from_pretrained(model_dir)
    preds = predictor.predict([read_wfdb(samples / "cinc2021" / "HR06000")])
    probs = preds[0].probabilities
    assert set(probs) == {"CD", "HYP", "MI", "NORM", "STTC"} and all(0.0 <= p <= 1.0 for p in probs.values())


def test_a_run_on_the_demo_data_says_so_in_log_metrics_and_card(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    from ecg_adapt.demo import prepare
    from ecg_adapt.hub.card import build_model_card
    from ecg_adapt.training.recipe import RecipeError

    run = tmp_path / "run"
    recipe = Recipe.from_yaml(Path(__file__).resolve().parents[1] / "recipes" / "hubert_ecg_lora_ptbxl_superdiagnostic.yaml", [
        f"output.output_dir={run}", "data.source_options.synthetic_records=50", f"data.cache_dir={tmp_path / 'cache'}",
        "data.max_records_per_split=4", "training.max_steps=2", "training.per_device_train_batch_size=4",
        "training.eval_strategy=no", "training.save_strategy=no", "training.logging_steps=1"])
    with pytest.raises(RecipeError, match="model.model_name_or_path is required"):
        train(recipe)  # the loop itself knows no demo: null paths are the demo's to fill in
    prepared, run_info = prepare(recipe)
    assert recipe.data.path is None and recipe.model.model_name_or_path is None  # the caller's recipe is untouched
    assert run_info["data"] == "synthetic" and "backbone" in run_info
    assert prepared.data.source_options == {"sampling_rate": 100}  # the demo's own keys are consumed
    assert (Path(prepared.data.path) / "synthetic_manifest.json").exists()
    train(prepared, run_info=run_info)
    log = (run / "train.log").read_text()
    assert "SYNTHETIC demo data" in log and "EMBEDDED demo backbone" in log
    assert json.loads((run / "metrics.json").read_text())["run_info"] == run_info
    shutil.rmtree(prepared.data.path)  # the card must not depend on the synthetic folder still being there
    card = build_model_card(run, "me/demo", "Edoardo-BS/hubert-ecg-small")
    assert "Trained and evaluated on synthetic data" in card and "synthetic-data" in card
    assert "embedded random-weight backbone" in card
    # progress off a terminal: plain lines (in train.log too), never carriage-return redraws
    assert "training: 2/2 step (100%)" in log and "\r" not in log
    assert "\r" not in capfd.readouterr().err


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from ecg_adapt.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("ECG_ADAPT_PROGRESS", raising=False)
    out = io.StringIO()
    with Progress(5, "caching ptbxl", "rec", stream=out, every_n=2) as p:
        for i in range(5):
            p.set_postfix(loss=f"{0.5 - i / 10:.1f}")
            p.update(1)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 3  # at 2, 4 and the close at 5
    assert lines[0].startswith("caching ptbxl: 2/5 rec (40%), ") and lines[0].endswith("loss 0.4")
    assert lines[-1].startswith("caching ptbxl: 5/5 rec (100%), ")
    term = Terminal()
    with Progress(5, "caching ptbxl", "rec", stream=term) as p:
        p.update(5)
    assert "\r" in term.getvalue()  # tqdm's bar
    monkeypatch.setenv("ECG_ADAPT_PROGRESS", "lines")
    forced = Terminal()
    with Progress(5, "x", "rec", stream=forced) as p:
        p.update(5)
    assert "\r" not in forced.getvalue() and forced.getvalue().startswith("x: 5/5 rec")
    quiet = io.StringIO()
    with Progress(5, "x", "rec", stream=quiet, disable=True) as p:
        p.update(5)
    assert quiet.getvalue() == ""


def test_selection_loads_the_best_evaluation_and_metrics_say_which(tmp_path: Path, data_root: Path,
                                                                     tiny_backbone_dir: Path) -> None:
    # Select on the *highest* validation loss: training lowers it, so the known best evaluation is an early one,
    # not the last; the reported model must be that one (its validation loss is re-measured at the end).
    metrics = train(Recipe.from_dict(_recipe(tmp_path, data_root, tiny_backbone_dir, num_train_epochs=3,
                                             metric_for_best_model="loss", greater_is_better=True)))
    history = metrics["history"]
    assert len(history) == 3
    best = max(range(3), key=lambda i: history[i]["val_loss"])
    sel = metrics["selection"]
    assert sel["selected"] == "best" and sel["best_epoch"] == best and sel["best_step"] == history[best]["step"]
    assert metrics["validation"]["loss"] == pytest.approx(history[best]["val_loss"], abs=1e-6)
    if best != 2:
        assert metrics["validation"]["loss"] != pytest.approx(history[2]["val_loss"], abs=1e-6)
    assert (tmp_path / "run" / "best" / "selection.json").exists()


def test_early_stopping_ends_the_run_after_patience(tmp_path: Path, data_root: Path, tiny_backbone_dir: Path) -> None:
    metrics = train(Recipe.from_dict(_recipe(tmp_path, data_root, tiny_backbone_dir, num_train_epochs=6,
                                             metric_for_best_model="loss", greater_is_better=True,
                                             early_stopping_patience=1)))
    losses = [h["val_loss"] for h in metrics["history"]]
    # Stops at the first evaluation that does not beat the best so far.
    first_miss = next(i for i in range(1, len(losses)) if losses[i] <= max(losses[:i]))
    assert len(losses) == first_miss + 1 < 6
    assert metrics["selection"]["early_stopped"] and metrics["global_step"] == 6 * len(losses)


def test_test_metrics_carry_bootstrap_intervals_and_predictions_are_saved(tmp_path: Path, data_root: Path,
                                                                           tiny_backbone_dir: Path) -> None:
    from ecg_adapt.evaluation import compare_runs, load_predictions

    metrics = train(Recipe.from_dict(_recipe(tmp_path, data_root, tiny_backbone_dir, bootstrap_resamples=200)))
    test = metrics["test"]
    ci = test["ci"]["macro_auroc"]
    assert ci["low"] <= test["macro_auroc"] <= ci["high"] and ci["high"] - ci["low"] > 0
    n_test = metrics["data"]["records"]["test"]
    assert test["ci_info"] == {"level": 0.95, "n_resamples": 200, "unit": "record", "n_records": n_test,
                               "method": "percentile"}
    assert any("positives in the test set" in w for w in test["support_warnings"])  # a few records support no claim
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test"]["ci"] == test["ci"]
    pred = load_predictions(tmp_path / "run" / "predictions" / "test.npz")
    assert len(pred.record_ids) == n_test and pred.labels == metrics["labels"]
    table = compare_runs([tmp_path / "run"], n_resamples=50)
    assert table.rows[0].metric.estimate == pytest.approx(test["macro_auroc"])


def test_unknown_metric_for_best_model_is_a_recipe_error(tmp_path: Path, data_root: Path, tiny_backbone_dir: Path) -> None:
    from ecg_adapt.training import RecipeError

    with pytest.raises(RecipeError, match=r"metric_for_best_model 'macro_aurc'.*did you mean 'macro_auroc'"):
        train(Recipe.from_dict(_recipe(tmp_path, data_root, tiny_backbone_dir, metric_for_best_model="macro_aurc")))
