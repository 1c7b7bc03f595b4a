"""ECG-JEPA golden fixtures (``golden/ecg_jepa/README.md``): a small random checkpoint whose head count (4) the
converter cannot read from the tensors."""

from . import GoldenCase, LoraCase

RELEASED = ["ecg-jepa-multiblock", "ecg-jepa-random"]
CASES = [
    GoldenCase("ecg_jepa", "ecg_jepa", "ecg_jepa/ecg_jepa_small_random_epoch100.pth", "ecg_jepa/model_input.npy",
               "ecg_jepa/meta.json", hidden="ecg_jepa/hidden.npy", features="ecg_jepa/features.npy",
               convert_kwargs={"num_attention_heads": 4}),
]

# Default LoRA on each tiny config: how many modules it wraps, and the merge tolerance (atol, rtol).
LORA = {"ecg_jepa": LoraCase(8, 1e-5, 1e-4)}  # qkv, proj, fc1, fc2 in 2 blocks
