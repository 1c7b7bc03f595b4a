"""From a name to a loadable backbone folder: registry names, original hub repositories, original release files.

:func:`resolve_pretrained` turns what a user writes (``load_backbone(X)``, a recipe's ``model.model_name_or_path``)
into a folder ``from_pretrained`` can read:

* a **converted folder** (``config.json`` of a registered family): used as it is;
* a **registry name** (``ecgfounder-12lead``, ``ecg-fm-pretrained``, every name of
  :func:`~ecg_adapt.models.registry.released_variants`): its ``release`` field says where the original file
  lives; a hub-hosted one is downloaded, converted and cached (below), one hosted elsewhere (Google Drive,
  figshare, Zenodo) gives an error naming the URL and the call to make once the file is downloaded;
* an **original hub repository** (``PKUDigitalHealth/ECGFounder``, ``wanglab/ecg-fm``): the registry's release of
  that repository, the family default (its first listed variant) unless ``filename=`` picks another file;
* a **local original release file** (``multiblock_epoch100.pth``, ``res18_best_encoder.pth``, a ``.ckpt``): the
  family comes from ``family=``, else from the file name (a released file name, or a suffix only one family's
  releases use); it is converted and cached the same way;
* any other ``namespace/name``: a hub repository of ecg_adapt's own format, left to ``from_pretrained``.

Hub files are fetched with ``huggingface_hub.hf_hub_download`` (the registry's pinned revision when it has one;
the commit actually resolved is recorded), so ``HF_HUB_OFFLINE=1`` reads the Hugging Face cache. A release is
converted once with its family's converter: the result is cached under ``$ECG_ADAPT_CACHE/converted`` (default
``~/.cache/ecg_adapt/converted``) in a folder keyed by the sha256 of the original file(s), the converter version
and the size overrides; it is written to a temporary folder, completed with a marker file written last, then
renamed into place, so an interrupted conversion is never mistaken for a finished one.

The converters read pickled checkpoints with torch's weights-only unpickler; files that pickle other objects
need ``allow_pickle``, which still builds those objects as inert attribute bags (no code from the file runs).
Naming a release of the registry (by name or repository) trusts that release: ``allow_pickle`` then defaults to
true; for any other file it defaults to false.

This module is in the models layer: it imports neither ``ecg_adapt.hub`` nor training nor the CLI.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .family import BackboneFamily

logger = logging.getLogger(__name__)

#: Written last into a converted-cache folder: its presence means the conversion finished.
COMPLETE_MARKER = ".ecg_adapt_converted"
#: The ``config.json`` field recording where a converted backbone came from.
SOURCE_FIELD = "converted_from"


class PretrainedNotAvailableError(OSError):
    """A release that cannot be fetched here: hosted off the Hub, not in the offline cache, or not released."""


@dataclass(frozen=True)
class ResolvedBackbone:
    """Where to load a backbone from, and what to record as its name.

    Attributes:
        path: a model folder, or a hub id of a repository in ecg_adapt's own format.
        name_or_path: what the loaded model records as ``name_or_path`` (and a classifier as its
            ``backbone_name_or_path``): the registry name for a registry release, so that reloading it later
            resolves to the same file; the folder or hub id otherwise.
        revision: the revision to pass to ``from_pretrained`` (hub ids only).
        variant: the registry entry of a release, if it is one.
        source: what was fetched and converted (``config.json`` ``converted_from``), if anything was.
    """

    path: str
    name_or_path: str
    revision: str | None = None
    variant: dict | None = None
    source: dict = field(default_factory=dict)


# -- the registry's releases ------------------------------------------------------------------------------------
def _variants() -> list[dict]:
    from .registry import released_variants

    return released_variants()


def find_variant(name: str) -> dict | None:
    """The released variant called ``name`` (case-insensitive), or ``None``."""
    wanted = name.strip().lower()
    return next((v for v in _variants() if str(v["name"]).lower() == wanted), None)


def variants_in_repo(repo_id: str) -> list[dict]:
    """The released variants whose original file is in the hub repository ``repo_id`` (case-insensitive, as the
    Hub treats ids), in registry order: the first is the repository's default."""
    wanted = repo_id.strip().strip("/").lower()
    return [v for v in _variants()
            if isinstance(v.get("release"), Mapping) and str(v["release"].get("repo_id", "")).lower() == wanted]


