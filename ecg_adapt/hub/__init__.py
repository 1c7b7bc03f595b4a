"""Share adapted ECG models on the Hugging Face Hub and load them back.

* :func:`push_to_hub` uploads a training run: the model folder's files (for LoRA and linear probes only what
  was trained, never the backbone weights), ``metrics.json``, the resolved ``recipe.yaml`` and a model card
  (:func:`build_model_card`) whose metadata carry the base model, its licence and the run's metrics.
* :func:`prepare_push_folder` builds that folder locally (no network), e.g. to inspect it first.
* :func:`from_hub` loads a pushed repository (or a local model/run folder) as a ready
  :class:`~ecg_adapt.inference.Predictor`; the backbone is fetched from its recorded hub id, and
  ``HF_HUB_OFFLINE=1`` works from the cache; it also takes MLflow registry URIs (``models:/NAME/VERSION``).
* :func:`register_to_mlflow` registers a run in an MLflow model registry (optional extra ``[mlflow]``), for
  teams without a Hugging Face account.

Example:
    >>> from ecg_adapt.hub import push_to_hub, from_hub
    >>> push_to_hub("runs/demo", "me/ecg-lora", base_model="me/hubert-ecg-tiny")   # doctest: +SKIP
    >>> predictor = from_hub("me/ecg-lora")                                        # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..utils import lazy_exports

# Submodule -> the public names it defines, each imported on first access (lazy_exports).
_EXPORTS: dict[str, list[str]] = {
    "errors": ["HubError"],
    "card": ["build_model_card", "resolve_license"],
    "load": ["from_hub"],
    "mlflow_registry": ["download_from_mlflow", "register_to_mlflow"],
    "push": ["preflight_push", "prepare_push_folder", "push_to_hub"],
}

if TYPE_CHECKING:
    from .card import build_model_card, resolve_license
    from .errors import HubError
    from .load import from_hub
    from .mlflow_registry import download_from_mlflow, register_to_mlflow
    from .push import preflight_push, prepare_push_folder, push_to_hub

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
