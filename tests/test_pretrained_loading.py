"""One call from a name to a loaded backbone: registry names and original hub repositories through the real
``huggingface_hub`` client against the local fake Hub (``tests/fake_hub.py``) holding original-format golden files,
golden parity, one conversion then cache hits, ``HF_HUB_OFFLINE=1`` from the caches; releases hosted elsewhere;
local original files; ``ecg-adapt convert --config``; ``push --base-model`` with an original release.

Every family is covered from the registry: a family whose release is hub-hosted and that has a golden case in
``tests/family_cases`` goes through the Hub part; every release hosted elsewhere is checked for its error message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ecg_adapt.models.family import validate_release
from ecg_adapt.models.pretrained import (
    COMPLETE_MARKER,
    PretrainedNotAvailableError,
    converted_cache_dir,
    detect_family,
)
from ecg_adapt.models.registry import FAMILIES, get_family, load_backbone, load_processor, released_variants

from conftest import GOLDEN
from family_cases import GoldenCase, all_cases
from fake_hub import FakeHub

GOLDEN_CASES, _, _ = all_cases()


def _first_case(family: str) -> GoldenCase | None:
    return next((c for c in GOLDEN_CASES if c.family == family), None)


def _hub_families() -> list[tuple[str, dict]]:
    """``(family, default released variant of its first hub repository)`` for every family with a hub release."""
    out = []
    for model_type in sorted(FAMILIES):
        hub = [v for v in released_variants() if v["family"] == model_type
               and isinstance(v.get("release"), dict) and v["release"].get("repo_id")]
        if hub:
            repo = hub[0]["release"]["repo_id"]
            out.append((model_type, next(v for v in released_variants()
                                         if (v.get("release") or {}).get("repo_id") == repo)))
    return out


HUB_FAMILIES = _hub_families()
EXTERNAL = [v for v in released_variants() if isinstance(v.get("release"), dict) and v["release"].get("url")]


def _outputs(model: torch.nn.Module, case: GoldenCase) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(np.load(GOLDEN / case.model_input)))
    hidden = out.last_hidden_state
    pooled = out.pooler_output if getattr(out, "pooler_output", None) is not None else hidden.mean(1)
    return {"hidden": hidden.numpy(), "features": pooled.numpy()}


def _assert_golden(outputs: dict[str, np.ndarray], case: GoldenCase) -> None:
    if case.hidden:
        hidden = outputs["hidden"]
        hidden = hidden.transpose(0, 2, 1) if case.hidden_channels_first else hidden
        np.testing.assert_allclose(hidden, np.load(GOLDEN / case.hidden), **case.tolerance(GOLDEN, "hidden"))
    if case.features:
        np.testing.assert_allclose(outputs["features"], np.load(GOLDEN / case.features),
                                   **case.tolerance(GOLDEN, "features"))


# ------------------------------------------------------------------------------------- through the fake Hub
_WORKER = textwrap.dedent("""
    import functools, json, sys
    from pathlib import Path
    import numpy as np, torch
    from ecg_adapt.models.registry import get_family, load_backbone
    from ecg_adapt.models.pretrained import PretrainedNotAvailableError

    plan = json.loads(Path(sys.argv[1]).read_text())
    out_dir = Path(sys.argv[2])
    result = {"conversions": {}, "loaded": {}, "errors": {}}
    calls = {}
    for item in plan["items"]:  # count calls of each family's converter (the cache must spare the second one)
        family = get_family(item["family"])
        original = family.convert
        def counting(*a, _f=item["family"], _orig=original, **k):
            calls[_f] = calls.get(_f, 0) + 1
            return _orig(*a, **k)
        family._resolved["convert"] = functools.wraps(original)(counting)
    for item in plan["items"]:
        for label in plan["load"]:
            model = load_backbone(item[label])
            with torch.no_grad():
                out = model.eval()(torch.from_numpy(np.load(item["model_input"])))
            hidden = out.last_hidden_state
            pooled = out.pooler_output if getattr(out, "pooler_output", None) is not None else hidden.mean(1)
            key = f"{item['family']}-{label}"
            np.save(out_dir / f"{key}-hidden.npy", hidden.numpy())
            np.save(out_dir / f"{key}-features.npy", pooled.numpy())
            result["loaded"][key] = {"name_or_path": model.name_or_path,
                                     "converted_from": getattr(model.config, "converted_from", None)}
    for name in plan.get("expect_unavailable", []):
        try:
            load_backbone(name)
            result["errors"][name] = None
        except PretrainedNotAvailableError as e:
            result["errors"][name] = str(e)
    result["conversions"] = calls
    (out_dir / "result.json").write_text(json.dumps(result))
