"""ECG-FM golden fixtures (``golden/ecg_fm/README.md``): fairseq-signals checkpoints, small random."""

from . import GoldenCase, LoraCase

RELEASED = ["ecg-fm-pretrained", "ecg-fm-finetuned-mimic-iv"]
_COMMON = dict(model_input="ecg_fm/model_input.npy", meta="ecg_fm/meta.json", hidden="ecg_fm/hidden.npy",
               features="ecg_fm/features.npy", tolerance_key="suggested_tolerance")
CASES = [
    GoldenCase("ecg_fm-weight-norm-old-keys", "ecg_fm", "ecg_fm/ecg_fm_small_pretrained.pt", **_COMMON),
    GoldenCase("ecg_fm-parametrizations", "ecg_fm", "ecg_fm/ecg_fm_small_pretrained_parametrizations.pt", **_COMMON),
    GoldenCase("ecg_fm-finetuned", "ecg_fm", "ecg_fm/ecg_fm_small_finetuned.pt", **_COMMON),
]

# Default LoRA on each tiny config: how many modules it wraps, and the merge tolerance (atol, rtol).
LORA = {"ecg_fm": LoraCase(12, 1e-5, 1e-4)}  # q/k/v/out_proj, fc1, fc2 in 2 layers
