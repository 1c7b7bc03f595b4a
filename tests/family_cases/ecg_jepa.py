"""ECG-JEPA golden fixtures (``golden/ecg_jepa/README.md``): a small random checkpoint whose head count (4) the
converter cannot read from the tensors."""

from . import GoldenCase

RELEASED = ["ecg-jepa-multiblock", "ecg-jepa-random"]
CASES = [
    GoldenCase("ecg_jepa", "ecg_jepa", "ecg_jepa/ecg_jepa_small_random_epoch100.pth", "ecg_jepa/model_input.npy",
               "ecg_jepa/meta.json", hidden="ecg_jepa/hidden.npy", features="ecg_jepa/features.npy",
               convert_kwargs={"num_attention_heads": 4}),
]