""")


def _run_worker(tmp: Path, hub_url: str, hf_home: Path, cache: Path, plan: dict, offline: bool) -> dict:
    """Load in a fresh interpreter: ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` are read when huggingface_hub is imported."""
    out = tmp / ("offline" if offline else "online")
    out.mkdir()
    (tmp / "worker.py").write_text(_WORKER)
    (out / "plan.json").write_text(json.dumps(plan))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=hub_url, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1", ECG_ADAPT_CACHE=str(cache),
               OMP_NUM_THREADS=str(torch.get_num_threads()),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]))
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run([sys.executable, str(tmp / "worker.py"), str(out / "plan.json"), str(out)], env=env,
                          cwd=tmp, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {**json.loads((out / "result.json").read_text()), "dir": str(out)}


@pytest.fixture(scope="module")
def hub_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Upload every hub family's first golden checkpoint as its default original release file, then load each by
    registry name and by original repository online, and by registry name offline (the Hub stopped)."""
    if not GOLDEN.exists():
        pytest.skip(f"{GOLDEN} not available (../shared is absent)")
    from huggingface_hub import HfApi

    tmp = tmp_path_factory.mktemp("pretrained_hub")
    items, commits = [], {}
    hub = FakeHub().start()
    try:
        api = HfApi(endpoint=hub.url, token="dummy")
        for model_type, variant in HUB_FAMILIES:
            case = _first_case(model_type)
            if case is None:
                continue
            release = variant["release"]
            src = GOLDEN / case.checkpoint
            files = {p.name: p for p in src.iterdir()} if src.is_dir() else {release["filename"]: src}
            assert release["filename"] in files and set(release.get("also", [])) <= set(files), (model_type, files)
            api.create_repo(release["repo_id"], exist_ok=True)
            for name, path in files.items():
                info = api.upload_file(path_or_fileobj=str(path), path_in_repo=name, repo_id=release["repo_id"],
                                       commit_message=f"original {name}")
            commits[model_type] = info.oid
            items.append({"family": model_type, "name": variant["name"], "repo": release["repo_id"],
                          "model_input": str(GOLDEN / case.model_input)})
        if not items:
            pytest.skip("no family has a hub-hosted release and a golden case")
        fetched = {v["name"] for _, v in HUB_FAMILIES}
        never = [v["name"] for v in released_variants()
                 if (v.get("release") or {}).get("repo_id") and v["name"] not in fetched][:1]
        hf_home, cache = tmp / "hf_home", tmp / "converted_cache"
        online = _run_worker(tmp, hub.url, hf_home, cache, {"items": items, "load": ["name", "repo"]}, offline=False)
    finally:
        hub.stop()  # offline must not need the Hub at all
    offline = _run_worker(tmp, "http://127.0.0.1:9", hf_home, cache,  # nothing listens there
                          {"items": items, "load": ["name"], "expect_unavailable": never}, offline=True)
    return {"items": {i["family"]: i for i in items}, "online": online, "offline": offline, "commits": commits,
            "cache": cache, "never": never}


def _hub_item(hub_runs: dict, model_type: str) -> dict:
    if model_type not in hub_runs["items"]:
        pytest.skip(f"{model_type} has no golden case to upload")
    return hub_runs["items"][model_type]


def _saved(run: dict, key: str) -> dict[str, np.ndarray]:
    return {o: np.load(Path(run["dir"]) / f"{key}-{o}.npy") for o in ("hidden", "features")}


@pytest.mark.parametrize("model_type", [f for f, _ in HUB_FAMILIES])
def test_registry_name_and_original_repo_load_the_golden_release_through_the_hub(hub_runs: dict, model_type: str) -> None:
    _hub_item(hub_runs, model_type)
    case = _first_case(model_type)
    for label in ("name", "repo"):
        _assert_golden(_saved(hub_runs["online"], f"{model_type}-{label}"), case)


@pytest.mark.parametrize("model_type", [f for f, _ in HUB_FAMILIES])
def test_release_records_registry_name_repository_and_resolved_commit(hub_runs: dict, model_type: str) -> None:
    item = _hub_item(hub_runs, model_type)
    for label in ("name", "repo"):
        loaded = hub_runs["online"]["loaded"][f"{model_type}-{label}"]
        # the registry name, whichever way it was asked for: reloading it later gives the same file
        assert loaded["name_or_path"] == item["name"]
        source = loaded["converted_from"]
        assert source["repo_id"] == item["repo"] and source["commit"] == hub_runs["commits"][model_type]
        assert len(source["sha256"]) == 64 and source["family"] == model_type


@pytest.mark.parametrize("model_type", [f for f, _ in HUB_FAMILIES])
def test_release_is_converted_once_and_loads_offline_from_the_caches(hub_runs: dict, model_type: str) -> None:
    _hub_item(hub_runs, model_type)
    # name then repository: one conversion, the second load is a cache hit; offline: none
    assert hub_runs["online"]["conversions"].get(model_type) == 1
    assert hub_runs["offline"]["conversions"].get(model_type, 0) == 0
    _assert_golden(_saved(hub_runs["offline"], f"{model_type}-name"), _first_case(model_type))
    folders = [p for p in (Path(hub_runs["cache"]) / "converted").iterdir() if p.name.startswith(model_type + "-")]
    assert len(folders) == 1 and (folders[0] / COMPLETE_MARKER).exists()


def test_offline_without_the_release_in_the_cache_says_how_to_fix(hub_runs: dict) -> None:
    if not hub_runs["never"]:
        pytest.skip("every hub release was fetched")
    message = hub_runs["offline"]["errors"][hub_runs["never"][0]]
    assert message is not None and "HF_HUB_OFFLINE" in message and "not in the Hugging Face cache" in message


# ---------------------------------------------------------------------------------------- without the Hub
@pytest.mark.parametrize("variant", EXTERNAL, ids=lambda v: v["name"])
def test_release_hosted_elsewhere_names_its_url_and_the_call_to_make(variant: dict) -> None:
    with pytest.raises(PretrainedNotAvailableError) as err:
        load_backbone(variant["name"])
    message = str(err.value)
    release = variant["release"]
    assert release["url"] in message and release["host"] in message
    overrides = variant.get("convert_kwargs") or {}
    extra = f", config_overrides={overrides!r}" if overrides else ""
    assert f'load_backbone("/path/to/{release["filename"]}", family="{variant["family"]}"{extra})' in message
    assert f"ecg-adapt convert --family {variant['family']}" in message
    # a variant made by converting the file a particular way says how, in both the call and the command
    for key, value in overrides.items():
        assert f"--config {key}={value}" in message


def test_unknown_name_suggests_registered_ones() -> None:
    name = released_variants()[0]["name"]
    with pytest.raises(ValueError, match=f"did you mean '{name}'"):
        load_backbone(name[:-1])


@pytest.mark.parametrize("model_type", sorted({c.family for c in GOLDEN_CASES}))
def test_local_original_file_loads_with_its_family_and_matches_golden(model_type: str, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    case = _first_case(model_type)
    if not GOLDEN.exists():
        pytest.skip(f"{GOLDEN} not available (../shared is absent)")
    monkeypatch.setenv("ECG_ADAPT_CACHE", str(tmp_path))
    model = load_backbone(GOLDEN / case.checkpoint, family=model_type, config_overrides=case.convert_kwargs or None)
    _assert_golden(_outputs(model, case), case)
    assert model.config.converted_from["family"] == model_type
    assert load_processor(GOLDEN / case.checkpoint, family=model_type, config_overrides=case.convert_kwargs or None) \
        .contract.input_shape == tuple(np.load(GOLDEN / case.model_input).shape[1:])


def test_local_file_named_as_released_is_recognised_and_an_unknown_name_asks_for_family(tmp_path: Path) -> None:
    for v in released_variants():
        release = v.get("release")
        if isinstance(release, dict):
            same = [w for w in released_variants() if (w.get("release") or {}).get("filename") == release["filename"]]
            if {w["family"] for w in same} == {v["family"]}:
                assert detect_family(tmp_path / release["filename"]).model_type == v["family"]
    with pytest.raises(ValueError, match='family="..."'):
        detect_family(tmp_path / "weights.pth")


def test_a_cached_lfs_blob_is_keyed_by_its_name_and_other_files_by_their_content(tmp_path: Path) -> None:
    import hashlib

    from ecg_adapt.models.pretrained import file_sha256

    data = b"weights" * 1000
    true_sha = hashlib.sha256(data).hexdigest()
    blobs = tmp_path / "models--org--repo" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / true_sha).write_bytes(data)
    snapshot = tmp_path / "models--org--repo" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "w.pth").symlink_to(blobs / true_sha)
    # the LFS blob's name is its sha256: taken as it is (a planted name proves the file was not read)
    planted = "f" * 64
    (blobs / planted).write_bytes(data)
    assert file_sha256(snapshot / "w.pth") == true_sha and file_sha256(blobs / planted) == planted
    # a git blob (40 hex) or a plain file is hashed
    (blobs / ("a" * 40)).write_bytes(data)
    (tmp_path / "w.pth").write_bytes(data)
    assert file_sha256(blobs / ("a" * 40)) == true_sha == file_sha256(tmp_path / "w.pth")


def test_conversion_cache_is_atomic_and_keyed_by_the_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = next((c for c in GOLDEN_CASES if c.id == "merl-vit"), None)
    if case is None or not GOLDEN.exists():
        pytest.skip("needs the MERL ViT golden file")
    monkeypatch.setenv("ECG_ADAPT_CACHE", str(tmp_path))
    root = converted_cache_dir()
    # a converter that fails half-way leaves nothing behind, not even its temporary folder
    family = get_family("merl")
    original = family.convert

    def broken(src, dst, **kwargs):
        original(src, dst, **kwargs)
        raise RuntimeError("interrupted")

    monkeypatch.setitem(family._resolved, "convert", broken)
    with pytest.raises(RuntimeError, match="interrupted"):
        load_backbone(GOLDEN / case.checkpoint, family="merl")
    assert not root.exists() or list(root.iterdir()) == []
    monkeypatch.setitem(family._resolved, "convert", original)
    default = load_backbone(GOLDEN / case.checkpoint, family="merl")
    split = load_backbone(GOLDEN / case.checkpoint, family="merl", config_overrides={"vit_heads": 4, "vit_dim_head": 32})
    assert (default.config.vit_heads, split.config.vit_heads) == (2, 4)
    assert len([p for p in root.iterdir() if (p / COMPLETE_MARKER).exists()]) == 2


def test_release_field_is_validated_and_may_be_missing() -> None:
    validate_release(None, "x")
    validate_release({"repo_id": "org/name", "filename": "w.pth", "revision": None}, "x")
    validate_release({"url": "https://zenodo.org/records/1", "host": "Zenodo", "filename": "w.pt"}, "x")
    for bad, words in (({"repo_id": "org/name", "filename": "w.pth"}, "missing ['revision']"),
                       ({"repo_id": "org/name", "filename": "w.pth", "revision": "main"}, "40-hex commit"),
                       ({"url": "drive", "host": "Google Drive", "filename": "w.pth"}, "http(s) URL"),
                       ({"filename": "w.pth"}, "'repo_id'"),
                       ("https://x", "must be a dict")):
        with pytest.raises(ValueError, match=None) as err:
            validate_release(bad, "family 'x'")
        assert words in str(err.value), (bad, str(err.value))
    for family in FAMILIES.values():  # every registered family's releases pass (a missing key is allowed)
        family.validate()


# -------------------------------------------------------------------------------------- ecg-adapt convert
def test_cli_convert_sets_sizes_the_tensors_cannot_tell(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from ecg_adapt.cli import main

    case = next((c for c in GOLDEN_CASES if c.id == "merl-vit"), None)
    if case is None or not GOLDEN.exists():
        pytest.skip("needs the MERL ViT golden file (a non-released width: 128)")
    src = str(GOLDEN / case.checkpoint)
    assert main(["convert", "--family", "merl", "--config", "vit_heads=2", "--config", "vit_dim_head=64", src,
                 str(tmp_path / "right")]) == 0
    _assert_golden(_outputs(load_backbone(tmp_path / "right"), case), case)
    # another split of the same 128 q/k/v rows loads too (shapes agree) but is another model: the flag was applied
    assert main(["convert", "--family", "merl", "--config", "vit_heads=4", "--config", "vit_dim_head=32", src,
                 str(tmp_path / "other")]) == 0
    other = load_backbone(tmp_path / "other")
    assert (other.config.vit_heads, other.config.vit_dim_head) == (4, 32)
    assert not np.allclose(_outputs(other, case)["features"], np.load(GOLDEN / case.features), atol=1e-3)
    capsys.readouterr()
    assert main(["convert", "--family", "merl", "--config", "vit_heads=3", src, str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "--config vit_heads=H --config vit_dim_head=128/H" in err
    assert main(["convert", "--family", "merl", "--config", "num_heads=3", src, str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "--config num_heads=..." in err and "vit_heads" in err
    assert main(["convert", "--family", "merl", "--num-attention-heads", "2", src, str(tmp_path / "bad")]) == 2
    assert "--config vit_heads=N" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_cli_config_values_are_parsed_as_yaml() -> None:
    from ecg_adapt.cli import parse_config_overrides

    assert parse_config_overrides(["a=4", "b=0.5", "c=true", "d=[2, 2]", "e=gelu"]) == \
        {"a": 4, "b": 0.5, "c": True, "d": [2, 2], "e": "gelu"}
    with pytest.raises(ValueError, match="key=value"):
        parse_config_overrides(["vit_heads"])


# -------------------------------------------------------------------------------------- push --base-model
def test_push_base_model_resolves_an_original_repo_or_registry_name() -> None:
    from ecg_adapt.hub import HubError
    from ecg_adapt.hub.card import registry_entry, resolve_license, hub_base_model
    from ecg_adapt.hub.push import resolve_base_model

    for model_type, variant in HUB_FAMILIES:
        repo = variant["release"]["repo_id"]
        # a run trained on a local converted folder, pushed with the original repository or the registry name
        assert resolve_base_model("/nonexistent/converted", repo) == variant["name"]
        assert resolve_base_model("/nonexistent/converted", variant["name"]) == variant["name"]
        assert resolve_base_model(variant["name"], None) == variant["name"]
        assert hub_base_model(variant["name"]) == repo
        assert registry_entry(repo)["name"] == variant["name"]
        assert resolve_license(repo)[0] == resolve_license(variant["name"])[0]
    founder = [v for v in released_variants() if v["family"] == "ecgfounder"]
    if len(founder) > 1:  # trained on the 1-lead file, pushed with its repository: the exact file is kept
        assert resolve_base_model(founder[1]["name"], founder[1]["release"]["repo_id"]) == founder[1]["name"]
        with pytest.raises(HubError, match="only fits the weights it was trained on"):
            resolve_base_model(founder[1]["name"], founder[0]["name"])
    if EXTERNAL:
        with pytest.raises(HubError, match=EXTERNAL[0]["release"]["host"]):
            resolve_base_model("/nonexistent/converted", EXTERNAL[0]["name"])


@pytest.mark.slow
def test_run_on_a_local_original_file_pushes_with_its_original_repo_as_base_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A recipe's model_name_or_path may be an original release file; the run then pushes (dry run) with
    ``--base-model PKUDigitalHealth/ECGFounder``: licence and hub base model from the registry, and a loading
    snippet naming the exact release."""
    import re

    import yaml

    from ecg_adapt.cli import main
    from ecg_adapt.data.synthetic import make_synthetic_ptbxl
    from ecg_adapt.models.pretrained import find_variant
    from ecg_adapt.training import Recipe, train

    case = _first_case("ecgfounder")
    founder = [v for v in released_variants() if v["family"] == "ecgfounder"]
    if case is None or not GOLDEN.exists() or not founder:
        pytest.skip("needs the ECGFounder golden file")
    monkeypatch.setenv("ECG_ADAPT_CACHE", str(tmp_path / "cache"))
    release = founder[0]["release"]
    original = tmp_path / release["filename"]  # named as released: the family is recognised from the name
    original.symlink_to(GOLDEN / case.checkpoint)
    data = make_synthetic_ptbxl(tmp_path / "synth", n_records=24, sampling_rates=(500,), progress=False)
    train(Recipe.from_dict({
        "model": {"model_name_or_path": str(original)},
        "adaptation": {"method": "lora", "r": 2},
        "data": {"path": str(data), "cache_dir": str(tmp_path / "windows"), "max_records_per_split": 4,
                 "source_options": {"sampling_rate": 500}},
        "training": {"per_device_train_batch_size": 4, "per_device_eval_batch_size": 4, "max_steps": 1,
                     "eval_strategy": "no", "save_strategy": "no", "logging_steps": 1},
        "output": {"output_dir": str(tmp_path / "run")},
    }))
    out = tmp_path / "push"
    assert main(["push", str(tmp_path / "run"), "--repo-id", "me/ecgfounder-probe", "--base-model",
                 release["repo_id"], "--dry-run", str(out)]) == 0
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(re.match(r"^---\n(.*?)\n---\n", card, re.DOTALL).group(1))
    assert meta["base_model"] == release["repo_id"] and meta["license"] == "mit"
    recorded = json.loads((out / "config.json").read_text())["backbone_name_or_path"]
    assert recorded == founder[0]["name"]  # the exact release file, which load_backbone resolves
    assert f'load_backbone("{recorded}")' in card
    assert find_variant(recorded)["release"]["repo_id"] == release["repo_id"]


def test_a_repository_with_several_releases_loads_its_default_or_the_named_file_at_the_pinned_revision(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ecg_adapt.models.pretrained as pretrained

    pinned = "a" * 40
    variants = [
        {"name": "fam-a", "family": "merl", "release": {"repo_id": "Org/Repo", "filename": "a.pth", "revision": pinned}},
        {"name": "fam-b", "family": "merl", "release": {"repo_id": "Org/Repo", "filename": "b.pth", "revision": pinned}},
    ]
    requests: list[tuple[str, str, str | None]] = []

    def download(repo_id: str, filename: str, revision: str | None) -> tuple[Path, str]:
        requests.append((repo_id, filename, revision))
        return tmp_path / filename, revision or "c" * 40

    def convert(fam, src, **kwargs):
        return tmp_path / f"converted-{src.name}", dict(kwargs["source"])

    monkeypatch.setattr(pretrained, "_variants", lambda: variants)
    monkeypatch.setattr(pretrained, "download_release_file", download)
    monkeypatch.setattr(pretrained, "convert_cached", convert)
    default = pretrained.resolve_pretrained("org/repo")  # hub ids are case-insensitive
    named = pretrained.resolve_pretrained("Org/Repo", filename="b.pth")
    by_name = pretrained.resolve_pretrained("fam-b", revision="main")
    assert (default.name_or_path, named.name_or_path, by_name.name_or_path) == ("fam-a", "fam-b", "fam-b")
    assert requests == [("Org/Repo", "a.pth", pinned), ("Org/Repo", "b.pth", pinned), ("Org/Repo", "b.pth", "main")]
    assert default.path.endswith("converted-a.pth") and default.source["commit"] == pinned
    with pytest.raises(ValueError, match="contradicts the registry"):
        pretrained.resolve_pretrained("fam-a", family="ecgfounder")
