"""Hugging Face Hub: the pushed folder is exactly what its card says; a push and a load by repo id through the
real ``huggingface_hub`` client over HTTP (a local fake Hub, ``tests/fake_hub.py``) give the local model's
predictions, online and with ``HF_HUB_OFFLINE=1``; failed pushes say why and leave the run untouched."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard
from safetensors import safe_open
from safetensors.torch import load as load_safetensors_bytes

from ecg_adapt.data.synthetic import make_synthetic_ptbxl
from ecg_adapt.hub import HubError, build_model_card, from_hub, preflight_push, prepare_push_folder, push_to_hub
from ecg_adapt.inference import Predictor, find_wfdb_records, read_records
from ecg_adapt.processing import SignalContract
from ecg_adapt.training import Recipe, train

from conftest import SAMPLES, free_port
from fake_hub import FakeHub

BACKBONE_REPO = "ecg-test/tiny-hubert-ecg"
LICENSE = "apache-2.0"


@dataclass
class TinyRun:
    run: Path  # a finished LoRA run trained on the local folder `backbone`
    backbone: Path
    data_root: Path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_backbone_dir: Path) -> TinyRun:
    root = tmp_path_factory.mktemp("hub_run")
    data_root = make_synthetic_ptbxl(root / "synth", n_records=40, progress=False)
    train(Recipe.from_dict({
        "model": {"model_name_or_path": str(tiny_backbone_dir)},
        "adaptation": {"method": "lora", "r": 4},
        "data": {"path": str(data_root), "cache_dir": str(root / "cache"), "max_records_per_split": 8},
        "training": {"per_device_train_batch_size": 8, "per_device_eval_batch_size": 16, "max_steps": 2,
                     "learning_rate": 1e-2, "eval_strategy": "no", "save_strategy": "no", "logging_steps": 1},
        "output": {"output_dir": str(root / "run")},
    }))
    # train() leaves its FileHandler on the "ecg_adapt" logger, so any later log line in this process would be
    # appended to the run's train.log; detach it so that "the push left the run byte-identical" tests the push.
    run_logger = logging.getLogger("ecg_adapt")
    for handler in [h for h in run_logger.handlers if isinstance(h, logging.FileHandler)
                    and Path(h.baseFilename).parent == root / "run"]:
        run_logger.removeHandler(handler)
        handler.close()
    return TinyRun(run=root / "run", backbone=tiny_backbone_dir, data_root=data_root)


@pytest.fixture(scope="module")
def record_paths(tiny_run: TinyRun) -> list[Path]:
    """Real PhysioNet records when ../shared is there, else synthetic ones."""
    folder = SAMPLES / "cinc2021"
    return find_wfdb_records([folder if folder.exists() else tiny_run.data_root / "records100"])[:4]


@pytest.fixture(scope="module", autouse=True)
def _no_real_hub():
    """In-process clients talk to the fake Hub only. With telemetry on, huggingface_hub 2.x fetches an agent
    registry from the default endpoint to build its user agent: switch that off for this module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
        yield


@pytest.fixture(scope="module")
def hub(tiny_run: TinyRun, _no_real_hub: None):
    """A fake Hub holding the tiny backbone as its own repo (what base_model= points at)."""
    with FakeHub() as hub:
        api = HfApi(endpoint=hub.url, token="dummy")
        api.create_repo(BACKBONE_REPO)
        api.upload_folder(repo_id=BACKBONE_REPO, folder_path=tiny_run.backbone, commit_message="tiny backbone")
        yield hub


def _digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, to check a run is byte-identical after a push."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _front_matter(card_text: str) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", card_text, re.DOTALL)
    assert match, "README.md has no YAML metadata block"
    return yaml.safe_load(match.group(1))


