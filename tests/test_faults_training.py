"""Faults of the training loop: interrupted saves, reruns into a killed run's folder, divergence, changed
recipes on resume, pickled checkpoint state, half-written model folders, impossible recipe values.

Each test reproduces a failure the previous code had (issue 11); the closing comment of each says what it was.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from ecg_adapt.data.synthetic import make_synthetic_ptbxl
from ecg_adapt.training import Recipe, RecipeError, train


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_ptbxl(tmp_path_factory.mktemp("synth"), n_records=60, progress=False)


_BACKBONE: list[Path] = []  # set by the autouse fixture below: _recipe's signature stays (tmp_path, data_root)


@pytest.fixture(autouse=True)
def _backbone(tiny_backbone_dir: Path) -> None:
    _BACKBONE[:] = [tiny_backbone_dir]


def _recipe(tmp_path: Path, data_root: Path, **training) -> dict:
    return {
        "model": {"model_name_or_path": str(_BACKBONE[0])},
        "adaptation": {"method": "lora", "r": 4},
        "data": {"path": str(data_root), "cache_dir": str(tmp_path / "cache"), "max_records_per_split": 16},
        "task": {"name": "superdiagnostic"},
        "training": {"per_device_train_batch_size": 8, "per_device_eval_batch_size": 16, "num_train_epochs": 1,
                     "learning_rate": 1e-3, "logging_steps": 1, **training},
        "output": {"output_dir": str(tmp_path / "run")},
    }


class _Payload:
    """Unpickling this creates ``marker``: stands for code an attacker stored in a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: D105
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _ckpts(run: Path) -> list[str]:
    return sorted((p.name for p in (run / "checkpoints").iterdir()), key=lambda n: (len(n), n))


# ---------------------------------------------------------------------------------------------- checkpoints
def test_killed_save_never_costs_the_last_complete_checkpoint(tmp_path: Path, data_root: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # 16 records x 2 windows / batch 8 = 4 steps; a save every step, keeping 1 (the shipped recipe's limit).
    cfg = dict(max_steps=4, save_strategy="steps", save_steps=1, save_total_limit=1)
    run = tmp_path / "run"
    import accelerate

    real_save = accelerate.Accelerator.save_state
    calls = {"n": 0}

    def dying_save(self, output_dir=None, **kw):  # the process is killed in the middle of the 3rd save
        calls["n"] += 1
        if calls["n"] == 3:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "optimizer.bin").write_bytes(b"half")
            raise KeyboardInterrupt("killed during save")
        return real_save(self, output_dir, **kw)

    monkeypatch.setattr(accelerate.Accelerator, "save_state", dying_save)
    with pytest.raises(KeyboardInterrupt):
        train(Recipe.from_dict(_recipe(tmp_path, data_root, **cfg)))
    monkeypatch.setattr(accelerate.Accelerator, "save_state", real_save)
    # Before: accelerate had deleted checkpoint_1 before writing checkpoint_2, leaving only the broken one.
    from ecg_adapt.training.checkpoints import CheckpointManager, is_complete

    latest = CheckpointManager(run, 1, {}).latest()
    assert latest is not None and latest.name == "checkpoint_1" and is_complete(latest)
    resumed = train(Recipe.from_dict(_recipe(tmp_path, data_root, resume_from_checkpoint="latest", **cfg)))
    assert resumed["global_step"] == 4
    assert "resumed from" in (run / "train.log").read_text() and "checkpoint_1 at epoch 0, step 2" in (run / "train.log").read_text()
    # rotation kept one complete checkpoint, and no leftover of the killed save
    assert _ckpts(run) == ["checkpoint_4"]


def test_latest_skips_a_checkpoint_without_its_completion_marker(tmp_path: Path, data_root: Path) -> None:
    cfg = dict(max_steps=4, save_strategy="steps", save_steps=2, save_total_limit=None)
    run = tmp_path / "run"
    train(Recipe.from_dict(_recipe(tmp_path, data_root, **cfg)))
    assert _ckpts(run) == ["checkpoint_0", "checkpoint_1"]
    # A save killed after the rename but before its marker: files present, marker absent.
    (run / "checkpoints" / "checkpoint_1" / "checkpoint_complete.json").unlink()
    (run / "checkpoints" / "checkpoint_1" / "model.safetensors").unlink()
    (run / "metrics.json").unlink()
    resumed = train(Recipe.from_dict(_recipe(tmp_path, data_root, resume_from_checkpoint="latest", **cfg)))
    # Before: latest picked checkpoint_1 and load_state failed on the missing weights.
    assert "checkpoint_0 at epoch 0, step 2" in (run / "train.log").read_text()
    assert resumed["global_step"] == 4


