"""No code from a checkpoint file runs: every unpickling path, with and without ``allow_pickle`` (issue 11).

Each test stores a pickle whose payload would create a marker file if anything executed it.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


class _Exec:
    """Unpickling this calls a builtin (``exec``/``eval``) on code that writes ``marker``."""

    def __init__(self, marker: Path, how: str = "exec") -> None:
        self.marker, self.how = marker, how

    def __reduce__(self):  # noqa: D105
        code = f"open({str(self.marker)!r}, 'w').write('pwned')"
        return (exec, (code,)) if self.how == "exec" else (eval, (code,))


class _System:
    """Unpickling this calls ``os.system`` to create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: D105
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def state_dict() -> dict[str, torch.Tensor]:
    return {"w": torch.ones(2, 2)}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("how", ["exec", "eval", "system"])
def test_hubert_ecg_legacy_reader_runs_no_code_with_or_without_allow_pickle(tmp_path: Path, how: str,
                                                                           protocol: int) -> None:
    from ecg_adapt.models.hubert_ecg.convert import read_legacy_checkpoint

    marker = tmp_path / "executed"
    payload = _System(marker) if how == "system" else _Exec(marker, how)
    # Protocol 4 names the global ``builtins.exec`` (torch's default, 2, writes the Python 2 name ``__builtin__``).
    torch.save({"model_config": payload, "model_state_dict": {"w": torch.ones(2)}}, tmp_path / "evil.pt",
               pickle_protocol=protocol)
    with pytest.raises(ValueError, match="allow_pickle=True"):
        read_legacy_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()
    # Before: the "restricted" unpickler allowed every builtins global, so exec/eval ran with allow_pickle.
    with pytest.raises(ValueError, match="refuses|not one of"):
        read_legacy_checkpoint(tmp_path / "evil.pt", allow_pickle=True)
    assert not marker.exists()


def test_hubert_ecg_legacy_reader_accepts_exactly_the_release_config_classes(golden: Path, tmp_path: Path) -> None:
    """The original saves ``model_config`` as ``hubert_ecg.HuBERTECGConfig`` (or transformers' ``HubertConfig``):
    those load as inert attribute bags; nothing else outside torch's weights-only set does."""
    from ecg_adapt.models.hubert_ecg.convert import LEGACY_CONFIG_CLASSES, read_legacy_checkpoint

    assert set(LEGACY_CONFIG_CLASSES) == {"hubert_ecg.HuBERTECGConfig",
                                          "transformers.models.hubert.configuration_hubert.HubertConfig"}
    fake = types.ModuleType("hubert_ecg")

    class HuBERTECGConfig:  # noqa: N801 - the original class name
        def __setstate__(self, state):  # would run on unpickling if the real class were used
            raise AssertionError("the original class must never be imported or called")

    HuBERTECGConfig.__module__, HuBERTECGConfig.__qualname__ = "hubert_ecg", "HuBERTECGConfig"
    fake.HuBERTECGConfig = HuBERTECGConfig
    sys.modules["hubert_ecg"] = fake
    try:
        cfg = HuBERTECGConfig.__new__(HuBERTECGConfig)
        cfg.__dict__.update(json.loads((golden / "hubert_ecg" / "checkpoint" / "config.json").read_text()))
        sd = load_file(str(golden / "hubert_ecg" / "checkpoint" / "model.safetensors"))
        torch.save({"model_config": cfg, "model_state_dict": sd, "optimizer_state_dict": {"state": {}, "param_groups": []}},
                   tmp_path / "release.pt")
    finally:
        del sys.modules["hubert_ecg"]
    config, state = read_legacy_checkpoint(tmp_path / "release.pt", allow_pickle=True)
    assert config["hidden_size"] == 64 and set(state) == set(sd)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("family", ["st_mem", "ecgfounder"])
def test_generic_checkpoint_reader_runs_no_code_with_or_without_allow_pickle(tmp_path: Path, family: str,
                                                                             state_dict: dict) -> None:
    import importlib

    read_checkpoint = importlib.import_module(f"ecg_adapt.models.{family}.convert").read_checkpoint
    marker = tmp_path / "executed"
    torch.save({"model": state_dict, "state_dict": state_dict, "args": _Exec(marker)}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="allow_pickle"):
        read_checkpoint(tmp_path / "evil.pth")
    assert not marker.exists()
    # Before: allow_pickle=True meant torch.load(weights_only=False): the payload ran.
    out = read_checkpoint(tmp_path / "evil.pth", allow_pickle=True)
    assert not marker.exists()
    weights = out["model"] if isinstance(out, dict) else out[0]
    assert torch.equal(weights["w"], state_dict["w"])  # the weights themselves still load


def test_ecg_fm_reader_runs_no_code_with_or_without_allow_pickle(tmp_path: Path, state_dict: dict) -> None:
    from ecg_adapt.models.ecg_fm.convert import read_fairseq_checkpoint

    marker = tmp_path / "executed"
    torch.save({"model": state_dict, "cfg": _Exec(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="allow_pickle"):
        read_fairseq_checkpoint(tmp_path / "evil.pt")
    read_fairseq_checkpoint(tmp_path / "evil.pt", allow_pickle=True)
    assert not marker.exists()


def test_convert_cli_with_allow_pickle_runs_no_code_and_says_why(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    from ecg_adapt.cli import main

    marker = tmp_path / "executed"
    torch.save({"model_config": _Exec(marker), "model_state_dict": {"w": torch.ones(2)}}, tmp_path / "evil.pt")
    rc = main(["convert", "--family", "hubert_ecg", str(tmp_path / "evil.pt"), str(tmp_path / "out"), "--allow-pickle"])
    assert rc == 2 and "exec']" in capsys.readouterr().err  # the refused global is named
    assert not marker.exists() and not (tmp_path / "out").exists()