def hub_repo_of(name_or_repo: str) -> str | None:
    """The hub repository of a registry name or of an original repository id (``None``: not a hub release)."""
    variant = find_variant(name_or_repo)
    if variant is None:
        found = variants_in_repo(name_or_repo)
        variant = found[0] if found else None
    release = (variant or {}).get("release")
    return release.get("repo_id") if isinstance(release, Mapping) else None


def external_release_message(variant: Mapping[str, Any]) -> str:
    """The error for a release the Hub does not host: where to download it and the call to make afterwards."""
    release = variant["release"]
    filename, family = release["filename"], variant["family"]
    # A variant that is one file converted a particular way (ECGFM-KED's benchmark input contract) names the
    # overrides that make it; the call and the command below must carry them, or the user gets the other variant.
    overrides = dict(variant.get("convert_kwargs") or {})
    py_extra = f", config_overrides={overrides!r}" if overrides else ""
    cli_extra = "".join(f" --config {k}={v}" for k, v in overrides.items())
    return (
        f"{variant['name']} is not on the Hugging Face Hub: its original weights are on {release['host']} at "
        f"{release['url']} ({filename}), which ecg_adapt does not download. Download {filename} there, then load it "
        f'with load_backbone("/path/to/{filename}", family="{family}"{py_extra}) (cached after the first conversion), '
        f"or convert it once with `ecg-adapt convert --family {family}{cli_extra} /path/to/{filename} "
        f"converted/{variant['name']}` "
        f'and use that folder (load_backbone("converted/{variant["name"]}") or model.model_name_or_path).'
    )


