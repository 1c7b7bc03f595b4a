"""Load a model pushed by ecg_adapt — or a local model/run folder — as a ready predictor."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from ..adaptation.core import ADAPTATION_CONFIG_NAME
from .._version import __version__
from ..inference import Predictor
from .errors import HubError


def model_folder(path: str | os.PathLike) -> Path:
    """The model folder inside ``path``: ``path`` itself (a saved model or a pushed repo snapshot) or
    ``path/model`` (a training run folder)."""
    path = Path(path)
    if (path / ADAPTATION_CONFIG_NAME).exists():
        return path
    if (path / "model" / ADAPTATION_CONFIG_NAME).exists():
        return path / "model"
    raise FileNotFoundError(f"{path} holds no {ADAPTATION_CONFIG_NAME} (nor model/{ADAPTATION_CONFIG_NAME}): "
                            "not a model saved by ecg_adapt")


def download(repo_id: str, revision: str | None = None, token: str | bool | None = None,
             cache_dir: str | os.PathLike | None = None) -> Path:
    """Download (or find in the cache) a pushed repository; ``HF_HUB_OFFLINE=1`` uses the cache only."""
    try:
        folder = snapshot_download(repo_id, revision=revision, token=token, cache_dir=cache_dir,
                                   library_name="ecg_adapt", library_version=__version__)
    except (RepositoryNotFoundError, GatedRepoError) as e:
        raise HubError(f"{repo_id} is not on the Hub, or it is private/gated and this token cannot read it "
                       f"(log in with `hf auth login` or set HF_TOKEN). ({type(e).__name__})") from e
    except RevisionNotFoundError as e:
        raise HubError(f"{repo_id} has no revision {revision!r}") from e
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        raise HubError(f"{repo_id}{'@' + revision if revision else ''} is neither reachable on the Hub nor in the "
                       f"local cache: connect once (without HF_HUB_OFFLINE) to download it. ({e})") from e
    return Path(folder)


def from_hub(
    repo_id_or_path: str | os.PathLike,
    revision: str | None = None,
    missing_leads: str | None = None,
    *,
    aggregation: str = "mean",
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Predictor:
    """A :class:`~ecg_adapt.inference.Predictor` from a hub id, a local model folder or a run folder.

    A hub id is fetched with ``snapshot_download`` (which also works with ``HF_HUB_OFFLINE=1`` from the
    cache). The backbone is then loaded from the id or path recorded in the model's ``config.json``
    (``backbone_name_or_path``; a pushed model records a hub id, fetched the same way), the adapter or head
    is applied, and the processor, labels and thresholds saved with the model are used.

    Args:
        repo_id_or_path: ``namespace/name`` on the Hub, or a folder (an existing path always wins).
        revision: branch or commit of a hub repository.
        missing_leads: ``"zero"`` or ``"mask"`` to accept records lacking some of the model's leads.
        aggregation: window-to-record aggregation, ``"mean"`` or ``"max"``.

    Example:
        >>> predictor = from_hub("me/ecg-lora")                                  # doctest: +SKIP
        >>> predictor.predict([read_wfdb("records/HR06000")])[0].predicted       # doctest: +SKIP
    """
    if str(repo_id_or_path).startswith("models:/"):  # an MLflow registry URI
        from .mlflow_registry import download_from_mlflow

        folder = download_from_mlflow(str(repo_id_or_path))
        return Predictor.from_pretrained(folder, missing_leads=missing_leads, aggregation=aggregation)
    local = Path(repo_id_or_path).expanduser()
    if local.exists():
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to hub repositories, but {local} is a local folder")
        folder = model_folder(local)
    else:
        name = str(repo_id_or_path)
        try:
            validate_repo_id(name)
        except HFValidationError:
            raise FileNotFoundError(f"{name} is neither an existing folder nor a Hugging Face repo id") from None
        folder = model_folder(download(name, revision=revision, token=token, cache_dir=cache_dir))
    try:
        return Predictor.from_pretrained(folder, missing_leads=missing_leads, aggregation=aggregation)
    except OSError as e:  # includes the hub client's LocalEntryNotFoundError for an uncached backbone offline
        raise HubError(f"Could not load the model in {folder} or its backbone: {e}") from e
