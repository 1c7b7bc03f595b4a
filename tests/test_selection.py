"""Model selection: the tracker picks the known best evaluation and stops on patience; the best weights are
saved atomically and restored exactly."""

from __future__ import annotations

import os

import pytest
import torch

from ecg_adapt.training.selection import BEST_DIR, BestTracker, load_best, read_best, save_best


def test_tracker_picks_the_known_best_epoch_and_stops_after_patience():
    t = BestTracker("macro_auroc", patience=3)
    history = [0.61, 0.70, 0.74, 0.73, 0.74, 0.72, 0.90]
    stopped_at = None
    for epoch, v in enumerate(history):
        t.update(v, step=10 * (epoch + 1), epoch=epoch)
        if t.should_stop:
            stopped_at = epoch
            break
    assert (t.best_epoch, t.best_step, t.best_value) == (2, 30, 0.74)  # 0.74 again is no improvement
    assert stopped_at == 5


def test_loss_is_minimised_and_nan_is_never_best():
    t = BestTracker("loss")
    assert t.greater_is_better is False
    assert t.update(0.9, 1, 0) and t.update(0.5, 2, 1) and not t.update(float("nan"), 3, 2) and not t.update(0.6, 4, 3)
    assert t.best_step == 2


def test_threshold_and_bad_settings():
    t = BestTracker("kappa", threshold=0.05)
    t.update(0.5, 1, 0)
    assert not t.update(0.53, 2, 1) and t.update(0.56, 3, 2)
    with pytest.raises(ValueError, match="early_stopping_patience"):
        BestTracker("kappa", patience=0)


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    m[0].weight.requires_grad_(False)  # frozen: not part of the selected state
    m.train()(torch.randn(8, 4))  # move the BatchNorm statistics
    return m


def test_best_weights_roundtrip_exactly_and_frozen_weights_are_not_saved(tmp_path):
    model = _model(0)
    t = BestTracker("macro_auroc")
    t.update(0.8, 5, 0)
    save_best(model, tmp_path, t)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    other = _model(1)
    other[0].weight.data.copy_(model[0].weight)  # the frozen part comes from the same backbone
    restored = load_best(other, tmp_path)
    assert restored.best_step == 5
    for k, v in other.state_dict().items():
        assert torch.equal(v, expected[k]), k
    assert read_best(tmp_path).best_value == 0.8


def test_an_incomplete_best_folder_is_never_used(tmp_path):
    model = _model(0)
    (tmp_path / BEST_DIR).mkdir()
    (tmp_path / BEST_DIR / "model.safetensors").write_bytes(b"partial")
    assert read_best(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="no complete best checkpoint"):
        load_best(model, tmp_path)


def test_a_new_best_replaces_the_old_one_and_leaves_no_temporary_folders(tmp_path):
    model = _model(0)
    t = BestTracker("macro_auroc")
    t.update(0.7, 1, 0)
    save_best(model, tmp_path, t)
    t.update(0.8, 2, 1)
    save_best(model, tmp_path, t)
    assert read_best(tmp_path).best_step == 2
    assert sorted(os.listdir(tmp_path)) == [BEST_DIR]


def test_mismatched_best_checkpoint_is_refused(tmp_path):
    t = BestTracker("macro_auroc")
    t.update(0.7, 1, 0)
    save_best(_model(0), tmp_path, t)
    with pytest.raises(ValueError, match="does not match"):
        load_best(torch.nn.Sequential(torch.nn.Linear(4, 3)), tmp_path)


def test_a_save_killed_midway_leaves_the_previous_best_and_its_debris_is_cleared(tmp_path, monkeypatch):
    import ecg_adapt.training.selection as selection

    model = _model(0)
    t = BestTracker("macro_auroc")
    t.update(0.7, 1, 0)
    save_best(model, tmp_path, t)
    t.update(0.8, 2, 1)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies while writing the new weights

    monkeypatch.setattr(selection, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        save_best(model, tmp_path, t)
    assert read_best(tmp_path).best_step == 1  # the previous best is intact
    (tmp_path / "best.tmp").mkdir()  # what a hard kill (no exception handler) would leave
    monkeypatch.undo()
    save_best(model, tmp_path, t)
    assert sorted(os.listdir(tmp_path)) == [BEST_DIR] and read_best(tmp_path).best_step == 2
