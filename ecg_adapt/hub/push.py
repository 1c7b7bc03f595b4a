"""Push a training run to the Hugging Face Hub.

A push is one commit holding exactly the folder :func:`prepare_push_folder` builds:

* the files of the run's ``model/`` folder — for ``lora`` and ``linear_probe`` only what was trained (the
  backbone weights are never uploaded: a check reads the tensor names before anything leaves the machine);
  with ``merged=True`` a LoRA run is merged into its backbone with peft's ``merge_and_unload()`` and saved as
  a full model instead;
* ``metrics.json`` and the resolved ``recipe.yaml`` of the run;
* ``README.md``, the model card (:func:`~ecg_adapt.hub.card.build_model_card`), replacing peft's generic one.

The backbone recorded in the pushed configs must be loadable by others, so a run trained on a local folder
needs ``base_model="<hub id>"`` (the same weights, pushed or released there); every reference to the local
folder is rewritten to that id. The local run folder is only read, never modified, whatever happens.

Only ``huggingface_hub``'s client is used (``create_repo``, ``create_branch``, ``list_repo_files``,
``upload_folder``); the endpoint follows ``HF_ENDPOINT`` unless ``endpoint=`` is given.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import CommitInfo, HfApi, get_token
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id
from safetensors import safe_open

from .._version import __version__
from .errors import HubError
from .card import CARD_NAME, RUN_FILES, build_model_card, named_release

logger = logging.getLogger(__name__)

# Files that hold a whole model (backbone included): never part of an adapter-only push.
FULL_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                     "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")
# Files that mark a repository as written by ecg_adapt (every push has it).
ECG_ADAPT_MARKER = "adaptation_config.json"


# -- where the backbone lives ------------------------------------------------------------------------
def _is_hub_id(name: str) -> bool:
    if not name or Path(name).expanduser().exists():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _registry_release(name: str | None) -> dict[str, Any] | None:
    """The registry release ``name`` names (a registry name or an original hub repository), if any; a local
    folder of that name is a folder."""
    if not name or Path(name).expanduser().exists():
        return None
    return named_release(name)


def resolve_base_model(recorded: str | None, base_model: str | None) -> str:
    """What the pushed model records for its backbone: a name ``load_backbone`` resolves to the same weights.

    A run trained on a hub id or a registry release records it; a run trained on a local folder (a converted
    release, the embedded demo backbone) must be given the hub id of the same weights, or the registry name or
    original hub repository of the release they were converted from (``ecgfounder-12lead``,
    ``PKUDigitalHealth/ECGFounder``), which others can download. A registry release is recorded by its registry
    name (a repository holding several release files names the file exactly that way); the card's metadata names
    its hub repository.
    """
    given, trained = _registry_release(base_model), _registry_release(recorded)
    if given is not None or (base_model is None and trained is not None):
        variant = given or trained
        if given is not None and trained is not None and given["name"] != trained["name"]:
            # base_model names the repository that holds the release the run was trained on: keep that file
            from ..models.pretrained import find_variant

            if find_variant(str(base_model)) is None and (trained.get("release") or {}).get("repo_id") == \
                    (given.get("release") or {}).get("repo_id"):
                variant = trained
            else:
                raise HubError(f"The run was trained on the release {trained['name']!r} but base_model={base_model!r} "
                               f"is {given['name']!r}: the adapter only fits the weights it was trained on.")
        release = variant.get("release")
        if not (isinstance(release, dict) and release.get("repo_id")):
            from ..models.pretrained import external_release_message

            hosted = isinstance(release, dict) and bool(release.get("url"))
            raise HubError(
                f"{variant['name']} is {'released on ' + release['host'] if hosted else 'not released on the Hub'}, "
                "so nobody can fetch it from this model's card. Upload the converted backbone to the Hub, if its "
                f"licence allows ({variant.get('redistribution', 'see the registry')}), and pass "
                f"--base-model <namespace/name>." + (f" ({external_release_message(variant)})" if hosted else ""))
        return str(variant["name"])
    if base_model is not None:
        if not _is_hub_id(base_model):
            raise HubError(f"base_model={base_model!r} is not a Hugging Face repo id (namespace/name), or it is a "
                           "local folder: give the hub id under which the backbone weights can be downloaded")
        if recorded and _is_hub_id(recorded) and recorded != base_model:
            raise HubError(f"The run was trained on the hub backbone {recorded!r} but base_model={base_model!r}: "
                           "the adapter only fits the weights it was trained on. Leave base_model out (or equal).")
        return base_model
    if recorded and _is_hub_id(recorded):
        return recorded
    where = f"the local folder {recorded!r}, which nobody else can load" if recorded else "not recorded"
    raise HubError(
        f"The run's backbone is {where}. Upload those backbone "
        "weights to the Hub (or use the released repo they were converted from) and pass "
        "base_model='<namespace/name>': the pushed configs will record that id."
    )


# -- the folder ----------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _rewrite_backbone_references(folder: Path, base_model: str) -> None:
    """Point every config at the hub id of the backbone (instead of a local folder)."""
    cfg_path = folder / "config.json"
    if cfg_path.exists():
        cfg = _read_json(cfg_path)
        cfg["backbone_name_or_path"] = base_model
        if isinstance(cfg.get("backbone_config"), dict) and "_name_or_path" in cfg["backbone_config"]:
            cfg["backbone_config"]["_name_or_path"] = base_model
        if "_name_or_path" in cfg:
            cfg["_name_or_path"] = base_model
        _write_json(cfg_path, cfg)
    meta_path = folder / "adaptation_config.json"
    if meta_path.exists():
        meta = _read_json(meta_path)
        meta["backbone_name_or_path"] = base_model
        _write_json(meta_path, meta)
    peft_path = folder / "adapter_config.json"
    if peft_path.exists():
        peft_cfg = _read_json(peft_path)
        peft_cfg["base_model_name_or_path"] = base_model
        _write_json(peft_path, peft_cfg)


def _check_adapter_only(folder: Path, method: str) -> None:
    """Refuse to push backbone weights with an adapter-only method (reads tensor names only)."""
    present = sorted(n for n in FULL_WEIGHT_FILES if (folder / n).exists())
    if present:
        raise HubError(f"A {method} push must not contain the backbone weights, but the folder holds {present}")
    from ..adaptation import get_method
    from ..adaptation.core import SEQUENCE_WEIGHTS_NAME, TRAINED_WEIGHTS_NAME
    from ..adaptation.peft_methods import HEAD_WEIGHTS_NAME

    claims = get_method(method).claims
    keys = _tensor_names(folder / TRAINED_WEIGHTS_NAME)
    foreign = [k for k in keys if not claims(k)]
    head_file = folder / HEAD_WEIGHTS_NAME  # peft methods: the head beside the adapter
    if head_file.exists():
        foreign += [k for k in _tensor_names(head_file) if not k.startswith("classifier.")]
    sequence_file = folder / SEQUENCE_WEIGHTS_NAME
    if sequence_file.exists():
        foreign += [k for k in _tensor_names(sequence_file) if not k.startswith("context_encoder.")]
    if foreign:
        raise HubError(f"The {method} weights hold tensors that are not adapter/head weights (e.g. {foreign[:3]}): "
                       "refusing to upload backbone weights with an adapter-only push")


def _tensor_names(path: Path) -> list[str]:
    if not path.exists():
        raise HubError(f"{path} is missing: the run's model folder is incomplete")
    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())


def _copy_recipe(src: Path, dst: Path, recorded: str | None, base_model: str) -> None:
    """Copy the resolved recipe; a local ``model.model_name_or_path`` becomes the backbone's hub id."""
    text = src.read_text()
    recipe = yaml.safe_load(text) or {}
    model = recipe.get("model") or {}
    local = model.get("model_name_or_path")
    if local and not _is_hub_id(str(local)):
        model["model_name_or_path"] = base_model
        header = ("# Resolved recipe of this run (ecg_adapt). model.model_name_or_path was a local folder when it\n"
                  f"# was trained; it is replaced by the hub id of the same backbone, {base_model}.\n")
        text = header + yaml.safe_dump(recipe, sort_keys=False)
    dst.write_text(text)


