"""Sleep staging end to end: staging metrics against scikit-learn, subject-level intervals, and a shipped recipe
trained through the CLI on an SHHS fixture (EDF + NSRR XML) into a LoRA sequence model that reloads identically."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub

import numpy as np
import pytest
import torch
from fake_hub import FakeHub
from huggingface_hub import HfApi, ModelCard
from sklearn.metrics import cohen_kappa_score, confusion_matrix, f1_score
from test_sleep import R, S1, S2, S3, W, shhs_record

from ecg_adapt.adaptation import load_adapted
from ecg_adapt.cli import main
from ecg_adapt.data import build_cache, open_source
from ecg_adapt.data.context import ContextWindowDataset
from ecg_adapt.evaluation.predictions import load_predictions
from ecg_adapt.hub import prepare_push_folder, push_to_hub
from ecg_adapt.models.sequence import ECGSequenceClassifier
from ecg_adapt.processing import ECGProcessor
from ecg_adapt.tasks.bootstrap import metric_intervals
from ecg_adapt.tasks.metrics import single_label_metrics
from ecg_adapt.tasks.staging import format_staging_report, staging_intervals, staging_metrics
from ecg_adapt.tasks.task import ClassificationTask
from ecg_adapt.tasks.windows import aggregate_windows
from ecg_adapt.training import Recipe, RecipeError, recipes_dir, train

STAGES = ["W", "light", "deep", "REM"]
BACKBONE_REPO = "ecg-test/tiny-ecgfounder"


def scored_nights(n_subjects: int = 8, epochs: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-subject hypnograms and probabilities: each subject has its own accuracy (some near chance, some good)."""
    rng = np.random.default_rng(seed)
    y, p, s = [], [], []
    for i in range(n_subjects):
        truth = rng.integers(0, 4, epochs)
        right = rng.random(epochs) < (0.3 + 0.6 * i / n_subjects)
        pred = np.where(right, truth, rng.integers(0, 4, epochs))
        prob = rng.dirichlet(np.ones(4), epochs) * 0.5
        prob[np.arange(epochs), pred] += 1.0
        y.append(truth)
        p.append(prob / prob.sum(1, keepdims=True))
        s += [f"2000{i:02d}"] * epochs
    return np.concatenate(y), np.concatenate(p), np.asarray(s)


