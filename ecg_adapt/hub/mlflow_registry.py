"""A second target for sharing runs: an MLflow model registry (optional extra ``ecg_adapt[mlflow]``).

The run's ``model/`` folder is logged as the artifacts of an MLflow run (with the run's metrics and resolved
recipe as metrics and params) and registered as a new version of a registered model; ``models:/NAME/VERSION``
(or ``models:/NAME@alias``) URIs load it back as a :class:`~ecg_adapt.inference.Predictor`. The folder is
registered as it is (not as an MLflow "flavor"): ecg_adapt itself rebuilds the model from it, exactly as from
a local folder or the Hugging Face Hub.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..utils import flatten_dict
from .errors import HubError


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise HubError("MLflow is not installed: pip install 'ecg_adapt[mlflow]'") from e
    return mlflow


def register_to_mlflow(run_dir: str | os.PathLike, name: str, tracking_uri: str | None = None,
                       alias: str | None = None) -> str:
    """Log ``run_dir/model`` to MLflow and register it as a new version of ``name``.

    Returns the ``models:/NAME/VERSION`` URI. ``tracking_uri`` defaults to ``$MLFLOW_TRACKING_URI``
    (e.g. ``sqlite:////path/mlflow.db`` or ``http://host:5000``).

    Example:
        >>> register_to_mlflow("runs/demo", "ecg-superdiagnostic-lora", "sqlite:////tmp/mlflow.db")  # doctest: +SKIP
        'models:/ecg-superdiagnostic-lora/1'
    """
    mlflow = _mlflow()
    from mlflow.tracking import MlflowClient

    run_dir = Path(run_dir)
    model_dir = run_dir / "model" if (run_dir / "model").is_dir() else run_dir
    if not (model_dir / "adaptation_config.json").exists():
        raise HubError(f"{run_dir} holds no model saved by ecg_adapt (no adaptation_config.json)")
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    with mlflow.start_run(run_name=run_dir.name) as run:
        for split in ("validation", "test"):
            for key, value in (metrics.get(split) or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    mlflow.log_metric(f"{split}_{key}", float(value))
        recipe = run_dir / "recipe.yaml"
        if recipe.exists():
            import yaml

            params = flatten_dict(yaml.safe_load(recipe.read_text()) or {})
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_artifacts(str(model_dir), artifact_path="model")
        source = mlflow.get_artifact_uri("model")
        run_id = run.info.run_id
    try:
        client.get_registered_model(name)
    except Exception:
        client.create_registered_model(name)
    version = client.create_model_version(name, source=source, run_id=run_id)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return f"models:/{name}/{version.version}"


def download_from_mlflow(uri: str, tracking_uri: str | None = None, dst: str | os.PathLike | None = None) -> Path:
    """Download a registered ecg_adapt model (``models:/NAME/VERSION`` or ``models:/NAME@alias``) to a folder."""
    mlflow = _mlflow()
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=None if dst is None else str(dst))
    except Exception as e:
        raise HubError(f"Could not download {uri} from MLflow ({mlflow.get_tracking_uri()}): {e}") from e
    return Path(local)
