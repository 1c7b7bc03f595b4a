"""Tiny random-weight backbones of every family, for fast adaptation tests (one place, shared by test files)."""

from __future__ import annotations

import torch

from ecg_adapt.models.classifier import ECGClassifier
from ecg_adapt.models.registry import FAMILIES

# name -> (model_type, config kwargs), read from every registered family's ``tiny_configs`` (declared in its folder),
# so a new family's tiny models reach every test that loops over TINY_CONFIGS without editing this file.
TINY_CONFIGS: dict[str, tuple[str, dict]] = {
    name: (family.model_type, dict(kwargs)) for family in FAMILIES.values() for name, kwargs in family.tiny_configs.items()
}


def tiny_backbone(name: str, seed: int = 0) -> torch.nn.Module:
    """A random tiny backbone of the named family (see ``TINY_CONFIGS``), in eval mode."""
    from ecg_adapt.models.registry import get_family

    if name not in TINY_CONFIGS:
        raise KeyError(f"No tiny config {name!r}; known: {sorted(TINY_CONFIGS)}")
    model_type, kwargs = TINY_CONFIGS[name]
    family = get_family(model_type)
    torch.manual_seed(seed)
    return family.model_class(family.config_class(**kwargs)).eval()


def tiny_classifier(name: str, labels: list[str] | None = None, seed: int = 0, **kw) -> ECGClassifier:
    """A tiny classifier (3 labels by default) on :func:`tiny_backbone`."""
    backbone = tiny_backbone(name, seed)
    torch.manual_seed(seed + 1)
    return ECGClassifier.from_backbone(backbone, labels or ["a", "b", "c"], **kw)


def tiny_batch(model: torch.nn.Module, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random ``input_values`` (and an all-ones ``attention_mask``) of the backbone's input contract."""
    from ecg_adapt.processing import SignalContract

    backbone = getattr(model, "backbone", model)
    contract = SignalContract.from_dict(backbone.config.signal_contract)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch,) + tuple(contract.input_shape), generator=g)
    return {"input_values": x, "attention_mask": torch.ones_like(x, dtype=torch.long)}
