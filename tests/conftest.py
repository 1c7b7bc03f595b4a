"""Shared fixtures: paths to ../shared (real records, golden fixtures) and tiny models.

Tests that need ../shared skip cleanly when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ECG_ADAPT_SHARED", ROOT.parent / "shared"))
SAMPLES = SHARED / "ecg-samples"
GOLDEN = SHARED / "golden"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available (../shared is absent)")
    return path


@pytest.fixture
def samples() -> Path:
    return need(SAMPLES)


@pytest.fixture
def golden() -> Path:
    return need(GOLDEN)


TINY_HUBERT = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    classifier_proj_size=16,
    conv_dim=[16, 16, 16, 16, 16],
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)


@pytest.fixture
def tiny_backbone_dir(tmp_path: Path) -> Path:
    """A tiny random HuBERT-ECG saved like a converted release (config, safetensors, processor)."""
    from ecg_adapt.models.hubert_ecg import HubertECGConfig, HubertECGModel, default_processor_steps
    from ecg_adapt.processing import ECGProcessor

    torch.manual_seed(0)
    model = HubertECGModel(HubertECGConfig(**TINY_HUBERT))
    path = tmp_path / "tiny_hubert"
    model.save_pretrained(path)
    ECGProcessor(model.config.signal_contract, default_processor_steps()).save_pretrained(path)
    return path