# -- resolution -------------------------------------------------------------------------------------------------
def resolve_pretrained(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    family: str | None = None,
    filename: str | None = None,
    config_overrides: Mapping[str, Any] | None = None,
    allow_pickle: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> ResolvedBackbone:
    """Resolve what a user names into a loadable folder (see the module docstring for the order).

    Args:
        name_or_path: a converted folder, a registry name, an original hub repository, a local original release
            file, or a hub id of a converted repository.
        revision: hub revision (branch, tag or commit); overrides the registry's pinned one.
        family: the ``model_type`` of a local original file (or of ``filename`` in an unregistered repository)
            when its name does not tell.
        filename: the file of a hub repository to load (a repository holding several releases).
        config_overrides: configuration fields to set over what the converter reads (non-released widths).
        allow_pickle: see the module docstring (``None``: true for registry releases, false otherwise).
        cache_dir: the converted-release cache (default ``$ECG_ADAPT_CACHE/converted`` or
            ``~/.cache/ecg_adapt/converted``).

    Raises:
        PretrainedNotAvailableError: a release hosted off the Hub, not released, or not cached while offline.
        ValueError: a name that is none of the above, an ambiguous local file without ``family=``, or options
            that do not apply.
    """
    from .registry import get_family

    text = str(name_or_path)
    path = Path(text).expanduser()
    config = dict(config_overrides or {})
    if path.is_dir() and (path / "config.json").exists() and family is None:
        if config or filename:
            raise ValueError(f"{path} is a converted model folder: config_overrides= and filename= apply to original "
                             "releases")
        return ResolvedBackbone(str(path), text)
    if path.is_dir() and family is None:
        raise FileNotFoundError(f"{path} has no config.json: not a converted model folder (for a folder holding an "
                                f'original release, give its family: load_backbone("{path}", family="..."))')
    if path.exists():
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to hub repositories, but {path} is a local path")
        fam = get_family(family) if family else detect_family(path)
        folder, source = convert_cached(fam, path, config=config, allow_pickle=bool(allow_pickle), cache_dir=cache_dir,
                                        source={"path": str(path.resolve())})
        return ResolvedBackbone(str(folder), str(folder), source=source)

    variant = find_variant(text)
    if variant is not None:
        if filename is not None and filename != (variant.get("release") or {}).get("filename"):
            raise ValueError(f"filename={filename!r} does not apply to {variant['name']}, a single release file; "
                             f"give the repository id with filename= instead")
        return _from_release(variant, revision, config, allow_pickle, cache_dir, family)
    in_repo = variants_in_repo(text)
    if in_repo:
        chosen = in_repo[0]
        if filename is not None:
            chosen = next((v for v in in_repo if v["release"]["filename"] == filename), None)
            if chosen is None:  # a file of that repository the registry does not list: same family
                fam = get_family(family or in_repo[0]["family"])
                return _from_hub_file(fam, in_repo[0]["release"]["repo_id"], filename, revision, [], config,
                                      allow_pickle, cache_dir, name=None)
        elif len(in_repo) > 1:
            logger.info("%s holds %d releases (%s): loading the default, %s (filename= picks another)", text,
                        len(in_repo), ", ".join(v["release"]["filename"] for v in in_repo), chosen["name"])
        return _from_release(chosen, revision, config, allow_pickle, cache_dir, family)

    if "/" not in text.strip("/"):
        names = [v["name"] for v in _variants()]
        close = difflib.get_close_matches(text, names, n=3)
        raise ValueError(
            f"{text!r} is not a local file or folder, not a registered release name"
            f"{' (did you mean ' + ', '.join(map(repr, close)) + '?)' if close else ''}, nor a hub repository id "
            f"(namespace/name). Registered releases: {', '.join(names)}"
        )
    if filename is not None:  # an original file in a repository the registry does not know
        fam = get_family(family) if family else detect_family(Path(filename))
        return _from_hub_file(fam, text, filename, revision, [], config, allow_pickle, cache_dir, name=None)
    if config:
        raise ValueError(f"config_overrides= applies to original releases; {text} is loaded as an ecg_adapt hub repository "
                         "(give filename= and family= to convert an original file in it)")
    return ResolvedBackbone(text, text, revision=revision)


def _from_release(variant: dict, revision: str | None, config: dict, allow_pickle: bool | None,
                  cache_dir: str | os.PathLike | None, family: str | None) -> ResolvedBackbone:
    from .registry import get_family

    if family is not None and family != variant["family"]:
        raise ValueError(f"family={family!r} contradicts the registry: {variant['name']} is a {variant['family']} release")
    if "release" not in variant:
        raise PretrainedNotAvailableError(
            f"{variant['name']} has no structured release in the {variant['family']} registry entry; it says its "
            f"weights are at: {variant.get('weights', 'not stated')}. Download the file and load it with "
            f'load_backbone("/path/to/file", family="{variant["family"]}").')
    release = variant["release"]
    if release is None:
        raise PretrainedNotAvailableError(f"{variant['name']}: no weights were released for this architecture "
                                          f"(registry: {variant.get('weights', 'not stated')})")
    if "repo_id" not in release:
        raise PretrainedNotAvailableError(external_release_message(variant))
    fam = get_family(variant["family"])
    config = {**(variant.get("convert_kwargs") or {}), **config}
    resolved = _from_hub_file(fam, release["repo_id"], release["filename"], revision or release.get("revision"),
                              list(release.get("also", ())), config,
                              True if allow_pickle is None else allow_pickle, cache_dir, name=variant["name"])
    return ResolvedBackbone(resolved.path, resolved.name_or_path, variant=variant, source=resolved.source)


def _from_hub_file(fam: BackboneFamily, repo_id: str, filename: str, revision: str | None, also: list[str],
                   config: dict, allow_pickle: bool | None, cache_dir: str | os.PathLike | None,
                   name: str | None) -> ResolvedBackbone:
    main, commit = download_release_file(repo_id, filename, revision)
    for extra in also:  # sibling files the converter reads (HuBERT-ECG's config.json)
        download_release_file(repo_id, extra, commit)
    src = main.parent if also else main  # the snapshot folder holds them side by side
    source = {"repo_id": repo_id, "filename": filename, "revision": revision, "commit": commit}
    if name:
        source["name"] = name
    folder, source = convert_cached(fam, src, config=config, allow_pickle=bool(allow_pickle), cache_dir=cache_dir,
                                    source=source, files=[main, *(main.parent / a for a in also)])
    return ResolvedBackbone(str(folder), name or str(folder), source=source)


def detect_family(path: Path) -> BackboneFamily:
    """The family of a local original release file, from its name: a file name the registry lists, else a suffix
    (``.ckpt``) that only one family's releases use.

    Raises:
        ValueError: the name does not tell, naming ``family=`` and the known families.
    """
    from .registry import FAMILIES, get_family

    by_name: dict[str, set[str]] = {}
    by_suffix: dict[str, set[str]] = {}
    for v in _variants():
        release = v.get("release")
        if isinstance(release, Mapping) and release.get("filename"):
            by_name.setdefault(release["filename"].lower(), set()).add(v["family"])
            by_suffix.setdefault(Path(release["filename"]).suffix.lower(), set()).add(v["family"])
    hits = by_name.get(path.name.lower()) or by_suffix.get(path.suffix.lower()) or set()
    if len(hits) == 1:
        return get_family(next(iter(hits)))
    why = (f"its name matches releases of several families ({sorted(hits)})" if hits
           else "its name is not one the registry lists")
    raise ValueError(
        f"Cannot tell which backbone family {path} belongs to: {why}. Give it, e.g. "
        f'load_backbone("{path}", family="...") or `ecg-adapt convert --family ...`; families: {sorted(FAMILIES)}'
    )


# -- downloading ------------------------------------------------------------------------------------------------
def download_release_file(repo_id: str, filename: str, revision: str | None) -> tuple[Path, str | None]:
    """``hf_hub_download`` one file; returns its path in the Hugging Face cache and the commit it resolved to.

    Raises:
        PretrainedNotAvailableError: offline (``HF_HUB_OFFLINE=1``) without the file in the cache, the Hub not
            reachable, or the repository / file / revision not found.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from .._version import __version__

    where = f"{repo_id}/{filename}{'@' + revision if revision else ''}"
    try:
        path = Path(hf_hub_download(repo_id, filename, revision=revision, library_name="ecg_adapt",
                                    library_version=__version__))
    except (RepositoryNotFoundError, GatedRepoError) as e:
        raise PretrainedNotAvailableError(f"{repo_id} is not on the Hub ({constants.ENDPOINT}), or it is private/"
                                          f"gated and this token cannot read it ({type(e).__name__})") from e
    except RevisionNotFoundError as e:
        raise PretrainedNotAvailableError(f"{repo_id} has no revision {revision!r}") from e
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:  # before EntryNotFoundError: a subclass of it
        if constants.HF_HUB_OFFLINE:
            raise PretrainedNotAvailableError(
                f"HF_HUB_OFFLINE is set and {where} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}): "
                "load it once with network access (it is then cached and converted once), or unset HF_HUB_OFFLINE."
            ) from e
        raise PretrainedNotAvailableError(f"Cannot download {where} from {constants.ENDPOINT} and it is not in the "
                                          f"Hugging Face cache ({e})") from e
    except EntryNotFoundError as e:
        raise PretrainedNotAvailableError(f"{repo_id} has no file {filename!r}"
                                          f"{' at ' + revision if revision else ''}") from e
    return path, _snapshot_commit(path, filename)


def _snapshot_commit(path: Path, filename: str) -> str | None:
    """The commit of a file in the Hugging Face cache layout (``.../snapshots/<commit>/<filename>``)."""
    snapshot = path
    for _ in Path(filename).parts:
        snapshot = snapshot.parent
    return snapshot.name if snapshot.parent.name == "snapshots" else None


# -- the conversion cache ---------------------------------------------------------------------------------------
def converted_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where converted releases are cached: ``cache_dir``, else ``$ECG_ADAPT_CACHE/converted``, else
    ``~/.cache/ecg_adapt/converted``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    root = os.environ.get("ECG_ADAPT_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "ecg_adapt") / "converted"


def converter_version(family: BackboneFamily) -> str:
    """ecg_adapt's version plus a digest of the family's converter module and of the shared conversion helpers:
    any change to how a release is read gives a new cache key (a stale conversion is never reused)."""
    from .._version import __version__
    from . import conversion

    module = sys.modules[family.convert.__module__]
    digest = hashlib.sha256()
    for source in (module.__file__, conversion.__file__):
        digest.update(Path(source).read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


_SHA256_HEX = frozenset("0123456789abcdef")


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, read in chunks (release files are up to ~1 GB).

    A file in the Hugging Face cache that is an LFS blob (``blobs/<64 hex>``, what every large weight file is) is
    named by the sha256 of its content, so its name is the answer: loading a cached 1 GB release by name does not
    re-read it on every call. Git-stored files (40-hex blob ids) and files elsewhere are hashed.
    """
    resolved = Path(path).resolve()
    name = resolved.name
    if resolved.parent.name == "blobs" and len(name) == 64 and set(name) <= _SHA256_HEX:
        return name
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _sources_sha256(src: Path, files: list[Path] | None) -> str:
    files = files or ([src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file()))
    if len(files) == 1:
        return file_sha256(files[0])
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda p: p.name):
        digest.update(f"{f.name}\0{file_sha256(f)}\0".encode())
    return digest.hexdigest()