def test_rerun_into_a_killed_runs_folder_refuses_and_deletes_nothing(tmp_path: Path, data_root: Path) -> None:
    cfg = dict(max_steps=4, save_strategy="steps", save_steps=2, save_total_limit=None)
    run = tmp_path / "run"
    train(Recipe.from_dict(_recipe(tmp_path, data_root, **cfg)))
    (run / "metrics.json").unlink()  # the run was killed before it finished
    before = _ckpts(run)
    with pytest.raises(FileExistsError, match="unfinished run.*resume_from_checkpoint=latest.*overwrite_output_dir"):
        train(Recipe.from_dict(_recipe(tmp_path, data_root, **cfg)))
    # Before: accelerate deleted the checkpoints, then crashed on "Checkpoint directory ... already exists".
    assert _ckpts(run) == before
    # overwrite_output_dir=true (what the message suggests) starts over cleanly.
    recipe = _recipe(tmp_path, data_root, **cfg)
    recipe["output"]["overwrite_output_dir"] = True
    metrics = train(Recipe.from_dict(recipe))
    assert metrics["global_step"] == 4 and _ckpts(run) == ["checkpoint_0", "checkpoint_1"]


def test_resume_with_changed_hyperparameters_is_refused_with_the_changed_keys(tmp_path: Path, data_root: Path) -> None:
    cfg = dict(max_steps=4, save_strategy="steps", save_steps=2, save_total_limit=None)
    run = tmp_path / "run"
    train(Recipe.from_dict(_recipe(tmp_path, data_root, **cfg)))
    (run / "metrics.json").unlink()
    changed = _recipe(tmp_path, data_root, resume_from_checkpoint="latest", **cfg)
    changed["training"]["learning_rate"] = 5e-3
    changed["adaptation"]["r"] = 8
    with pytest.raises(RecipeError, match=r"(?s)2 key\(s\).*adaptation\.r: 4 in the checkpoint, 8 now.*"
                                          r"training\.learning_rate: 0\.001 in the checkpoint, 0\.005 now"):
        train(Recipe.from_dict(changed))
    # Before: accepted, and recipe.yaml recorded lr 5e-3 / r 8 for a run whose first half used 1e-3 / 4.
    assert not (run / "recipe.yaml").exists() or "0.005" not in (run / "recipe.yaml").read_text()
    # keys that do not change what is trained may differ
    ok = _recipe(tmp_path, data_root, resume_from_checkpoint="latest", **dict(cfg, logging_steps=2))
    assert train(Recipe.from_dict(ok))["global_step"] == 4


def test_resume_never_unpickles_custom_checkpoint_files(tmp_path: Path, data_root: Path) -> None:
    cfg = dict(max_steps=4, save_strategy="steps", save_steps=2, save_total_limit=None)
    run = tmp_path / "run"
    train(Recipe.from_dict(_recipe(tmp_path, data_root, **cfg)))
    (run / "metrics.json").unlink()
    ckpt = run / "checkpoints" / "checkpoint_1"
    assert not list(ckpt.glob("*custom_checkpoint*")), "loop state must not be pickled"
    assert json.loads((ckpt / "trainer_state.json").read_text())["progress"]["global_step"] == 4
    marker = tmp_path / "executed"
    (ckpt / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    from ecg_adapt.training.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match="never unpickles"):
        train(Recipe.from_dict(_recipe(tmp_path, data_root, resume_from_checkpoint="latest", **cfg)))
    # Before: accelerate's load_custom_state ran torch.load(weights_only=False) on it, creating the marker.
    assert not marker.exists()


