"""Tiny random-weight backbones of every family, for fast adaptation tests (one place, shared by test files)."""

from __future__ import annotations

import torch

from ecg_adapt.models.classifier import ECGClassifier

TINY_CONFIGS: dict[str, tuple[str, dict]] = {
    # name: (model_type, config kwargs)
    "hubert_ecg": ("hubert_ecg", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                      classifier_proj_size=16, conv_dim=[16] * 5, num_conv_pos_embeddings=16,
                                      num_conv_pos_embedding_groups=4)),
    "ecg_fm": ("ecg_fm", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                              conv_dim=[16] * 4, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)),
    "ecgfounder": ("ecgfounder", dict(base_filters=8, filter_list=[8, 16, 24], m_blocks_list=[1, 2, 1], groups_width=8,
                                      n_classes=5)),
    "st_mem": ("st_mem", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, head_dim=16, intermediate_size=64)),
    "merl_resnet": ("merl", dict(resnet_widths=[8, 8, 16, 16], resnet_num_blocks=[1, 1, 1, 1])),
    "merl_vit": ("merl", dict(encoder_type="vit", vit_width=32, vit_depth=2, vit_heads=2, vit_dim_head=16, vit_mlp_dim=64)),
    "ecg_jepa": ("ecg_jepa", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2)),
}


def tiny_backbone(name: str, seed: int = 0) -> torch.nn.Module:
    """A random tiny backbone of the named family (see ``TINY_CONFIGS``), in eval mode."""
    from ecg_adapt.models.registry import get_family

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