def _section(card_text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", card_text, re.DOTALL | re.MULTILINE)
    assert match, f"no '## {title}' section"
    return match.group(1)


def _probabilities(predictor: Predictor, paths: list[Path]) -> list[dict[str, float]]:
    records, bad = read_records(paths)
    assert not bad
    return [p.probabilities for p in predictor.predict(records)]


# -- (a) the folder and its card, without network ------------------------------------------------------
def test_push_folder_holds_exactly_what_its_card_says(tiny_run: TinyRun, tmp_path: Path) -> None:
    run = tiny_run.run
    before = _digest(run)
    folder = prepare_push_folder(run, BACKBONE_REPO, repo_id="ecg-test/tiny-lora", license=LICENSE,
                                 output_dir=tmp_path / "push")
    files = sorted(p.name for p in folder.iterdir())
    model_files = {p.name for p in (run / "model").iterdir()}
    assert "README.md" in model_files  # peft's generic card: replaced, not pushed next to ours
    assert files == sorted(model_files | {"metrics.json", "recipe.yaml"})
    card_text = (folder / "README.md").read_text()
    assert "library_name: peft" not in card_text

    # the card lists exactly the files of the folder
    assert re.findall(r"^- `([^`]+)`", _section(card_text, "Files in this repository"), re.MULTILINE) == files

    # adapter only: no backbone weights, the adapter and run files are the run's own bytes
    assert "model.safetensors" not in files
    with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    # the plain-backbone layout: the adapter is loadable by plain peft on the backbone, the head beside it
    assert keys and all("lora_" in k and not k.startswith("base_model.model.backbone.") for k in keys), keys
    with safe_open(str(folder / "head.safetensors"), framework="pt") as f:
        assert sorted(f.keys()) == ["classifier.bias", "classifier.weight"]
    usage = _section(card_text, "How to use")
    assert f'backbone = AutoModel.from_pretrained("{BACKBONE_REPO}")' in usage
    assert 'model = PeftModel.from_pretrained(backbone, "ecg-test/tiny-lora")' in usage
    for name in ("adapter_model.safetensors", "head.safetensors", "task.json", "preprocessor_config.json", "metrics.json"):
        assert (folder / name).read_bytes() == (run / ("" if name == "metrics.json" else "model") / name).read_bytes(), name

    # the backbone is recorded as the hub id, never as the local folder
    assert json.loads((folder / "config.json").read_text())["backbone_name_or_path"] == BACKBONE_REPO
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == BACKBONE_REPO
    assert json.loads((folder / "adaptation_config.json").read_text())["backbone_name_or_path"] == BACKBONE_REPO
    assert yaml.safe_load((folder / "recipe.yaml").read_text())["model"]["model_name_or_path"] == BACKBONE_REPO
    for name in files:
        if not name.endswith(".safetensors"):
            assert str(tiny_run.backbone) not in (folder / name).read_text(), name

    # metadata, as huggingface_hub parses it
    meta = ModelCard.load(folder / "README.md").data.to_dict()
    assert meta["library_name"] == "ecg_adapt"
    assert meta["base_model"] == BACKBONE_REPO
    assert meta["license"] == LICENSE
    assert meta["datasets"] == ["synthetic-ptb-xl-layout"]  # the run's data folder is ecg_adapt's synthetic set
    assert {"ecg", "hubert_ecg", "lora"} <= set(meta["tags"])
    assert set(meta["metrics"]) == {"roc_auc", "average_precision", "f1"}

    # model-index values are exactly metrics.json's numbers, test and validation, nothing more
    metrics = json.loads((run / "metrics.json").read_text())
    expected = {}
    for split in ("test", "validation"):
        m = metrics[split]
        for key, metric_type in (("macro_auroc", "roc_auc"), ("macro_auprc", "average_precision"), ("macro_f1", "f1")):
            expected[(split, metric_type, "macro")] = m[key]
        for key, metric_type in (("per_class_auroc", "roc_auc"), ("per_class_f1", "f1")):
            for label, value in m[key].items():
                if value is not None:  # undefined (a class with one outcome): left out, and said in the body
                    expected[(split, metric_type, label)] = value
    got = {}
    for result in _front_matter(card_text)["model-index"][0]["results"]:
        assert result["task"]["type"] and result["dataset"]["type"] and result["dataset"]["name"]
        for metric in result["metrics"]:
            key = (result["dataset"]["split"], metric["type"], metric["config"])
            assert key not in got, key
            got[key] = metric["value"]
    assert got == expected

    # body: contract, labels and thresholds, loading, trainable parameters, disclaimer
    backbone_config = json.loads((run / "model" / "config.json").read_text())["backbone_config"]
    assert SignalContract.from_dict(backbone_config["signal_contract"]).describe() in card_text
    thresholds = json.loads((run / "model" / "task.json").read_text())["thresholds"]
    for label, value in thresholds.items():
        assert f"| {label} | {value:.4f} |" in card_text
    trained = json.loads((run / "model" / "adaptation_config.json").read_text())["trainable_parameters"]
    assert f"{trained['trainable']:,} trainable of {trained['total']:,} parameters" in card_text
    assert 'from_hub("ecg-test/tiny-lora")' in card_text and "ecg-adapt predict ecg-test/tiny-lora" in card_text
    assert "Not a medical device" in card_text
    undefined = [f"test AUROC {c}" for c, v in metrics["test"]["per_class_auroc"].items() if v is None]
    assert all(u in card_text for u in undefined)

    assert _digest(run) == before  # the run folder is only read


def test_push_needs_a_hub_backbone_and_a_known_licence(tiny_run: TinyRun, tmp_path: Path) -> None:
    run = tiny_run.run
    with pytest.raises(HubError, match="local folder"):  # trained on a local folder: others could not load it
        prepare_push_folder(run, output_dir=tmp_path / "a")
    with pytest.raises(HubError, match="not a Hugging Face repo id"):
        prepare_push_folder(run, str(tiny_run.backbone), output_dir=tmp_path / "b")
    with pytest.raises(ValueError, match="licence of ecg-test/tiny-hubert-ecg is unknown"):
        prepare_push_folder(run, BACKBONE_REPO, output_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()  # nothing half-built left behind
    # a registered release: its licence is inherited, and cannot be contradicted
    card = ModelCard(build_model_card(run, "me/x", "Edoardo-BS/hubert-ecg-small"))
    assert card.data.license == "cc-by-nc-4.0"
    assert "non-commercial" in card.text
    with pytest.raises(ValueError, match="contradicts"):
        build_model_card(run, "me/x", "Edoardo-BS/hubert-ecg-small", license="mit")


def test_merged_push_is_a_full_model_that_predicts_like_the_adapter(tiny_run: TinyRun, record_paths: list[Path],
                                                                     tmp_path: Path) -> None:
    before = _digest(tiny_run.run)
    folder = prepare_push_folder(tiny_run.run, BACKBONE_REPO, merged=True, repo_id="ecg-test/tiny-merged",
                                 license=LICENSE, output_dir=tmp_path / "merged")
    files = {p.name for p in folder.iterdir()}
    assert "model.safetensors" in files and not files & {"adapter_model.safetensors", "adapter_config.json"}
    # the tuned thresholds are part of the saved model: a merged folder that lost them is refused as incomplete
    assert "task.json" in json.loads((folder / "model_complete.json").read_text())["files"]
    meta = ModelCard.load(folder / "README.md").data.to_dict()
    assert "merged" in meta["tags"] and meta["base_model_relation"] == "finetune"
    merged = Predictor.from_pretrained(folder)
    assert type(merged.model).__name__ == "ECGClassifier"
    adapter = Predictor.from_pretrained(tiny_run.run / "model")
    got, want = _probabilities(merged, record_paths), _probabilities(adapter, record_paths)
    np.testing.assert_allclose([list(p.values()) for p in got], [list(p.values()) for p in want], atol=1e-5)
    assert _digest(tiny_run.run) == before


# -- (b) round trip over HTTP --------------------------------------------------------------------------
_LOAD_SCRIPT = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    import torch
    from ecg_adapt.hub import from_hub
    from ecg_adapt.inference import read_records

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    repo, out, *paths = sys.argv[1:]
    records, bad = read_records([Path(p) for p in paths])
    assert not bad, bad
    result = {}
    for revision in (None, "merged"):
        predictor = from_hub(repo, revision=revision)
        base = predictor.model.get_base_model() if hasattr(predictor.model, "get_base_model") else predictor.model
        result[str(revision)] = {
            "model": type(predictor.model).__name__,
            "backbone": base.config.backbone_name_or_path,
            "labels": predictor.labels,
            "thresholds": predictor.thresholds.tolist(),
            "probabilities": [p.probabilities for p in predictor.predict(records)],
        }
    Path(out).write_text(json.dumps(result))
""")


def _start_loader(hub: FakeHub, tmp_path: Path, hf_home: Path, paths: list[Path], offline: bool):
    """Load by repo id in a fresh interpreter (HF_ENDPOINT must be set before huggingface_hub is imported).
    Starts it and returns a function that waits for its result, so the caller can work meanwhile."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGINGFACE_")) and k != "TRANSFORMERS_CACHE"}
    # Same intra-op thread count as this process: float reductions then run in the same order, bit for bit.
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(hf_home), HF_TOKEN="dummy", OMP_NUM_THREADS=str(torch.get_num_threads()))
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    script = tmp_path / "load_from_hub.py"
    script.write_text(_LOAD_SCRIPT)
    out = tmp_path / f"predictions_{'offline' if offline else 'online'}.json"
    proc = subprocess.Popen([sys.executable, str(script), "ecg-test/tiny-lora", str(out), *map(str, paths)],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result() -> dict:
        try:
            _, stderr = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert proc.returncode == 0, stderr[-4000:]
        return json.loads(out.read_text())

    return result


@pytest.mark.slow
def test_push_and_load_by_repo_id_give_the_local_predictions_online_and_offline(
        tiny_run: TinyRun, hub: FakeHub, record_paths: list[Path], tmp_path: Path) -> None:
    run = tiny_run.run
    before = _digest(run)
    commit = push_to_hub(run, "ecg-test/tiny-lora", base_model=BACKBONE_REPO, private=True, token="dummy",
                         license=LICENSE, endpoint=hub.url)
    assert commit.oid == hub.repo("ecg-test/tiny-lora").branches["main"]
    push_to_hub(run, "ecg-test/tiny-lora", base_model=BACKBONE_REPO, revision="merged", merged=True,
                token="dummy", license=LICENSE, endpoint=hub.url)
    assert _digest(run) == before

    # a fresh process, empty HF_HOME: load by repo id (main = adapter, branch "merged" = full model) ...
    hf_home = tmp_path / "hf_home"
    online_result = _start_loader(hub, tmp_path, hf_home, record_paths, offline=False)

    # ... meanwhile, what the Hub holds: exactly the prepared folder (+ the Hub's .gitattributes), no backbone
    repo = hub.repo("ecg-test/tiny-lora")
    assert repo.private
    expected = prepare_push_folder(run, BACKBONE_REPO, repo_id="ecg-test/tiny-lora", license=LICENSE,
                                   output_dir=tmp_path / "expected")
    main = repo.files("main")
    assert set(main) == {p.name for p in expected.iterdir()} | {".gitattributes"}
    assert all(main[p.name] == p.read_bytes() for p in expected.iterdir())
    backbone_weights = (tiny_run.backbone / "model.safetensors").read_bytes()
    assert backbone_weights not in main.values()
    assert all("lora_" in k or ".classifier." in k for k in load_safetensors_bytes(main["adapter_model.safetensors"]))
    branch = repo.files("merged")
    assert "model.safetensors" in branch and "adapter_model.safetensors" not in branch
    assert repo.branches["main"] == commit.oid  # the branch push left main alone
    local = Predictor.from_pretrained(run / "model")
    local_probs = _probabilities(local, record_paths)

    online = online_result()
    adapter = online["None"]
    assert adapter["model"] == "PeftModel" and adapter["backbone"] == BACKBONE_REPO
    assert adapter["labels"] == local.labels and adapter["thresholds"] == local.thresholds.tolist()
    assert adapter["probabilities"] == local_probs  # identical, not merely close
    full = online["merged"]
    assert full["model"] == "ECGClassifier"
    np.testing.assert_allclose([list(p.values()) for p in full["probabilities"]],
                               [list(p.values()) for p in local_probs], atol=1e-5)
    assert (hf_home / "hub" / "models--ecg-test--tiny-hubert-ecg").is_dir()  # backbone fetched by its recorded id

    # again with HF_HUB_OFFLINE=1: from the cache, not a single request to the Hub
    n_requests = len(hub.requests)
    offline = _start_loader(hub, tmp_path, hf_home, record_paths, offline=True)()
    assert offline == online
    assert len(hub.requests) == n_requests
    assert hub.unknown == []  # the client needed no route the fake Hub lacks


# -- (c) failures ------------------------------------------------------------------------------------
def test_push_without_a_token_fails_before_any_request(tiny_run: TinyRun, hub: FakeHub, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    assert huggingface_hub.get_token() is None
    before, n_requests = _digest(tiny_run.run), len(hub.requests)
    with pytest.raises(HubError, match="No Hugging Face token"):
        push_to_hub(tiny_run.run, "ecg-test/no-token", base_model=BACKBONE_REPO, license=LICENSE, endpoint=hub.url)
    assert len(hub.requests) == n_requests
    assert ("model", "ecg-test/no-token") not in hub.repos
    assert _digest(tiny_run.run) == before
    # the same check, before a training that is meant to push at its end
    with pytest.raises(HubError, match="No Hugging Face token"):
        preflight_push("ecg-test/no-token", str(tiny_run.backbone), BACKBONE_REPO)
    monkeypatch.setenv("HF_TOKEN", "dummy")
    with pytest.raises(HubError, match="local folder"):
        preflight_push("ecg-test/no-token", str(tiny_run.backbone))
    assert preflight_push("ecg-test/no-token", str(tiny_run.backbone), BACKBONE_REPO) == BACKBONE_REPO


def test_push_to_an_unreachable_hub_says_so(tiny_run: TinyRun) -> None:
    before = _digest(tiny_run.run)
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(HubError, match="Cannot reach the Hugging Face Hub"):
        push_to_hub(tiny_run.run, "ecg-test/down", base_model=BACKBONE_REPO, token="dummy", license=LICENSE,
                    endpoint=endpoint)
    assert _digest(tiny_run.run) == before


def test_push_refuses_foreign_content_unless_overwrite(tiny_run: TinyRun, hub: FakeHub) -> None:
    run, api = tiny_run.run, HfApi(endpoint=hub.url, token="dummy")
    before = _digest(run)
    api.create_repo("ecg-test/someone-else")
    api.upload_file(path_or_fileobj=b"not ours", path_in_repo="pytorch_model.bin", repo_id="ecg-test/someone-else")
    foreign = hub.repo("ecg-test/someone-else").files()
    kwargs = {"base_model": BACKBONE_REPO, "token": "dummy", "license": LICENSE, "endpoint": hub.url}
    with pytest.raises(HubError, match="not written by ecg_adapt.*overwrite=True"):
        push_to_hub(run, "ecg-test/someone-else", **kwargs)
    assert hub.repo("ecg-test/someone-else").files() == foreign
    with pytest.raises(HubError, match="base model ecg-test/nowhere is not on the Hub"):
        push_to_hub(run, "ecg-test/fresh", **{**kwargs, "base_model": "ecg-test/nowhere"})
    assert ("model", "ecg-test/fresh") not in hub.repos
    assert _digest(run) == before

    push_to_hub(run, "ecg-test/someone-else", overwrite=True, **kwargs)
    files = hub.repo("ecg-test/someone-else").files()
    assert "pytorch_model.bin" not in files and "adaptation_config.json" in files
    push_to_hub(run, "ecg-test/someone-else", **kwargs)  # our own content now: no overwrite needed
    with pytest.raises(HubError, match="is public; refusing to push with private=True"):
        push_to_hub(run, "ecg-test/someone-else", private=True, **kwargs)
    assert _digest(run) == before


def test_from_hub_accepts_run_and_model_folders(tiny_run: TinyRun, record_paths: list[Path]) -> None:
    by_run = from_hub(tiny_run.run)
    by_model = from_hub(tiny_run.run / "model")
    assert _probabilities(by_run, record_paths[:1]) == _probabilities(by_model, record_paths[:1])
    with pytest.raises(FileNotFoundError, match="not a model saved by ecg_adapt"):
        from_hub(tiny_run.data_root)
    with pytest.raises(FileNotFoundError, match="neither an existing folder nor a Hugging Face repo id"):
        from_hub("no/such/folder/here")


def test_from_hub_offline_with_an_empty_cache_says_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no request can leave the process
    with pytest.raises(HubError, match="neither reachable on the Hub nor in the local cache"):
        from_hub("ecg-test/never-downloaded", cache_dir=tmp_path / "empty-cache")


def test_card_gives_each_test_metric_its_interval_and_says_which_model_was_selected(tiny_run: TinyRun) -> None:
    run = tiny_run.run
    metrics = json.loads((run / "metrics.json").read_text())
    card = ModelCard(build_model_card(run, "me/x", "Edoardo-BS/hubert-ecg-small")).text
    ci = metrics["test"]["ci"]["macro_auroc"]
    assert f"[{ci['low']:.4f}, {ci['high']:.4f}]" in _section(card, "Evaluation")
    assert f"Test macro AUROC **{metrics['test']['macro_auroc']:.4f}** (95% CI {ci['low']:.4f}–{ci['high']:.4f})" in card
    assert "percentile bootstrap over the" in card
    # This run trains with eval_strategy "no": the card must not pass its last step off as a selected model.
    assert metrics["selection"]["selected"] == "last"
    assert "**Not a selected checkpoint:** eval_strategy is 'no'" in card
    for warning in metrics["test"].get("support_warnings", []):
        assert warning in card