def test_staging_metrics_and_per_subject_kappa_equal_scikit_learn() -> None:
    y, p, s = scored_nights()
    m = staging_metrics(y, p, s, STAGES)
    pred = p.argmax(1)
    assert m["kappa"] == pytest.approx(cohen_kappa_score(y, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert list(m["per_class_f1"].values()) == pytest.approx(list(f1_score(y, pred, average=None)))
    assert m["confusion_matrix"] == confusion_matrix(y, pred).tolist()
    per = [cohen_kappa_score(y[s == k], pred[s == k]) for k in sorted(set(s))]
    assert [m["per_subject"][k]["kappa"] for k in sorted(set(s))] == pytest.approx(per)
    assert [m["per_subject"][k]["n_epochs"] for k in sorted(set(s))] == [int((s == k).sum()) for k in sorted(set(s))]
    assert m["subject_kappa_mean"] == pytest.approx(np.mean(per))
    assert m["subject_kappa_sd"] == pytest.approx(np.std(per, ddof=1))
    assert (m["subject_kappa_min"], m["subject_kappa_max"]) == pytest.approx((min(per), max(per)))
    # the fast metrics the trainer selects models with agree with the same definitions
    fast = single_label_metrics(y, p, STAGES)
    assert fast["kappa"] == pytest.approx(m["kappa"]) and fast["macro_f1"] == pytest.approx(m["macro_f1"])


def test_staging_intervals_resample_subjects_not_epochs() -> None:
    y, p, s = scored_nights()
    subject = staging_intervals(y, p, s, STAGES, n_resamples=300, seed=1)
    epochs = metric_intervals(lambda a, b: single_label_metrics(a, b, STAGES), y, p, None, n_resamples=300, seed=1)
    # subjects differ a lot in accuracy: intervals over subjects are much wider than over independent epochs
    width = {k: d["kappa"].high - d["kappa"].low for k, d in (("subject", subject), ("epoch", epochs))}
    assert width["subject"] > 1.5 * width["epoch"], width
    full = staging_metrics(y, p, s, STAGES)  # the estimates are the metrics of the whole test set
    assert subject["kappa"].estimate == pytest.approx(full["kappa"])
    assert subject["per_class_f1/deep"].estimate == pytest.approx(full["per_class_f1"]["deep"])
    mean = subject["subject_kappa_mean"]
    assert mean.estimate == pytest.approx(staging_metrics(y, p, s, STAGES)["subject_kappa_mean"])
    assert mean.low < mean.estimate < mean.high
    assert {"per_class_f1/W", "macro_f1", "accuracy"} <= set(subject)


def test_a_staging_task_scores_a_split_per_subject_and_other_tasks_per_record() -> None:
    y, p, s = scored_nights(n_subjects=4, epochs=20)
    units = [f"night{i // 20}/{i % 20}" for i in range(len(y))]  # one night per subject here
    staging = ClassificationTask("sleep", STAGES, "single_label_classification", primary_metric="kappa")
    assert staging.split_metrics(y, p, subjects=list(s)) == {**single_label_metrics(y, p, STAGES),
                                                              **staging_metrics(y, p, s, STAGES)}
    cis, info = staging.split_intervals(y, p, None, units, list(s), n_resamples=50, level=0.9, seed=3)
    expected = staging_intervals(y, p, s, STAGES, n_resamples=50, level=0.9, seed=3)
    assert {k: (v.low, v.high) for k, v in cis.items()} == {k: (v.low, v.high) for k, v in expected.items()}
    assert info == {"level": 0.9, "n_resamples": 50, "unit": "subject", "n_records": 4, "method": "percentile",
                    "n_subjects": 4}
    with pytest.raises(ValueError, match="subject"):
        staging.split_intervals(y, p, None, units, None, n_resamples=5, level=0.9, seed=3)
    plain = ClassificationTask("stages", STAGES, "single_label_classification", primary_metric="macro_f1")
    assert "per_subject" not in plain.split_metrics(y, p, subjects=list(s))
    cis, info = plain.split_intervals(y, p, None, units, None, n_resamples=50, level=0.9, seed=3)
    expected = metric_intervals(lambda a, b: single_label_metrics(a, b, STAGES), y, p, [u.split("/")[0] for u in units],
                                n_resamples=50, level=0.9, seed=3)
    assert cis == expected and info["unit"] == "record" and info["n_records"] == 4 and "n_subjects" not in info


def test_the_report_names_staging_metrics_by_their_real_names() -> None:
    y, p, s = scored_nights(n_subjects=3)
    text = format_staging_report(staging_metrics(y, p, s, STAGES))
    for part in ("Cohen's kappa:", "macro F1:", "F1 per stage: W", "per-subject kappa over 3 subjects: mean",
                 "confusion matrix", "light"):
        assert part in text, part
    assert "AUROC" not in text


def test_sequence_keys_are_checked_with_clear_errors() -> None:
    with pytest.raises(RecipeError, match="did you mean 'transformer'"):
        Recipe.from_dict({"model": {"sequence_model": "transfomer"}})
    with pytest.raises(RecipeError, match="model.context_epochs' needs model.sequence_model"):
        Recipe.from_dict({"model": {"context_epochs": 2}})
    with pytest.raises(RecipeError, match="did you mean 'context_epochs'"):
        Recipe.from_dict({"model": {"sequence_model": "gru", "contxt_epochs": 2}})
    with pytest.raises(RecipeError, match="sequence_num_heads"):
        Recipe.from_dict({"model": {"sequence_model": "transformer", "sequence_hidden_size": 30, "sequence_num_heads": 4}})


# ------------------------------------------------------------------------------------- end to end on SHHS files
@pytest.fixture(scope="module")
def shhs_nights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SHHS-1 in the NSRR layout: 6 participants, six 30 s epochs each, ECG at 125 Hz among the PSG channels."""
    root = tmp_path_factory.mktemp("shhs_nights")
    cycle = [W, S1, S2, S3, R]
    for i in range(1, 7):
        shhs_record(root, "shhs1", f"shhs1-30000{i}", [cycle[(i + k) % len(cycle)] for k in range(6)], n_epochs=6)
    return root


@dataclass
class ShhsRun:
    run: Path
    backbone: Path
    data: Path
    stdout: str


@pytest.fixture(scope="module")
def shhs_run(shhs_nights: Path, tiny_backbone_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> ShhsRun:
    """The shipped SHHS recipe trained two steps through the CLI on a tiny ECGFounder (what a new user runs)."""
    root = tmp_path_factory.mktemp("shhs_run")
    backbone_dir = tiny_backbone_dirs["ecgfounder"]
    run = root / "run"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["train", str(recipes_dir() / "ecgfounder_lora_shhs_stages4.yaml"),
                     f"model.model_name_or_path={backbone_dir}", f"data.path={shhs_nights}",
                     f"data.cache_dir={root / 'cache'}", "model.sequence_hidden_size=8", "training.max_steps=2",
                     "training.per_device_train_batch_size=4", "training.per_device_eval_batch_size=8",
                     "training.eval_strategy=no", "training.save_strategy=no", "training.bootstrap_resamples=50",
                     f"output.output_dir={run}"])
    assert code == 0
    # train() leaves its FileHandler on the "ecg_adapt" logger; detach it so later log lines stay out of train.log
    run_logger = logging.getLogger("ecg_adapt")
    for handler in [h for h in run_logger.handlers if isinstance(h, logging.FileHandler)]:
        run_logger.removeHandler(handler)
        handler.close()
    return ShhsRun(run=run, backbone=backbone_dir, data=shhs_nights, stdout=stdout.getvalue())


def test_shhs_recipe_trains_a_lora_sequence_model_that_reloads_to_the_same_predictions(
    shhs_run: ShhsRun, tmp_path: Path
) -> None:
    out, run = shhs_run.stdout, shhs_run.run
    assert "test Cohen's kappa:" in out and "per-subject kappa over" in out and "confusion matrix" in out
    assert "AUROC" not in out.split("model:")[0]

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["primary_metric"] == "kappa" and metrics["selection"]["metric_for_best_model"] == "kappa"
    assert metrics["test"]["ci_info"]["unit"] == "subject"
    model_dir = run / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "ecg_sequence_classifier" and config["context"] == 3  # 1 epoch = three 10 s windows
    assert config["ecg_channels"] == ["ECG", "EKG"] and config["ecg_lead"] == "I" and config["epoch_seconds"] == 30
    assert config["windows_per_epoch"] == 3
    assert json.loads((model_dir / "adapter_config.json").read_text())["peft_type"] == "LORA"

    model = load_adapted(model_dir)
    assert isinstance(model, ECGSequenceClassifier)
    processor = ECGProcessor.from_pretrained(str(model_dir))
    saved = load_predictions(run / "predictions" / "test.npz")
    source = open_source("shhs", shhs_run.data, lead_name="I")
    task = source.task("stages4")
    ids = [str(i) for i in saved.record_ids]
    cache = build_cache(source, processor, ids, cache_dir=tmp_path / "cache2", progress=False)
    ds = ContextWindowDataset(cache, ids, task.encode([source.label_sets("stages4")[i] for i in ids]),
                              processor.contract.input_shape, model.config.context)
    batch = ds.__getitems__(list(range(len(ds))))
    with torch.no_grad():
        probs = torch.softmax(model(input_values=batch["input_values"], attention_mask=batch["attention_mask"]).logits, -1)
    per_epoch = aggregate_windows(probs.numpy(), batch["record_index"].numpy(), n_records=len(ids))
    # The run predicted with the context encoder's weights still trainable, where torch's CPU GRU takes another
    # kernel (last-bit differences); the frozen round trip is bit-exact (tests/test_sequence_adaptation.py).
    np.testing.assert_allclose(per_epoch, saved.y_score, rtol=0, atol=1e-6)


def test_the_trained_run_predicts_every_epoch_of_a_night_edf_as_it_scored_them_in_training(
    shhs_run: ShhsRun, tmp_path: Path
) -> None:
    # recipe -> LoRA sequence model -> `ecg-adapt predict MODEL night.edf`: one row per 30 s epoch, from the
    # channel the model recorded (no flag needed), with the probabilities the run saved for that night's epochs.
    saved = load_predictions(shhs_run.run / "predictions" / "test.npz")
    night = str(saved.record_ids[0]).split("/", 1)[0]
    edf = next((shhs_run.data / "polysomnography" / "edfs").rglob(f"{night}.edf"))
    out_csv, png = tmp_path / "night.csv", tmp_path / "night.png"
    assert main(["predict", str(shhs_run.run / "model"), str(edf), "-o", str(out_csv), "--hypnogram", str(png)]) == 0
    import pandas as pd

    rows = pd.read_csv(out_csv)
    assert len(rows) == 6 and list(rows["epoch"]) == list(range(6))  # the fixture nights are six whole epochs
    stages = ["W", "light", "deep", "REM"]
    probs = rows[stages].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert set(rows["predicted"]) <= set(stages) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    scored = {int(str(r).split("/", 1)[1]): i for i, r in enumerate(saved.record_ids) if str(r).startswith(night + "/")}
    for epoch, i in scored.items():
        np.testing.assert_allclose(probs[epoch], saved.y_score[i], atol=1e-4)


def test_the_sequence_model_is_pushed_with_its_card_and_loads_back_from_the_hub(
    shhs_run: ShhsRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    # merged: LoRA folded into the backbone, the sequence model beside it, one full model.safetensors
    merged = prepare_push_folder(shhs_run.run, BACKBONE_REPO, merged=True, license="apache-2.0",
                                 output_dir=tmp_path / "merged")
    assert (merged / "model.safetensors").exists() and not (merged / "adapter_model.safetensors").exists()
    assert json.loads((merged / "config.json").read_text())["model_type"] == "ecg_sequence_classifier"
    full = load_adapted(merged)
    assert isinstance(full, ECGSequenceClassifier) and full.config.ecg_channels == ["ECG", "EKG"]
    with FakeHub() as hub:
        api = HfApi(endpoint=hub.url, token="dummy")
        api.create_repo(BACKBONE_REPO)
        api.upload_folder(repo_id=BACKBONE_REPO, folder_path=shhs_run.backbone, commit_message="tiny backbone")
        push_to_hub(shhs_run.run, "ecg-test/sleep-lora", base_model=BACKBONE_REPO, token="dummy",
                    license="apache-2.0", endpoint=hub.url)
        files = hub.repo("ecg-test/sleep-lora").files("main")
        folder = Path(huggingface_hub.snapshot_download("ecg-test/sleep-lora", endpoint=hub.url, token="dummy",
                                                        local_dir=tmp_path / "download"))
    assert {"sequence_model.safetensors", "adapter_model.safetensors", "head.safetensors", "config.json",
            "README.md", "model_complete.json"} <= set(files)
    assert "model.safetensors" not in files  # the backbone stays where it is
    card = files["README.md"].decode()
    assert "A sleep-staging sequence model from the ECG" in card and "a bidirectional GRU runs over the 7" in card
    assert "labelled `ECG`, `EKG`" in card and "lead `I`" in card
    assert "Test Cohen's kappa **" in card and "per-subject Cohen's kappa" in card and "confusion matrix" in card
    assert "whole subjects resampled" in card and "macro AUROC **" not in card
    meta = ModelCard(card).data
    assert "sleep-staging" in meta.tags and "cohen_kappa" in meta.metrics
    kappa = [r for r in meta.eval_results if r.metric_type == "cohen_kappa" and r.metric_config is None
             and r.dataset_split == "test"]
    assert [r.metric_value for r in kappa] == [json.loads((shhs_run.run / "metrics.json").read_text())["test"]["kappa"]]

    pushed = load_adapted(folder, backbone_name_or_path=str(shhs_run.backbone))
    local = load_adapted(shhs_run.run / "model")
    x = torch.randn((2, local.config.window_count) + tuple(ECGProcessor.from_pretrained(str(folder)).contract.input_shape),
                    generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(pushed(input_values=x).logits, local(input_values=x).logits)
        torch.testing.assert_close(full(input_values=x).logits, local(input_values=x).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind,context_epochs,windows", [("none", 2, 1), ("transformer", 0, 1)])
def test_other_sequence_models_train_with_the_context_they_say(
    kind: str, context_epochs: int, windows: int, shhs_run: ShhsRun, tmp_path: Path
) -> None:
    """``none`` reads the centre window only whatever context_epochs says; a transformer with no context sees K=1."""
    recipe = Recipe.from_yaml(recipes_dir() / "ecgfounder_lora_shhs_stages4.yaml", [
        f"model.model_name_or_path={shhs_run.backbone}", f"data.path={shhs_run.data}",
        f"data.cache_dir={tmp_path / 'cache'}", f"model.sequence_model={kind}", f"model.context_epochs={context_epochs}",
        "model.sequence_hidden_size=8", "model.sequence_num_heads=2", "training.max_steps=1",
        "training.per_device_train_batch_size=4", "training.eval_strategy=no", "training.save_strategy=no",
        "training.bootstrap_resamples=0", f"output.output_dir={tmp_path / 'run'}"])
    metrics = train(recipe)
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["sequence_model"] == kind and 2 * config["context"] + 1 == windows
    assert metrics["global_step"] == 1 and "confusion_matrix" in metrics["test"]
    assert (tmp_path / "run" / "model" / ("sequence_model.safetensors")).exists() == (kind != "none")
