"""The shipped recipe catalogue: every recipe validates, documents itself, and trains two steps on a tiny backbone
of its family with tiny data in the real on-disk layout of its source."""

from __future__ import annotations

import json

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import wfdb
import yaml

from ecg_adapt.data.synthetic import make_synthetic_ptbxl
from ecg_adapt.models.registry import FAMILIES as REGISTERED
from ecg_adapt.training import Recipe, RecipeError, list_recipes, recipes_dir, train
from ecg_adapt.training.catalogue import copy_recipe, find_recipe, read_info

from conftest import ROOT, SAMPLES, need
from test_sleep import R, S1, S2, S3, W, shhs_record, slpdb_record

SHIPPED = sorted(recipes_dir().glob("*.yaml"))
# Every discovered family (a new family folder is covered without editing this file); those with a channels-first
# block layout (CNNs, and ECG-CPC's S4 blocks) also ship a full fine-tuning recipe, the benchmark's strongest setting.
FAMILIES = tuple(sorted(REGISTERED))
CNN_FAMILIES = tuple(sorted(name for name, family in REGISTERED.items()
                            if any(v.layout.kind == "cnn" for v in family.variants.values())))
TINY_NAME = {"merl": "merl_resnet"}  # the MERL recipes use the ResNet18 encoder


def test_the_catalogue_covers_every_family_and_the_required_tasks() -> None:
    assert SHIPPED, f"no recipe in {recipes_dir()}"
    infos = {r.name: r for r in list_recipes()}
    assert set(infos) == {p.stem for p in SHIPPED}
    for family in FAMILIES:
        assert f"{family}_lora_ptbxl_superdiagnostic" in infos, family
        assert f"{family}_linear_probe_ptbxl_superdiagnostic" in infos, family
    for family in CNN_FAMILIES:
        assert f"{family}_full_ptbxl_superdiagnostic" in infos, family
    covered = {(r.dataset, r.task) for r in infos.values()}
    for required in [("cinc2021", "scored"), ("mitdb", "aami"), ("apnea_ecg", "apnea"), ("slpdb", "stages4"),
                     ("shhs", "stages4")]:
        assert required in covered, required
    assert all(r.family in FAMILIES for r in infos.values())
    # the checkout's recipes/ is the packaged folder (a symlink), so Makefile paths and installs agree
    assert (ROOT / "recipes").resolve() == recipes_dir().resolve()


def test_the_demo_recipe_keeps_its_name_and_makefile_path() -> None:
    assert find_recipe("hubert_ecg_lora_ptbxl_superdiagnostic") == recipes_dir() / "hubert_ecg_lora_ptbxl_superdiagnostic.yaml"
    assert "DEMO_RECIPE ?= recipes/hubert_ecg_lora_ptbxl_superdiagnostic.yaml" in (ROOT / "Makefile").read_text()
    assert (ROOT / "recipes" / "hubert_ecg_lora_ptbxl_superdiagnostic.yaml").is_file()


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_recipe_validates_and_its_header_says_how_to_launch_and_what_it_reproduces(path: Path) -> None:
    recipe = Recipe.from_yaml(path)
    info = read_info(path)
    assert (info.method, info.dataset, info.task) == (recipe.adaptation.method, recipe.data.source, recipe.task.name)
    header = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    for part in ("Launch:", f"ecg-adapt train recipes/{path.name}", "accelerate launch -m ecg_adapt.train",
                 "Protocol:", "Published:"):
        assert part in header, f"{path.name}: header lacks {part!r}"
    assert recipe.output.output_dir == f"runs/{path.stem}"


def test_old_ptbxl_and_demo_keys_say_where_they_moved() -> None:
    with pytest.raises(RecipeError, match=r"'data.sampling_rate' has moved to data.source_options.sampling_rate"):
        Recipe.from_dict({"data": {"sampling_rate": 500}})
    with pytest.raises(RecipeError, match=r"'data.synthetic_records' has moved to data.source_options.synthetic_records"):
        Recipe.from_dict({"data": {"synthetic_records": 50}})
    with pytest.raises(RecipeError, match=r"'model.embedded_backbone' has moved to ecg_adapt.demo"):
        Recipe.from_dict({"model": {"embedded_backbone": {}}})


def test_copy_refuses_to_overwrite_and_suggests_the_closest_name(tmp_path: Path) -> None:
    dest = copy_recipe("merl_full_ptbxl_superdiagnostic", tmp_path)
    assert dest == tmp_path / "merl_full_ptbxl_superdiagnostic.yaml"
    assert dest.read_text() == (recipes_dir() / dest.name).read_text()  # comments kept
    with pytest.raises(FileExistsError, match="--force"):
        copy_recipe("merl_full_ptbxl_superdiagnostic", dest)
    dest.write_text("edited\n")
    copy_recipe("merl_full_ptbxl_superdiagnostic", dest, force=True)
    assert dest.read_text().startswith("# MERL")
    with pytest.raises(RecipeError, match="did you mean 'merl_full_ptbxl_superdiagnostic'"):
        copy_recipe("merl_ful_ptbxl_superdiagnostic", tmp_path / "x.yaml")