def _check_no_local_path(folder: Path, recorded: str | None) -> None:
    """No pushed config may still point at the local backbone folder."""
    if not recorded or _is_hub_id(recorded):
        return
    needle = json.dumps(recorded)  # as it appears as a JSON string value
    for p in folder.iterdir():
        if p.suffix == ".json" and needle in p.read_text():
            raise HubError(f"{p.name} still refers to the local backbone folder {recorded}")
    recipe = folder / "recipe.yaml"
    if recipe.exists():
        model = (yaml.safe_load(recipe.read_text()) or {}).get("model") or {}
        if model.get("model_name_or_path") == recorded:
            raise HubError(f"recipe.yaml still refers to the local backbone folder {recorded}")


def _stage_merged(model_dir: Path, recorded: str | None, base_model: str, out: Path) -> None:
    """Merge an adapted run into its backbone (``merge_for_deployment``) and save it as a full model in ``out``."""
    from ..adaptation.core import load_adapted, merge_for_deployment, save_adapted
    from ..processing.processor import ECGProcessor

    source = recorded if recorded and Path(recorded).expanduser().exists() else base_model
    model = load_adapted(model_dir, backbone_name_or_path=source)
    config = model.adaptation_config  # type: ignore[attr-defined]
    merged = merge_for_deployment(model)
    merged.adaptation_config = dataclasses.replace(config, method="full")  # type: ignore[attr-defined]
    processor = ECGProcessor.from_pretrained(str(model_dir))
    # task.json (the tuned thresholds) is saved with the model, so that its completion marker lists it.
    task_file = model_dir / "task.json"
    extra = {task_file.name: task_file.read_text()} if task_file.exists() else None
    staging = Path(tempfile.mkdtemp(prefix="ecg_adapt_merge_"))
    try:
        saved = save_adapted(merged, staging / "merged", processor, extra_files=extra)
        for p in saved.iterdir():
            if p.is_file() and p.name != CARD_NAME:
                shutil.copy2(p, out / p.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    # What the run trained (the merged model is loaded frozen, so a fresh count would say 0).
    trained = _read_json(model_dir / "adaptation_config.json").get("trainable_parameters")
    if trained is not None:
        meta = _read_json(out / "adaptation_config.json")
        meta["trainable_parameters"] = trained
        _write_json(out / "adaptation_config.json", meta)


def prepare_push_folder(
    run_dir: str | os.PathLike,
    base_model: str | None = None,
    merged: bool = False,
    *,
    repo_id: str | None = None,
    license: str | None = None,
    datasets: list[str] | None = None,
    output_dir: str | os.PathLike | None = None,
) -> Path:
    """Build, without any network access, the folder a push uploads (see the module docstring).

    Args:
        run_dir: a training run folder (``model/``, ``metrics.json``, ``recipe.yaml``).
        base_model: hub id of the backbone; required when the run was trained on a local folder.
        merged: LoRA runs only: merge the adapter into the backbone and push a full model.
        repo_id: the target repository (model card title and loading snippet).
        license: only when it cannot be inherited from the base model (see :func:`resolve_license`).
        datasets: dataset names for the card metadata (default: from the recipe).
        output_dir: an empty or missing folder to write to; default a new temporary folder (the caller
            removes it).

    Returns:
        The folder. The run folder itself is only read.

    Example:
        >>> folder = prepare_push_folder("runs/demo", base_model="me/hubert-ecg-tiny")   # doctest: +SKIP
        >>> sorted(p.name for p in folder.iterdir())                                     # doctest: +SKIP
        ['README.md', 'adaptation_config.json', 'adapter_config.json', ...]
    """
    run_dir = Path(run_dir)
    model_dir = run_dir / "model"
    if not (model_dir / ECG_ADAPT_MARKER).exists():
        hint = " (this looks like a model folder: pass the run folder that contains it)" if (run_dir / ECG_ADAPT_MARKER).exists() else ""
        raise HubError(f"{run_dir} is not an ecg_adapt run folder: no model/{ECG_ADAPT_MARKER}{hint}")
    missing = [n for n in RUN_FILES if not (run_dir / n).exists()]
    if missing:
        raise HubError(f"{run_dir} lacks {missing}: push a finished run (training writes them at the end)")
    from ..adaptation.core import IncompleteModelError, check_model_complete

    try:  # never publish a model folder whose save was interrupted
        check_model_complete(model_dir)
    except IncompleteModelError as e:
        raise HubError(str(e)) from e
    method = _read_json(model_dir / ECG_ADAPT_MARKER).get("method", "full")
    recorded = _read_json(model_dir / "config.json").get("backbone_name_or_path")
    base = resolve_base_model(recorded, base_model)
    if merged and method == "full":
        raise HubError("merged=True merges an adapter into its backbone; this run was fully fine-tuned already")
    if merged:
        from ..adaptation import get_method

        spec = get_method(method)
        if spec.kind != "native" and not spec.mergeable:
            raise HubError(f"merged=True: {method} cannot be merged into the backbone weights ({spec.trains}); "
                           "push the adapter itself (merged=False)")

    out = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="ecg_adapt_push_"))
    if out.exists() and any(out.iterdir()):
        raise HubError(f"{out} is not empty: prepare_push_folder writes into an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    try:
        _fill_push_folder(out, run_dir, model_dir, method, recorded, base, merged, repo_id, license, datasets)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # never leave a half-built folder behind
        raise
    return out


def _fill_push_folder(out: Path, run_dir: Path, model_dir: Path, method: str, recorded: str | None, base: str,
                      merged: bool, repo_id: str | None, license: str | None,
                      datasets: list[str] | None) -> None:
    if merged:
        _stage_merged(model_dir, recorded, base, out)
    else:
        for p in sorted(model_dir.iterdir()):
            if p.is_file() and p.name != CARD_NAME:  # peft's generic README is replaced by the card
                shutil.copy2(p, out / p.name)
    _rewrite_backbone_references(out, base)
    if method != "full" and not merged:
        _check_adapter_only(out, method)
    shutil.copy2(run_dir / "metrics.json", out / "metrics.json")
    _copy_recipe(run_dir / "recipe.yaml", out / "recipe.yaml", recorded, base)
    _check_no_local_path(out, recorded)

    files = sorted({p.name for p in out.iterdir() if p.is_file()} | {CARD_NAME})
    card = build_model_card(run_dir, repo_id or f"<namespace>/{run_dir.resolve().name}", base, license=license,
                            datasets=datasets, merged=merged, files=files)
    (out / CARD_NAME).write_text(card)


# -- the push ------------------------------------------------------------------------------------------
def _connection_error_types() -> tuple[type[BaseException], ...]:
    """Transport errors of whichever HTTP client this huggingface_hub uses (httpx2, httpx or requests)."""
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                          ("requests", ("ConnectionError", "Timeout"))):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        types.extend(getattr(mod, n) for n in names if isinstance(getattr(mod, n, None), type))
    return tuple(types)


