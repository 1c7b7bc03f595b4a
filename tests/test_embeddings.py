"""The embedding cache: a linear / attention probe on cached features equals the probe that re-runs the frozen
backbone, never calls the backbone while training, and its cache is reused, rebuilt and never half-used."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ecg_adapt.data import open_source
from ecg_adapt.data.cache import REPORT_FILE
from ecg_adapt.data.synthetic import make_synthetic_ptbxl
from ecg_adapt.evaluation.predictions import load_predictions
from ecg_adapt.models.classifier import ECGClassifier
from ecg_adapt.training import Recipe, train
from ecg_adapt.training import embeddings as emb_module


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_ptbxl(tmp_path_factory.mktemp("synth"), n_records=60, progress=False)


def _recipe(out: Path, cache: Path, data_root: Path, backbone: Path, pooling: str = "mean", **training) -> Recipe:
    return Recipe.from_dict({
        "model": {"model_name_or_path": str(backbone), "pooling": pooling},
        "adaptation": {"method": "linear_probe"},
        "data": {"path": str(data_root), "cache_dir": str(cache), "max_records_per_split": 16},
        "task": {"name": "superdiagnostic"},
        "training": {"per_device_train_batch_size": 8, "per_device_eval_batch_size": 16, "num_train_epochs": 2,
                     "learning_rate": 1e-2, "logging_steps": 1, "bootstrap_resamples": 0, **training},
        "output": {"output_dir": str(out)},
    })


class _CountBackbone:
    """Counts forward calls of every loaded backbone (a forward hook on each ECGClassifier's backbone)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.embedding_builds = 0
        original = ECGClassifier.__init__

        def init(clf, *a, **k):  # type: ignore[no-untyped-def]
            original(clf, *a, **k)
            clf.backbone.register_forward_hook(lambda *_: self._count())

        monkeypatch.setattr(ECGClassifier, "__init__", init)
        build = emb_module.build_embedding_cache

        def counted_build(*a, **k):  # type: ignore[no-untyped-def]
            before = self.calls
            out = build(*a, **k)
            self.embedding_builds += 1
            self.encode_calls = self.calls - before
            return out

        monkeypatch.setattr("ecg_adapt.training.trainer.build_embedding_cache", counted_build)

    def _count(self) -> None:
        self.calls += 1


def _embedding_dirs(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if p.name.startswith("embeddings-") and (p / REPORT_FILE).exists())


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_cached_probe_equals_reencoding_probe_and_never_runs_the_backbone_in_training(
        tmp_path: Path, data_root: Path, tiny_backbone_dir: Path, monkeypatch: pytest.MonkeyPatch, pooling: str) -> None:
    counter = _CountBackbone(monkeypatch)
    slow = train(_recipe(tmp_path / "slow", tmp_path / "cache", data_root, tiny_backbone_dir, pooling, embedding_cache=False))
    slow_calls = counter.calls
    assert slow_calls > 0 and counter.embedding_builds == 0
    counter.calls = 0
    fast = train(_recipe(tmp_path / "fast", tmp_path / "cache", data_root, tiny_backbone_dir, pooling))
    assert counter.embedding_builds == 1
    # every backbone call of the cached run is the one-off encoding; training and evaluation never call it
    assert counter.calls == counter.encode_calls > 0
    assert counter.calls < slow_calls
    assert len(_embedding_dirs(tmp_path / "cache")) == 1
    assert fast["global_step"] == slow["global_step"]
    assert abs(fast["test"]["macro_auroc"] - slow["test"]["macro_auroc"]) < 1e-3
    a = load_predictions(tmp_path / "fast" / "predictions" / "test.npz")
    b = load_predictions(tmp_path / "slow" / "predictions" / "test.npz")
    np.testing.assert_allclose(a.y_score, b.y_score, atol=1e-4)
    assert [h["step"] for h in fast["history"]] == [h["step"] for h in slow["history"]]


def test_saved_model_of_the_cached_path_predicts_what_the_run_evaluated(
        tmp_path: Path, data_root: Path, tiny_backbone_dir: Path) -> None:
    from ecg_adapt.inference import Predictor

    train(_recipe(tmp_path / "run", tmp_path / "cache", data_root, tiny_backbone_dir))
    saved = load_predictions(tmp_path / "run" / "predictions" / "test.npz")
    source = open_source("ptbxl", data_root)
    ids = [i for i in source.split_ids(source.task("superdiagnostic"), "test")[:16]]
    records = [rec for _, rec in source.iter_records(ids)]
    preds = Predictor.from_pretrained(tmp_path / "run" / "model").predict(records)
    by_id = {str(r): i for i, r in enumerate(saved.record_ids)}
    labels = saved.labels
    for rid, p in zip(ids, preds):
        np.testing.assert_allclose([p.probabilities[name] for name in labels], saved.y_score[by_id[str(rid)]], atol=1e-5)


def test_cache_is_reused_and_rebuilt_when_the_backbone_weights_change(
        tmp_path: Path, data_root: Path, tiny_backbone_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = _CountBackbone(monkeypatch)
    train(_recipe(tmp_path / "a", tmp_path / "cache", data_root, tiny_backbone_dir))
    first = _embedding_dirs(tmp_path / "cache")
    counter.calls = 0
    train(_recipe(tmp_path / "b", tmp_path / "cache", data_root, tiny_backbone_dir))
    assert counter.calls == 0  # reused: not one backbone call
    assert _embedding_dirs(tmp_path / "cache") == first
    # the same backbone with one weight changed: a new cache
    other = tmp_path / "other_backbone"
    shutil.copytree(tiny_backbone_dir, other)
    from safetensors.torch import load_file, save_file

    weights = load_file(other / "model.safetensors")
    name = next(k for k in weights if k.endswith("weight"))
    weights[name] = weights[name] + 0.01
    save_file(weights, other / "model.safetensors", metadata={"format": "pt"})
    train(_recipe(tmp_path / "c", tmp_path / "cache", data_root, other))
    assert counter.calls > 0
    assert len(_embedding_dirs(tmp_path / "cache")) == 2


def test_an_interrupted_build_leaves_no_cache_that_is_reused(
        tmp_path: Path, data_root: Path, tiny_backbone_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = emb_module._encode
    calls = {"n": 0}

    def failing(*a, **k):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed mid-build")
        return real(*a, **k)

    monkeypatch.setattr(emb_module, "_encode", failing)
    with pytest.raises(KeyboardInterrupt):
        train(_recipe(tmp_path / "a", tmp_path / "cache", data_root, tiny_backbone_dir, per_device_eval_batch_size=8))
    assert not any(p.name.startswith("embeddings-") for p in (tmp_path / "cache").iterdir())
    monkeypatch.setattr(emb_module, "_encode", real)
    metrics = train(_recipe(tmp_path / "b", tmp_path / "cache", data_root, tiny_backbone_dir, per_device_eval_batch_size=8))
    (built,) = _embedding_dirs(tmp_path / "cache")
    report = json.loads((built / REPORT_FILE).read_text())
    from ecg_adapt.data.cache import ECGCache

    assert len(ECGCache(built)) == report["n_windows"] == len(ECGCache(report["window_cache"])) > 0
    assert metrics["global_step"] > 0


def test_resume_on_the_cached_path_ends_where_the_uninterrupted_run_does(
        tmp_path: Path, data_root: Path, tiny_backbone_dir: Path) -> None:
    full = train(_recipe(tmp_path / "a", tmp_path / "cache", data_root, tiny_backbone_dir, save_strategy="no"))
    cfg = dict(save_strategy="steps", save_steps=2, save_total_limit=None)
    train(_recipe(tmp_path / "b", tmp_path / "cache", data_root, tiny_backbone_dir, **cfg))
    run = tmp_path / "b"
    ckpts = sorted((run / "checkpoints").iterdir(), key=lambda p: int(p.name.split("_")[1]))
    shutil.rmtree(ckpts[-1])  # interrupted before the last checkpoint
    (run / "metrics.json").unlink()
    resumed = train(_recipe(tmp_path / "b", tmp_path / "cache", data_root, tiny_backbone_dir, resume_from_checkpoint="latest",
                            **cfg))
    assert resumed["global_step"] == full["global_step"]
    assert resumed["test"]["macro_auroc"] == pytest.approx(full["test"]["macro_auroc"], abs=1e-6)


def test_embedding_dataset_rejects_a_cache_of_other_windows(tmp_path: Path, data_root: Path, tiny_backbone_dir: Path) -> None:
    train(_recipe(tmp_path / "a", tmp_path / "cache", data_root, tiny_backbone_dir, max_steps=1))
    from ecg_adapt.data.cache import ECGCache, WindowDataset

    (emb_dir,) = _embedding_dirs(tmp_path / "cache")
    windows = ECGCache(json.loads((emb_dir / REPORT_FILE).read_text())["window_cache"])
    ds = WindowDataset(windows, [str(r) for r in windows.row_record_ids[:2]], np.zeros((2, 5), np.float32), (12, 1))
    emb = ECGCache(emb_dir)
    emb.row_record_ids = emb.row_record_ids[:-1]
    emb.dataset = emb.dataset.select(range(len(emb) - 1))
    with pytest.raises(ValueError, match="were not built from each other"):
        emb_module.EmbeddingDataset(emb, ds)


def test_embed_command_builds_the_cache_a_probe_run_then_reuses(
        tmp_path: Path, data_root: Path, tiny_backbone_dir: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ecg_adapt.cli import main

    recipe = _recipe(tmp_path / "run", tmp_path / "cache", data_root, tiny_backbone_dir)
    (tmp_path / "r.yaml").write_text(recipe.to_yaml())
    assert main(["embed", str(tmp_path / "r.yaml")]) == 0
    out = capsys.readouterr().out
    (built,) = _embedding_dirs(tmp_path / "cache")
    assert str(built) in out and "windows/s" in out and "MB" in out
    counter = _CountBackbone(monkeypatch)
    train(recipe)
    assert counter.calls == 0  # the run trained on the cache `embed` built
    assert main(["embed", str(tmp_path / "run")]) == 0  # a run folder: its recipe.yaml
    assert "reused" in capsys.readouterr().out


def test_backbone_fingerprint_follows_every_tensor_including_scalar_buffers() -> None:
    net = torch.nn.Sequential(torch.nn.Conv1d(2, 4, 3), torch.nn.BatchNorm1d(4))
    before = emb_module.backbone_fingerprint(net)
    assert emb_module.backbone_fingerprint(net) == before
    net[1].num_batches_tracked += 1  # a 0-dim integer buffer
    after_counter = emb_module.backbone_fingerprint(net)
    assert after_counter != before
    with torch.no_grad():
        net[0].weight[0, 0, 0] += 1e-6
    assert emb_module.backbone_fingerprint(net) not in (before, after_counter)