def test_nan_loss_stops_at_that_step_and_keeps_the_last_good_checkpoint(tmp_path: Path, data_root: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from ecg_adapt.models.classifier import ECGClassifier

    real_forward = ECGClassifier.forward
    calls = {"n": 0}

    def diverging_forward(self, *a, **kw):  # the loss of the 3rd training batch is NaN
        out = real_forward(self, *a, **kw)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 3 and out.loss is not None:
                out.loss = out.loss * torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(ECGClassifier, "forward", diverging_forward)
    cfg = dict(max_steps=4, save_strategy="steps", save_steps=1, save_total_limit=1)
    run = tmp_path / "run"
    from ecg_adapt.training.trainer import TrainingDivergedError

    with pytest.raises(TrainingDivergedError, match="loss became NaN at step 3.*checkpoint_1"):
        train(Recipe.from_dict(_recipe(tmp_path, data_root, **cfg)))
    # Before: the NaN went into the weights and the run died in validation on "y_score contains NaN".
    assert _ckpts(run) == ["checkpoint_1"]
    state = json.loads((run / "checkpoints" / "checkpoint_1" / "trainer_state.json").read_text())
    assert state["progress"]["global_step"] == 2


# ---------------------------------------------------------------------------------------------- model folder
def test_model_folder_is_complete_with_task_json_or_refused(tmp_path: Path, data_root: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from ecg_adapt.adaptation.core import IncompleteModelError, load_adapted
    from ecg_adapt.hub import from_hub
    from ecg_adapt.inference import Predictor

    run = tmp_path / "run"
    train(Recipe.from_dict(_recipe(tmp_path, data_root, max_steps=2, save_strategy="no")))
    model = run / "model"
    thresholds = json.loads((model / "task.json").read_text())["thresholds"]
    assert "task.json" in json.loads((model / "model_complete.json").read_text())["files"]
    assert Predictor.from_pretrained(model).thresholds.tolist() == [thresholds[k] for k in sorted(thresholds, key=list(thresholds).index)]
    # The kill the issue describes: the folder is in place but task.json (tuned thresholds) is not.
    (model / "task.json").unlink()
    for load in (Predictor.from_pretrained, from_hub, load_adapted):
        with pytest.raises(IncompleteModelError, match=r"incomplete model folder.*task\.json"):
            load(model)
    # Before: predict and from_hub used 0.5 thresholds silently. A folder without the marker is refused too.
    (model / "model_complete.json").unlink()
    with pytest.raises(IncompleteModelError, match="no model_complete.json"):
        Predictor.from_pretrained(model)


# ---------------------------------------------------------------------------------------------- recipe values
@pytest.mark.parametrize("key,value", [
    ("training.per_device_train_batch_size", 0),
    ("training.per_device_eval_batch_size", 0),
    ("training.gradient_accumulation_steps", 0),
    ("training.logging_steps", 0),
    ("training.num_train_epochs", 0),
    ("training.warmup_ratio", 1.5),
    ("training.learning_rate", -1e-3),
    ("training.head_learning_rate", -1.0),
    ("training.weight_decay", -0.1),
    ("training.max_grad_norm", -1.0),
    ("training.max_steps", 0),
    ("training.save_total_limit", 0),
    ("model.classifier_dropout", 1.5),
])
def test_impossible_recipe_values_are_recipe_errors_naming_the_key(key: str, value: float) -> None:
    section, name = key.split(".")
    # Before: accepted; training then crashed with ZeroDivisionError / range() errors or trained nonsense.
    with pytest.raises(RecipeError, match=rf"'{key}' must be"):
        Recipe.from_dict({section: {name: value}})


def test_impossible_recipe_values_fail_from_the_cli_before_anything_starts(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    from ecg_adapt.cli import main

    out = tmp_path / "run"
    (tmp_path / "r.yaml").write_text(f"output:\n  output_dir: {out}\n")
    rc = main(["train", str(tmp_path / "r.yaml"), "training.gradient_accumulation_steps=0"])
    assert rc != 0 and "training.gradient_accumulation_steps" in capsys.readouterr().err
    assert not out.exists()
    # A recipe built in code (no from_dict) is checked by train() too.
    recipe = Recipe()
    recipe.training.logging_steps = 0
    recipe.output.output_dir = str(out)
    with pytest.raises(RecipeError, match="'training.logging_steps' must be >= 1"):
        train(recipe)
    assert not out.exists()
