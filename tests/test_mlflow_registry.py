"""MLflow model registry as a second sharing target (local sqlite-backed registry, no server)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

mlflow = pytest.importorskip("mlflow")

from ecg_adapt import ECGClassifier, adapt, load_backbone, load_processor, save_adapted  # noqa: E402
from ecg_adapt.data import ECGRecord  # noqa: E402
from ecg_adapt.hub import HubError, from_hub, register_to_mlflow  # noqa: E402
from ecg_adapt.inference import Predictor  # noqa: E402


def test_register_and_load_back_by_models_uri(tiny_backbone_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # MLflow puts local artifacts under the working directory
    uri_db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri_db)
    run = tmp_path / "run"
    torch.manual_seed(0)
    clf = ECGClassifier.from_backbone(load_backbone(tiny_backbone_dir), ["NORM", "MI"])
    model = adapt(clf, "lora", r=4)
    for p in model.parameters():  # make the adapter non-trivial
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)
    save_adapted(model, run / "model", load_processor(tiny_backbone_dir))
    (run / "metrics.json").write_text(json.dumps({"test": {"macro_auroc": 0.75, "n_samples": 10}, "validation": {"macro_auroc": 0.8}}))
    (run / "recipe.yaml").write_text("adaptation:\n  method: lora\n  r: 4\n")

    uri = register_to_mlflow(run, "ecg-test", alias="champion")
    assert uri == "models:/ecg-test/1"
    assert register_to_mlflow(run, "ecg-test") == "models:/ecg-test/2"
    client = mlflow.tracking.MlflowClient()
    version = client.get_model_version("ecg-test", "1")
    logged = client.get_run(version.run_id).data
    assert logged.metrics["test_macro_auroc"] == 0.75 and logged.params["adaptation.r"] == "4"

    record = ECGRecord(np.random.default_rng(0).normal(size=(12, 5000)) * 0.3, 500.0,
                       ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"], record_id="r")
    local = Predictor.from_pretrained(run / "model").predict([record])[0].probabilities
    for ref in (uri, "models:/ecg-test@champion"):
        remote = from_hub(ref).predict([record])[0].probabilities
        assert remote == local
    with pytest.raises(HubError, match="Could not download models:/ecg-test/9"):
        from_hub("models:/ecg-test/9")
    with pytest.raises(HubError, match="no model saved by ecg_adapt"):
        register_to_mlflow(tmp_path, "x")