def _explain(error: BaseException, endpoint: str, repo_id: str) -> HubError:
    if isinstance(error, HubError):
        return error
    if isinstance(error, OfflineModeIsEnabled):
        return HubError(f"Cannot push to {repo_id}: HF_HUB_OFFLINE is set. Unset it to push.")
    if isinstance(error, _connection_error_types()):
        return HubError(f"Cannot reach the Hugging Face Hub at {endpoint} ({type(error).__name__}: {error}). "
                        "Check the network (or HF_ENDPOINT) and push again; nothing was changed locally.")
    if isinstance(error, RepositoryNotFoundError):
        return HubError(f"{repo_id} was not found or this token may not access it: {error}")
    if isinstance(error, HfHubHTTPError):
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status == 401:
            return HubError(f"The Hub at {endpoint} rejected the token (401). Log in again (`hf auth login`) or "
                            f"set HF_TOKEN to a token with write access. ({error})")
        if status == 403:
            return HubError(f"This token may not write to {repo_id} (403): use a token with write access to "
                            f"that namespace. ({error})")
        return HubError(f"The Hub at {endpoint} refused the push to {repo_id} (HTTP {status}): {error}")
    return HubError(f"Pushing to {repo_id} failed: {type(error).__name__}: {error}")


def _files_at(api: HfApi, repo_id: str, revision: str | None) -> list[str]:
    """Files at ``revision``, or on the default branch when that branch does not exist yet (it will be
    created from there)."""
    if revision:
        try:
            return api.list_repo_files(repo_id, revision=revision)
        except RevisionNotFoundError:
            pass
    return api.list_repo_files(repo_id)


