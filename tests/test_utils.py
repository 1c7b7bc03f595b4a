"""The bottom-layer helpers: atomic writes and folder swaps, the "did you mean" hint, lazy package exports."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ecg_adapt.utils import atomic_folder, atomic_write, atomic_write_text, did_you_mean, flatten_dict, lazy_exports


def test_atomic_folder_replaces_an_existing_folder_only_when_the_block_succeeds(tmp_path: Path) -> None:
    dst = tmp_path / "model"
    dst.mkdir()
    (dst / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="interrupted"), atomic_folder(dst) as tmp:
        (tmp / "new.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left behind
    assert sorted(p.name for p in dst.iterdir()) == ["old.txt"]
    with atomic_folder(dst) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # neither the .tmp nor the .old sibling
    assert sorted(p.name for p in dst.iterdir()) == ["new.txt"]


def test_atomic_folder_clears_a_temporary_folder_left_by_an_earlier_crash(tmp_path: Path) -> None:
    stale = tmp_path / "model.tmp"
    stale.mkdir()
    (stale / "stale.bin").write_text("x")
    with atomic_folder(tmp_path / "model") as tmp:
        assert list(tmp.iterdir()) == []
        (tmp / "config.json").write_text("{}")
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["config.json"]


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "metrics.json", "old")

    def failing(tmp: Path) -> None:
        tmp.write_text("trunc")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, failing)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_did_you_mean_names_the_closest_known_name_or_nothing() -> None:
    assert did_you_mean("lroa", ["lora", "loha", "ia3"]) == " (did you mean 'lora'?)"
    assert did_you_mean(3, [1, 2, 30]) == " (did you mean '30'?)"  # non-strings compare by their text
    assert did_you_mean("zzzz", ["lora"]) == ""


def test_flatten_dict_joins_nested_keys_with_dots() -> None:
    assert flatten_dict({"training": {"seed": 1, "opt": {"lr": 0.1}}, "name": "x"}) == {
        "training.seed": 1, "training.opt.lr": 0.1, "name": "x"}


def test_lazy_exports_imports_a_name_on_first_access_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "lazy_pkg_for_test"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from ecg_adapt.utils import lazy_exports\n"
        "__getattr__, __dir__, __all__ = lazy_exports(__name__, {'heavy': ['VALUE']})\n")
    (pkg / "heavy.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import lazy_pkg_for_test

    try:
        assert lazy_pkg_for_test.__all__ == ["VALUE"] and "VALUE" in dir(lazy_pkg_for_test)
        assert "lazy_pkg_for_test.heavy" not in sys.modules
        assert lazy_pkg_for_test.VALUE == 42
        assert "lazy_pkg_for_test.heavy" in sys.modules and "VALUE" in vars(lazy_pkg_for_test)  # cached
        with pytest.raises(AttributeError, match="has no attribute 'OTHER'"):
            lazy_pkg_for_test.OTHER  # noqa: B018
    finally:
        for name in [m for m in sys.modules if m.startswith("lazy_pkg_for_test")]:
            del sys.modules[name]
