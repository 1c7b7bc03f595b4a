"""Small helpers shared by every layer of ecg_adapt; this module imports nothing else from the package.

* :func:`did_you_mean`: the ``(did you mean 'x'?)`` hint of an error about an unknown name or key;
* :func:`atomic_write` / :func:`atomic_write_text`: write a file under a temporary name, then rename it into place;
* :func:`atomic_folder`: build a folder under a temporary sibling name, then swap it into place;
* :func:`flatten_dict`: nested mappings to dotted keys (trackers and registries take flat parameters);
* :func:`lazy_exports`: a package's names imported from their submodules on first use (PEP 562).

Why the atomic helpers are written here: neither the standard library nor huggingface_hub offers a
"build a folder, then replace the old one by rename" primitive, and every cache, checkpoint and model folder
ecg_adapt writes must never be seen half-written (a crash leaves the old folder or none, never a mix).
"""

from __future__ import annotations

import difflib
import importlib
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_folder", "atomic_write", "atomic_write_text", "did_you_mean", "flatten_dict", "lazy_exports"]


def did_you_mean(name: object, known: Iterable[object], cutoff: float = 0.6) -> str:
    """``" (did you mean 'x'?)"`` for the known name closest to ``name``, or ``""`` when none is close.

    Example:
        >>> did_you_mean("lroa", ["lora", "ia3"])
        " (did you mean 'lora'?)"
        >>> did_you_mean("xyz", ["lora"])
        ''
    """
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Write ``path`` through ``write(temporary path)`` and rename it into place: readers see the old file or the
    complete new one, never a truncated one. The temporary file is removed if ``write`` fails.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x.bin"
        >>> atomic_write(p, lambda tmp: tmp.write_bytes(b"ok")).read_bytes()
        b'ok'
    """
    path = Path(path)
    # The process id keeps two writers of the same file from sharing a temporary name.
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of a text file (UTF-8)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@contextmanager
def atomic_folder(dst: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield an empty temporary sibling of ``dst`` to fill; on a clean exit it replaces ``dst`` by rename.

    An existing ``dst`` is first renamed aside (``dst.old``), then removed once the new folder is in place, so a
    crash leaves either the old folder or the new one. On an exception the temporary folder is removed and
    ``dst`` is left as it was.

    Example:
        >>> import tempfile
        >>> dst = Path(tempfile.mkdtemp()) / "model"
        >>> with atomic_folder(dst) as tmp:
        ...     _ = (tmp / "config.json").write_text("{}")
        >>> sorted(p.name for p in dst.iterdir())
        ['config.json']
    """
    dst = Path(dst)
    tmp = dst.with_name(dst.name + suffix)
    if tmp.exists():  # left by an interrupted earlier write
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dst.exists():
        old = dst.with_name(dst.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(tmp, dst)
        shutil.rmtree(old)
    else:
        os.replace(tmp, dst)


def flatten_dict(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"training": {"seed": 1}}`` -> ``{"training.seed": 1}`` (for trackers and registries that take flat params).

    Example:
        >>> flatten_dict({"training": {"seed": 1}, "name": "x"})
        {'training.seed': 1, 'name': 'x'}
    """
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten_dict(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def lazy_exports(
    package: str, exports: Mapping[str, Sequence[str]], on_load: Callable[[str], object] | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """A package's module-level ``__getattr__``, ``__dir__`` (PEP 562) and ``__all__`` for ``exports``
    (submodule -> the public names it defines), each name imported from its submodule on first access, as
    transformers' ``_LazyModule`` does.

    Written here rather than taken from transformers: importing ``transformers.utils`` (where ``_LazyModule``
    lives) takes about 2 s here, which is what a lazy package face is meant to avoid.

    ``on_load(name)`` runs after each first access (a backbone family registers itself with the transformers Auto
    classes there, as importing its package eagerly used to).

    Usage, at the end of a package's ``__init__``::

        __getattr__, __dir__, __all__ = lazy_exports(__name__, {"inference": ["Predictor"]})
    """
    module = sys.modules[package]
    owner = {name: submodule for submodule, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        submodule = owner.get(name)
        if submodule is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{submodule}"), name)
        setattr(module, name, value)  # later accesses skip __getattr__
        if on_load is not None:
            on_load(name)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(module)) | set(owner))

    return __getattr__, __dir__, list(owner)