def convert_cached(fam: BackboneFamily, src: Path, *, config: Mapping[str, Any] | None = None,
                   allow_pickle: bool = False, cache_dir: str | os.PathLike | None = None,
                   source: Mapping[str, Any] | None = None, files: list[Path] | None = None) -> tuple[Path, dict]:
    """Convert an original release once: the folder of the cached conversion, and the ``converted_from`` record.

    The key is the sha256 of the source file(s) (``files``, default ``src`` or the files under it), the
    :func:`converter_version` and the overrides; a hit reuses the folder without converting again.
    """
    from .conversion import run_converter

    config = dict(config or {})
    sha = _sources_sha256(src, files)
    version = converter_version(fam)
    key_material = json.dumps({"version": version, "config": config}, sort_keys=True, default=str)
    key = f"{fam.model_type}-{sha[:20]}-{hashlib.sha256(key_material.encode()).hexdigest()[:10]}"
    root = converted_cache_dir(cache_dir)
    folder = root / key
    record = {**dict(source or {}), "family": fam.model_type, "sha256": sha, "converter_version": version}
    if config:
        record["config_overrides"] = config
    if (folder / COMPLETE_MARKER).exists():
        # The same bytes may have been converted from another source (a local copy of a hub file): the folder's
        # config keeps the first record; the caller gets this one (load_backbone puts it on the loaded config).
        logger.info("Using the cached conversion of %s: %s", src, folder)
        return folder, record
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    logger.info("Converting %s (%s) into the cache %s", src, fam.model_type, folder)
    try:
        run_converter(fam, src, staging, allow_pickle=allow_pickle, config_overrides=config)
        cfg_path = staging / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg[SOURCE_FIELD] = record  # travels with the config: from_pretrained keeps it, save_pretrained writes it
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        (staging / COMPLETE_MARKER).write_text(json.dumps(record, indent=2) + "\n")  # last: the folder is complete
        try:
            os.replace(staging, folder)
        except OSError:  # a folder is there (another process won the race, or an unfinished one): keep a complete one
            if (folder / COMPLETE_MARKER).exists():
                shutil.rmtree(staging, ignore_errors=True)
            else:
                shutil.rmtree(folder, ignore_errors=True)
                os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder, record
