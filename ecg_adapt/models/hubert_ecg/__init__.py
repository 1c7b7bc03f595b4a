"""HuBERT-ECG (Coppola et al. 2024): configuration, model, converter and processor defaults."""

from .configuration import HUBERT_ECG_CONTRACT, RELEASED_SIZES, RELEASED_VARIANTS, HubertECGConfig, default_processor_steps
from .convert import convert_hubert_ecg, load_original
from .modeling import HubertECGModel

__all__ = [
    "HUBERT_ECG_CONTRACT",
    "RELEASED_SIZES",
    "RELEASED_VARIANTS",
    "HubertECGConfig",
    "HubertECGModel",
    "convert_hubert_ecg",
    "default_processor_steps",
    "load_original",
]
