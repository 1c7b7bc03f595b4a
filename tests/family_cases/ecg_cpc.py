"""ECG-CPC golden fixtures (``golden/ecg_cpc/README.md``): a small random Lightning checkpoint made by the original
pre-training recipe, whose pickle names clinical_ts/omegaconf classes (read as inert objects)."""

from . import GoldenCase, LoraCase

RELEASED = ["ecg-cpc"]
CASES = [
    GoldenCase("ecg_cpc", "ecg_cpc", "ecg_cpc/last_small_random.ckpt", "ecg_cpc/model_input.npy", "ecg_cpc/meta.json",
               hidden="ecg_cpc/hidden.npy", features="ecg_cpc/features.npy"),
]

# Default LoRA on each tiny config: how many modules it wraps, and the merge tolerance (atol, rtol).
LORA = {"ecg_cpc": LoraCase(2, 1e-5, 1e-4)}  # output_linear in 2 S4 blocks
