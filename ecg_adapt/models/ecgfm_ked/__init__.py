"""ECGFM-KED (Cell Reports Medicine 2024) ECG encoder: configuration, model, converter, processor defaults and family
record.

One set of released weights, two input contracts (``ECGFMKEDConfig.input_contract``): ``"original"`` (KED
pre-training: 100 Hz, 10 s, MIMIC lead order) and ``"benchmark"`` (the ICLR 2026 ECG FM benchmark: 500 Hz, 10 s,
standard order); the released variants ``ecgfm-ked`` and ``ecgfm-ked-benchmark``.

The family record and its torch-free facts (``FAMILY``, contracts, released variants) are imported with the package;
the configuration, model, converter and processor classes on first access (importing torch and transformers then,
and registering the family with the transformers Auto classes).
"""

from ...utils import lazy_exports
from .family import (
    FAMILY,
    INPUT_CONTRACTS,
    KED_BENCHMARK_CONTRACT,
    KED_ORIGINAL_CONTRACT,
    LORA_TARGET_MODULES,
    MIMIC_LEADS,
    RELEASE,
    RELEASE_FILE,
    RELEASED_ARCHITECTURE,
    RELEASED_VARIANTS,
    contract_for,
)

# Submodule -> the names it defines, imported on first access; the first access also registers the family with
# the transformers Auto classes (resolving FAMILY.config_class does that).
_EXPORTS: dict[str, list[str]] = {
    "configuration": ["ECGFMKEDConfig", "block_sizes", "default_processor_steps"],
    "convert": ["canonicalise_state_dict", "convert_ecgfm_ked", "infer_config_kwargs", "load_original", "read_checkpoint"],
    "modeling": ["ECGFMKEDBlock", "ECGFMKEDConvLayer", "ECGFMKEDModel", "ECGFMKEDPreTrainedModel"],
}
__getattr__, __dir__, _ = lazy_exports(__name__, _EXPORTS, on_load=lambda name: FAMILY.config_class)

__all__ = [
    "ECGFMKEDBlock",
    "ECGFMKEDConfig",
    "ECGFMKEDConvLayer",
    "ECGFMKEDModel",
    "ECGFMKEDPreTrainedModel",
    "FAMILY",
    "INPUT_CONTRACTS",
    "KED_BENCHMARK_CONTRACT",
    "KED_ORIGINAL_CONTRACT",
    "LORA_TARGET_MODULES",
    "MIMIC_LEADS",
    "RELEASE",
    "RELEASE_FILE",
    "RELEASED_ARCHITECTURE",
    "RELEASED_VARIANTS",
    "block_sizes",
    "canonicalise_state_dict",
    "contract_for",
    "convert_ecgfm_ked",
    "default_processor_steps",
    "infer_config_kwargs",
    "load_original",
    "read_checkpoint",
]
