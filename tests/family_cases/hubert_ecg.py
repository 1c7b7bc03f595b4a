"""HuBERT-ECG golden fixtures (``golden/hubert_ecg/README.md``): the released HF folder format, small random."""

from . import GoldenCase, LoraCase

RELEASED = ["hubert-ecg-small", "hubert-ecg-base", "hubert-ecg-large"]
CASES = [
    GoldenCase("hubert_ecg", "hubert_ecg", "hubert_ecg/checkpoint", "hubert_ecg/model_input.npy", "hubert_ecg/meta.json",
               hidden="hubert_ecg/hidden.npy", features="hubert_ecg/features.npy"),
]

# Default LoRA on each tiny config: how many modules it wraps, and the merge tolerance (atol, rtol).
LORA = {"hubert_ecg": LoraCase(12, 1e-5, 1e-4), "hubert_ecg_stable": LoraCase(12, 1e-5, 1e-4)}
