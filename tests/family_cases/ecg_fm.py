"""ECG-FM golden fixtures (``golden/ecg_fm/README.md``): fairseq-signals checkpoints, small random."""

from . import GoldenCase

RELEASED = ["ecg-fm-pretrained", "ecg-fm-finetuned-mimic-iv"]
_COMMON = dict(model_input="ecg_fm/model_input.npy", meta="ecg_fm/meta.json", hidden="ecg_fm/hidden.npy",
               features="ecg_fm/features.npy", tolerance_key="suggested_tolerance")
CASES = [
    GoldenCase("ecg_fm-weight-norm-old-keys", "ecg_fm", "ecg_fm/ecg_fm_small_pretrained.pt", **_COMMON),
    GoldenCase("ecg_fm-parametrizations", "ecg_fm", "ecg_fm/ecg_fm_small_pretrained_parametrizations.pt", **_COMMON),
    GoldenCase("ecg_fm-finetuned", "ecg_fm", "ecg_fm/ecg_fm_small_finetuned.pt", **_COMMON),
]