def preflight_push(repo_id: str, backbone_name_or_path: str | None, base_model: str | None = None,
                   token: str | None = None) -> str:
    """Check, without network, that a run could be pushed once trained: a valid ``repo_id``, a token, and a
    backbone others can resolve. Returns the hub id the push will record. Meant to run *before* a long training
    (``hub.push_to_hub`` in a recipe), so that a missing token or ``base_model`` fails in seconds, not hours.

    Raises:
        HubError: what :func:`push_to_hub` would refuse for the same reason.
    """
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise HubError(f"repo_id={repo_id!r} is not a valid Hugging Face repo id: {e}") from None
    if not (token or get_token()):
        raise HubError("No Hugging Face token: log in with `hf auth login`, set HF_TOKEN, or pass token=. "
                       "Pushing needs a token with write access.")
    return resolve_base_model(backbone_name_or_path, base_model)


def push_to_hub(
    run_dir: str | os.PathLike,
    repo_id: str,
    base_model: str | None = None,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    merged: bool = False,
    *,
    license: str | None = None,
    datasets: list[str] | None = None,
    overwrite: bool = False,
    endpoint: str | None = None,
) -> CommitInfo:
    """Push a training run to ``repo_id`` as one commit; returns the commit (a ``str``: its URL).

    The repository is created if needed (``private`` applies then; pushing ``private=True`` into an existing
    public repository is refused). ``revision`` pushes to that branch, created from the default branch if
    missing. The pushed revision ends up holding exactly the prepared folder (plus ``.gitattributes``):
    files of an earlier ecg_adapt push that are no longer produced are deleted in the same commit.

    A repository that already holds files not written by ecg_adapt (no ``adaptation_config.json``) is left
    alone unless ``overwrite=True``, which replaces its content.

    Raises:
        HubError: no token (``huggingface_hub.get_token()`` finds none and ``token`` is not given), the Hub
            cannot be reached, the repository holds foreign content, the backbone is not resolvable, the
            Hub refuses the commit... The local run folder is never modified.

    Example:
        >>> push_to_hub("runs/demo", "me/ecg-lora", base_model="me/hubert-ecg-tiny", license="apache-2.0")  # doctest: +SKIP
        'https://huggingface.co/me/ecg-lora/commit/...'
    """
    run_dir = Path(run_dir)
    token = token or get_token()
    if not token:
        raise HubError("No Hugging Face token: log in with `hf auth login`, set HF_TOKEN, or pass token=. "
                       "Pushing needs a token with write access.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise HubError(f"repo_id={repo_id!r} is not a valid Hugging Face repo id: {e}") from None

    api = HfApi(endpoint=endpoint, token=token, library_name="ecg_adapt", library_version=__version__)
    with tempfile.TemporaryDirectory(prefix="ecg_adapt_push_") as tmp:
        try:
            folder = prepare_push_folder(run_dir, base_model, merged, repo_id=repo_id, license=license,
                                         datasets=datasets, output_dir=Path(tmp) / "push")
        except ValueError as e:  # e.g. an unknown licence
            raise HubError(str(e)) from e
        base = _read_json(folder / "config.json")["backbone_name_or_path"]  # the hub id the push records
        method = _read_json(folder / ECG_ADAPT_MARKER).get("method")
        try:
            try:
                info = api.repo_info(repo_id)
            except RepositoryNotFoundError:
                info = None
            if info is not None:
                if private and not info.private:
                    raise HubError(f"{repo_id} exists and is public; refusing to push with private=True. "
                                   "Make it private on the Hub first, or push with private=False.")
                existing = [f for f in _files_at(api, repo_id, revision) if f != ".gitattributes"]
                if existing and ECG_ADAPT_MARKER not in existing and not overwrite:
                    raise HubError(
                        f"{repo_id} already holds files not written by ecg_adapt ({', '.join(sorted(existing)[:5])}"
                        f"{', ...' if len(existing) > 5 else ''}). Choose another repo_id, or pass overwrite=True "
                        "to replace its content."
                    )
            if not api.repo_exists(base):
                raise HubError(f"The base model {base} is not on the Hub at {api.endpoint} (or this token cannot "
                               "read it): others could not load the backbone. Upload it first or fix base_model.")
            if info is None:
                api.create_repo(repo_id, private=private, exist_ok=True)
            if revision and revision != "main":
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                revision=revision,
                commit_message=commit_message or f"ecg_adapt: {method}{' (merged)' if merged else ''} run {run_dir.resolve().name}",
                delete_patterns="*",  # the revision mirrors the folder (.gitattributes is always kept)
            )
        except Exception as e:
            raise _explain(e, api.endpoint, repo_id) from e
    logger.info("pushed %s to %s: %s", run_dir, repo_id, commit)
    return commit
