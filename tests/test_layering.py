"""The package's layers import one way, and the package face and the command line load lazily.

Layers, lowest first (a module may import its own layer and any lower one, never a higher one):

0. ``ecg_adapt._version``, ``ecg_adapt.utils``: no ecg_adapt imports at all;
1. ``processing``: signal contracts, processors, augmentation;
2. ``tasks``: labels, metrics, window-to-record aggregation (pure numpy/sklearn, no torch);
3. ``models``: backbones, the classifier, the family registry (reads processing contracts);
4. ``data``: sources and caches (build tasks, run processors);
5. ``adaptation``: methods that wrap models;
6. ``inference``: the predictor (adapted model + processor + aggregation);
7. ``hub``: pushing and loading runs (a pushed run loads as a predictor); ``evaluation``: saved predictions,
   comparisons of runs (reads run folders; the trainer writes predictions through it);
8. ``training``: the recipe and the trainer (pushes to the hub at the end of a run);
9. the faces: ``ecg_adapt`` (the package ``__init__``), ``cli``, ``train`` (``python -m ecg_adapt.train``).

Imports inside ``if TYPE_CHECKING:`` blocks are checked too: a type annotation that names a higher layer is
a sign that the code depends on it.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ecg_adapt"
ROOT = PACKAGE.parent

LAYERS: dict[str, int] = {
    "_version": 0,
    "utils": 0,
    "progress": 0,
    "processing": 1,
    "tasks": 2,
    "models": 3,
    "data": 4,
    "adaptation": 5,
    "inference": 6,
    "hub": 7,
    "evaluation": 7,
    "training": 8,
    "__init__": 9,
    "cli": 9,
    "train": 9,
    "demo": 9,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    """The layer of a module ``ecg_adapt.<top>...`` (``__init__`` for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every ecg_adapt module (or ``module.name``) this file imports, with its line; relative imports resolved."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None:  # `from . import x`: x may be a submodule
                found += [(f"{target}.{a.name}", node.lineno) for a in node.names]
            else:
                found.append((target, node.lineno))
    return [(t, line) for t, line in found if t == "ecg_adapt" or t.startswith("ecg_adapt.")]


def _violations() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = _layer(_module_name(path))
        assert here in LAYERS, f"{path.relative_to(ROOT)} is in no layer: add {here!r} to LAYERS (and the docstring)"
        for target, line in _imports(path):
            there = _layer(target)
            if there == "__version__":  # `from .. import __version__` reads the package face
                there = "__init__"
            assert there in LAYERS, f"{path.relative_to(ROOT)}:{line} imports {target}, which is in no layer"
            if there != here and LAYERS[there] > LAYERS[here]:
                out.append(f"{path.relative_to(ROOT)}:{line}: {here} (layer {LAYERS[here]}) imports {target} "
                           f"({there}, layer {LAYERS[there]})")
    return out


def test_no_module_imports_a_higher_layer() -> None:
    assert _violations() == []


def test_the_layer_check_finds_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The walker must see relative imports (the package uses nothing else), or the test above passes vacuously."""
    fake = tmp_path / "ecg_adapt"
    (fake / "processing").mkdir(parents=True)
    (fake / "processing" / "x.py").write_text("from ..training.recipe import Recipe\nfrom .. import __version__\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = _violations()
    assert len(found) == 2 and "imports ecg_adapt.training.recipe" in found[0] and "__version__" in found[1]


def _run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)


def test_importing_the_package_loads_neither_torch_nor_transformers() -> None:
    r = _run("import sys, ecg_adapt; print(ecg_adapt.__version__); "
             "print(sorted(m for m in ('torch', 'transformers', 'peft', 'accelerate') if m in sys.modules))")
    assert r.returncode == 0, r.stderr
    version, loaded = r.stdout.split("\n")[:2]
    assert loaded == "[]"
    assert version == __import__("ecg_adapt._version", fromlist=["__version__"]).__version__


@pytest.mark.parametrize("module", ["ecg_adapt.adaptation.config", "ecg_adapt.tasks", "ecg_adapt.hub.errors"])
def test_light_modules_load_without_torch(module: str) -> None:
    """The adaptation schema (what a recipe validates against), the tasks layer and the hub's exception stay
    importable without torch: the lazy package faces must not pull the heavy modules back in."""
    r = _run(f"import sys, {module}; print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_every_exported_name_imports_from_the_package_face() -> None:
    import ecg_adapt

    assert set(ecg_adapt.__all__) <= set(dir(ecg_adapt))
    for name in ecg_adapt.__all__:
        assert getattr(ecg_adapt, name) is not None, name
    assert ecg_adapt.aggregate_windows.__module__ == "ecg_adapt.tasks.windows"
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        ecg_adapt.not_a_name  # noqa: B018


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["predict", "--help"], ["models", "--help"], ["embed", "--help"]])
def test_cli_help_does_not_import_torch(argv: list[str]) -> None:
    r = _run("import sys\nfrom ecg_adapt.cli import main\n"
             f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
             "print('LOADED', sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    assert r.returncode == 0, r.stderr
    assert "usage: ecg-adapt" in r.stdout and "LOADED []" in r.stdout