def test_cli_lists_and_copies_recipes(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ecg_adapt.cli", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)

    ls = cli("recipes", "ls")
    assert ls.returncode == 0, ls.stderr
    rows = [line.split() for line in ls.stdout.strip().splitlines()]
    assert rows[0] == ["RECIPE", "FAMILY", "METHOD", "TASK", "DATASET"]
    assert ["hubert_ecg_lora_mitdb_aami", "hubert_ecg", "lora", "aami", "mitdb"] in rows
    assert len(rows) == 1 + len(SHIPPED)
    cp = cli("recipes", "cp", "ecg_jepa_lora_ptbxl_superdiagnostic", "mine.yaml")
    assert cp.returncode == 0 and (tmp_path / "mine.yaml").exists()
    again = cli("recipes", "cp", "ecg_jepa_lora_ptbxl_superdiagnostic", "mine.yaml")
    assert again.returncode == 2 and "--force" in again.stderr
    typo = cli("recipes", "cp", "ecg_jepa_lora_ptbxl_superdiagnstic", "other.yaml")
    assert typo.returncode == 2 and "did you mean 'ecg_jepa_lora_ptbxl_superdiagnostic'" in typo.stderr
    helptext = cli("train", "--help")
    assert helptext.returncode == 0
    # generated from the schema: every section, and keys with their types and defaults
    for line in ("training:", "  per_device_train_batch_size: int = 32", "  source_options: dict[str, Any] = {}",
                 "  windows: all|first = all", "adaptation:", "  r: int = 8"):
        assert line in helptext.stdout, line


# ------------------------------------------------------------------------------------- tiny data, real layouts
@pytest.fixture(scope="module")
def ptbxl_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_ptbxl(tmp_path_factory.mktemp("ptbxl"), n_records=50, sampling_rates=(100, 500), progress=False)


@pytest.fixture(scope="module")
def cinc2021_root() -> Path:
    return need(SAMPLES / "cinc2021")  # real challenge records (.hea/.mat)


@pytest.fixture(scope="module")
def mitdb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real record 100 as itself (DS2: test), as 101 (DS1: train) and as 106 (held-out validation)."""
    src = need(SAMPLES / "mitdb")
    root = tmp_path_factory.mktemp("mitdb")
    for name in ("100", "101", "106"):
        header = (src / "100.hea").read_text().replace("100 2 360", f"{name} 2 360").replace("100.dat", f"{name}.dat")
        (root / f"{name}.hea").write_text(header)
        shutil.copy(src / "100.dat", root / f"{name}.dat")
        shutil.copy(src / "100.atr", root / f"{name}.atr")
    return root


@pytest.fixture(scope="module")
def apnea_ecg_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """a01 (train), a03 (validation), x01 (test): 4-minute single-lead records at 100 Hz with .apn minute labels."""
    root = tmp_path_factory.mktemp("apnea")
    t = np.arange(4 * 6000) / 100
    ecg = np.exp(-(((t % 0.9) - 0.3) ** 2) / 2e-4) + 0.1 * np.sin(2 * np.pi * 0.25 * t)
    for name, labels in (("a01", "ANAN"), ("a03", "NAAN"), ("x01", "ANNA")):
        wfdb.wrsamp(name, fs=100, units=["mV"], sig_name=["ECG"], p_signal=ecg[:, None], fmt=["16"], adc_gain=[200.0],
                    baseline=[0], write_dir=str(root))
        wfdb.wrann(name, "apn", np.arange(4) * 6000, symbol=list(labels), write_dir=str(root))
    return root


@pytest.fixture(scope="module")
def slpdb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """slpdb's 18 record names, four 30 s epochs each (W, light, deep, REM in turn), with real-format .st notes."""
    root = tmp_path_factory.mktemp("slpdb")
    names = ["slp01a", "slp01b", "slp02a", "slp02b", "slp03", "slp04", "slp14", "slp16", "slp32", "slp37", "slp41",
             "slp45", "slp48", "slp59", "slp60", "slp61", "slp66", "slp67x"]
    stages = ["W", "1", "3", "R", "2", "4"]
    epoch = 30 * 250
    for i, name in enumerate(names):
        notes = [(1 if k == 0 else k * epoch, stages[(i + k) % len(stages)]) for k in range(4)]
        slpdb_record(root, name, notes, n_epochs=4)
    (root / "RECORDS").write_text("".join(f"{n}\n" for n in names))
    return root


@pytest.fixture(scope="module")
def shhs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SHHS-1 in the NSRR layout: 8 participants, four 30 s epochs each (EDF with the SHHS montage, ECG at 125 Hz,
    and NSRR XML stages cycling through wake, light, deep and REM)."""
    root = tmp_path_factory.mktemp("shhs")
    cycle = [W, S1, S3, R, S2]
    for i in range(1, 9):
        shhs_record(root, "shhs1", f"shhs1-20000{i}", [cycle[(i + k) % len(cycle)] for k in range(4)], n_epochs=4)
    return root


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_recipe_trains_two_steps_on_a_tiny_backbone_and_real_layout_data(
    path: Path, request: pytest.FixtureRequest, tiny_backbone_dirs: dict[str, Path], tmp_path: Path
) -> None:
    info = read_info(path)
    data_root = request.getfixturevalue(f"{info.dataset}_root")
    overrides = [
        f"model.model_name_or_path={tiny_backbone_dirs[TINY_NAME.get(info.family, info.family)]}",
        f"data.path={data_root}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.max_records_per_split=3",
        "training.max_steps=2",
        "training.per_device_train_batch_size=2",
        "training.per_device_eval_batch_size=4",
        "training.eval_strategy=no",
        "training.save_strategy=no",
        "training.logging_steps=1",
        f"output.output_dir={tmp_path / 'run'}",
    ]
    if info.dataset == "ptbxl":  # the demo's synthetic_records applies to generated data only
        raw = yaml.safe_load(path.read_text())
        for key in (raw["data"].get("source_options") or {}):
            if key.startswith("synthetic_"):
                overrides.append(f"data.source_options.{key}=")
    recipe = Recipe.from_yaml(path, overrides)
    options = {k: v for k, v in recipe.data.source_options.items() if v is not None}
    recipe.data.source_options = options
    metrics = train(recipe)
    assert metrics["global_step"] == 2
    assert metrics["adaptation"] == info.method and metrics["task"].split("/")[-1] == info.task
    assert (tmp_path / "run" / "model" / "config.json").exists()
    assert all(n > 0 for n in metrics["data"]["records"].values()), metrics["data"]["records"]
    if recipe.model.sequence_model:  # sleep staging: the sequence model, its recording mapping, staging metrics
        config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
        assert config["model_type"] == "ecg_sequence_classifier"
        assert config["sequence_model"] == recipe.model.sequence_model
        assert config["ecg_channels"][0] == "ECG" and config["ecg_lead"] == "I" and config["epoch_seconds"] == 30
        for key in ("kappa", "macro_f1", "per_class_f1", "confusion_matrix", "subject_kappa_mean", "per_subject"):
            assert key in metrics["test"], key
        assert metrics["test"]["ci_info"]["unit"] == "subject"


def test_train_help_schema_and_catalogue_import_no_torch() -> None:
    """The schema help, the catalogue and the CLI's parser must stay torch-free so that ``ecg-adapt --help`` and
    ``train --help`` answer fast. The package ``__init__`` files are replaced by empty packages here, so this checks
    the modules themselves, whatever the package faces import."""
    code = f"""
import importlib.machinery, importlib.util, sys
root = {str(ROOT / 'ecg_adapt')!r}
for name, sub in (("ecg_adapt", ""), ("ecg_adapt.adaptation", "/adaptation"), ("ecg_adapt.training", "/training")):
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [root + sub]
    sys.modules[name] = importlib.util.module_from_spec(spec)
from ecg_adapt.training.recipe import schema_help
from ecg_adapt.training.catalogue import list_recipes
from ecg_adapt.cli import build_parser
build_parser(); text = schema_help(); rows = list_recipes()
assert "per_device_train_batch_size" in text and rows
heavy = sorted(m for m in ("torch", "transformers", "peft", "accelerate") if m in sys.modules)
print("HEAVY", heavy)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HEAVY []" in proc.stdout, proc.stdout


@pytest.mark.slow
def test_a_built_wheel_ships_every_recipe(tmp_path: Path) -> None:
    """A regular (non-editable) install gets the catalogue: the wheel holds ecg_adapt/recipes/*.yaml."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    shutil.copytree(ROOT / "ecg_adapt", src / "ecg_adapt", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=600, cwd=src)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import zipfile

    (wheel,) = (tmp_path / "dist").glob("ecg_adapt-*.whl")
    shipped = {Path(n).name for n in zipfile.ZipFile(wheel).namelist() if n.startswith("ecg_adapt/recipes/")}
    assert shipped == {p.name for p in SHIPPED}


def test_the_apnea_recipe_takes_the_sequence_head_with_its_one_minute_unit(
    apnea_ecg_root: Path, tiny_backbone_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """The sequence keys work on any source of long recordings: Apnea-ECG minutes, a GRU over the neighbours."""
    recipe = Recipe.from_yaml(recipes_dir() / "ecgfounder_lora_apnea_ecg_apnea.yaml", [
        f"model.model_name_or_path={tiny_backbone_dirs['ecgfounder']}", f"data.path={apnea_ecg_root}",
        f"data.cache_dir={tmp_path / 'cache'}", "model.sequence_model=gru", "model.context_epochs=1",
        "model.sequence_hidden_size=8", "training.max_steps=1", "training.per_device_train_batch_size=2",
        "training.eval_strategy=no", "training.save_strategy=no", "training.bootstrap_resamples=0",
        f"output.output_dir={tmp_path / 'run'}"])
    metrics = train(recipe)
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["model_type"] == "ecg_sequence_classifier" and config["epoch_seconds"] == 60
    assert config["windows_per_epoch"] == 6 and config["context"] == 6  # a minute is six 10 s windows
    assert config["ecg_lead"] == recipe.data.source_options.get("lead_name")
    assert metrics["global_step"] == 1 and "confusion_matrix" not in metrics["test"]  # not a staging task
