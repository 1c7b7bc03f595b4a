"""Shared fixtures: paths to ../shared (real records, golden fixtures) and tiny models.

Tests that need ../shared skip cleanly when it is absent.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ECG_ADAPT_SHARED", ROOT.parent / "shared"))
SAMPLES = SHARED / "ecg-samples"
GOLDEN = SHARED / "golden"

# One intra-op thread for the whole session: tiny models run faster on one (measured 0.02 s vs 1.3 s per HuBERT-ECG
# training step with 2 threads on the shared 2-core CI machine, where the threads mostly wait for each other).
# Set here once: a module that set it at import time changed it for every test collected with it.
torch.set_num_threads(1)


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available (../shared is absent)")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random HuBERT-ECG saved like a converted release (config, safetensors, processor), by the demo's own
    writer (seed 0). Written once per session and shared: tests read it and never write into it."""
    from ecg_adapt.demo import write_embedded_backbone

    return write_embedded_backbone(tmp_path_factory.mktemp("backbone") / "tiny_hubert", dict(TINY_HUBERT))


class _SavedTinyBackbones(dict):
    """name -> folder of that tiny backbone (``tests/tiny_backbones.py``), saved on first use."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, name: str) -> Path:
        from tiny_backbones import tiny_backbone  # raises a KeyError naming the known tiny configs

        tiny_backbone(name).save_pretrained(self.root / name)
        self[name] = self.root / name
        return self[name]


@pytest.fixture(scope="session")
def tiny_backbone_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``dirs[name]``: the tiny backbone ``name`` (seed 0) saved by ``save_pretrained`` (config and safetensors, no
    processor: loaders fall back to the family's default preprocessing), written once per session on first use and
    shared: tests read these folders and never write into them."""
    return _SavedTinyBackbones(tmp_path_factory.mktemp("tiny_backbones"))
