"""The examples run as a user would run them (tiny settings), and the CLI fails clearly on bad recipes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_quickstart_and_predict_folder_examples(tmp_path: Path) -> None:
    out = tmp_path / "qs"
    proc = _run("examples/quickstart.py", "--output", str(out), "--epochs", "1", "--records", "60")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test macro AUROC:" in proc.stdout and "record " in proc.stdout
    folder = ROOT.parent / "shared" / "ecg-samples" / "cinc2021"
    if not folder.exists():  # fall back to the synthetic records
        folder = out / "synthetic_ptbxl" / "records100"
    pred = _run("examples/predict_folder.py", str(out / "model"), str(folder))
    assert pred.returncode == 0, pred.stderr[-3000:]
    lines = pred.stdout.strip().splitlines()
    assert lines[0] == "record_id,n_windows,predicted,CD,HYP,MI,NORM,STTC"
    assert len(lines) > 1 and all(len(line.split(",")) == 8 for line in lines[1:])


def test_cli_help_and_misspelt_recipe_key(tmp_path: Path) -> None:
    help_ = _run("-m", "ecg_adapt.cli", "train", "--help")
    assert help_.returncode == 0 and "section.key=value" in help_.stdout
    recipe = tmp_path / "r.yaml"
    recipe.write_text("training:\n  num_train_epoch: 3\n")
    proc = _run("-m", "ecg_adapt.cli", "train", str(recipe))
    assert proc.returncode == 2
    assert "Unknown recipe key 'training.num_train_epoch' (did you mean 'num_train_epochs'?)" in proc.stderr
    proc = _run("-m", "ecg_adapt.train", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
