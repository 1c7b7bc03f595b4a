"""Every registered family, the same way: registry entries, processors on a real record, CLI listing."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ecg_adapt import read_wfdb
from ecg_adapt.models import FAMILIES, released_variants
from ecg_adapt.processing import ECGProcessor, SignalContract

# The eight families of the ICLR 2026 ECG FM benchmark that ecg_adapt ships (a floor: a deleted folder fails here).
EXPECTED = {"hubert_ecg", "ecg_fm", "ecgfounder", "st_mem", "merl", "ecg_jepa", "ecgfm_ked", "ecg_cpc"}
# Every family folder on disk (models/<family>/family.py), found without the registry's discovery, so a folder that
# discovery misses (an import error, a misnamed FAMILY) is caught rather than silently dropped.
FOLDERS = {p.parent.name for p in (Path(__file__).resolve().parents[1] / "ecg_adapt" / "models").glob("*/family.py")}


def test_all_families_are_registered_with_variants() -> None:
    assert EXPECTED <= FOLDERS, sorted(EXPECTED - FOLDERS)
    assert FOLDERS == set(FAMILIES), (sorted(FOLDERS - set(FAMILIES)), sorted(set(FAMILIES) - FOLDERS))
    for v in released_variants():
        for key in ("name", "family", "source", "weights", "licence", "redistribution", "parameters", "contract"):
            assert v.get(key) not in (None, ""), (v.get("name"), key)
    for name, fam in FAMILIES.items():
        assert fam.released_variants, name
        assert fam.lora_target_modules and fam.lora_rationale, name
        params = inspect.signature(fam.convert).parameters
        assert "allow_pickle" in params, name  # ecg-adapt convert --allow-pickle
        assert "config_overrides" in params, name  # ecg-adapt convert --config key=value (run_converter refuses without)


@pytest.mark.parametrize("family", sorted(FOLDERS))
def test_family_processor_turns_a_real_record_into_the_contract_shape(family: str, samples: Path, tmp_path: Path) -> None:
    if family not in FAMILIES:
        pytest.skip(f"{family} not registered")
    fam = FAMILIES[family]
    contract = SignalContract.from_dict(fam.config_class().signal_contract)
    processor = ECGProcessor(contract, fam.default_processor_steps())
    processor.save_pretrained(tmp_path)  # steps are found again by name
    processor = ECGProcessor.from_pretrained(tmp_path)
    rec = read_wfdb(samples / "cinc2021" / "E07500")
    out = processor.process(rec.signal, rec.sampling_rate, rec.lead_names, record_id="E07500")
    assert out.input_values.shape[1:] == contract.input_shape
    assert np.isfinite(out.input_values).all() and out.attention_mask.all()
    # fewer leads than the contract: explicit choice, reported
    two = processor.process(rec.signal[:2], rec.sampling_rate, rec.lead_names[:2], missing_leads="zero")
    assert two.report.missing_leads == [lead for lead in contract.leads if lead not in ("I", "II")]


def test_cli_lists_every_family() -> None:
    out = subprocess.run([sys.executable, "-m", "ecg_adapt.cli", "models"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    listed = {line.split()[0] for line in out.stdout.splitlines() if line and not line.startswith(" ")}
    assert set(FAMILIES) == listed


def test_cli_convert_refuses_an_unknown_width_without_the_head_count(golden: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from ecg_adapt.cli import main

    # (every golden checkpoint converts through the CLI: tests/test_families_common.py)
    # a width the released table does not know, without the head count: a clear error, exit code 2
    assert main(["convert", "--family", "ecg_jepa", str(golden / "ecg_jepa/ecg_jepa_small_random_epoch100.pth"), str(tmp_path / "x")]) == 2
    assert "num_attention_heads" in capsys.readouterr().err


def test_cli_models_says_where_each_release_lives_and_its_licence(capsys: pytest.CaptureFixture) -> None:
    from ecg_adapt.cli import main

    assert main(["models"]) == 0
    blocks = {b.split()[1]: b for b in capsys.readouterr().out.strip().split("\n\n")}
    for v in released_variants():
        block, release = blocks[v["name"]], v.get("release")
        if release and release.get("repo_id"):  # on the Hub: the repo and the file load_backbone fetches
            assert f"release: Hugging Face Hub hf.co/{release['repo_id']}: {release['filename']}" in block, block
        elif release:  # elsewhere: the host, the URL and the file to download, and the overrides of its variant
            assert f"release: {release['host']} {release['url']} ({release['filename']};" in block, block
            for key, value in (v.get("convert_kwargs") or {}).items():
                assert f"--config {key}={value}" in block, block
        else:
            assert "release: not released" in block, block
        assert f"licence: {v['licence']}" in block, block
