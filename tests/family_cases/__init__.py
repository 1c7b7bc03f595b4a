"""Golden-fixture facts per backbone family, for ``tests/test_families_common.py``.

One module per family (named after its ``model_type``) declares ``CASES``: the golden checkpoints under
``../shared/golden`` with the files and tolerances their outputs are checked against. The common test finds the
modules itself, so a new family adds its folder under ``ecg_adapt/models/`` and one file here (test data), and edits
nothing else.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class GoldenCase:
    """One original checkpoint and the outputs the original code gave for one input.

    Attributes:
        id: test id.
        family: ``model_type``.
        checkpoint: the original checkpoint (file or folder), relative to ``golden/``.
        model_input, hidden, features, logits: ``.npy`` files relative to ``golden/`` (``None``: not checked).
            ``features`` is compared with ``pooler_output`` and with the classifier's pooled features.
        meta: the ``meta.json`` holding the tolerances, relative to ``golden/``.
        tolerance_key: its key that holds ``{output: {"atol", "rtol"}}``.
        convert_kwargs: extra arguments of the family converter (e.g. the head count it cannot read).
        hidden_channels_first: the fixture stores CNN hidden states as (batch, channels, time).
    """

    id: str
    family: str
    checkpoint: str
    model_input: str
    meta: str
    hidden: str | None = None
    features: str | None = None
    logits: str | None = None
    tolerance_key: str = "tolerance"
    convert_kwargs: dict[str, Any] = field(default_factory=dict)
    hidden_channels_first: bool = False

    def tolerance(self, golden: Path, output: str) -> dict[str, float]:
        """``assert_allclose`` keyword arguments (atol, rtol) for one output, from the fixture's meta.json."""
        tol = json.loads((golden / self.meta).read_text())[self.tolerance_key][output]
        return {"atol": tol["atol"], "rtol": tol["rtol"]}


@dataclass(frozen=True)
class ReleasedNames:
    """The released variants a family must list, in order (``FAMILY.released_variants``)."""

    family: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class LoraCase:
    """What the default LoRA does on one tiny config: the number of modules it wraps (an independent count, not
    derived from the declared targets) and the tolerance of merged vs adapter logits."""

    wrapped: int
    atol: float
    rtol: float


def peft_refusals() -> dict[tuple[str, str], tuple[str, ...]]:
    """``(tiny config, method variant) -> words the refusal must contain``, from every module's ``PEFT_REFUSED``
    (the variants are ``tests/test_adaptation_peft.py``'s ``VARIANTS``). A pair not listed must be supported."""
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    for info in pkgutil.iter_modules(__path__):
        out.update(getattr(importlib.import_module(f"{__name__}.{info.name}"), "PEFT_REFUSED", {}))
    return out


def all_cases() -> tuple[list[GoldenCase], list[ReleasedNames], dict[str, LoraCase]]:
    """Every declared golden case, released-name list and tiny-config LoRA case, from every module here."""
    cases, names, lora = [], [], {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        cases += list(getattr(module, "CASES", ()))
        lora.update(getattr(module, "LORA", {}))
        if hasattr(module, "RELEASED"):
            names.append(ReleasedNames(info.name, tuple(module.RELEASED)))
    return cases, names, lora
