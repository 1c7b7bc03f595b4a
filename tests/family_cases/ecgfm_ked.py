"""ECGFM-KED golden fixtures (``golden/ecgfm_ked/README.md``): one small random checkpoint in the release's container,
run on the original contract's input (100 Hz, MIMIC order) and on the ICLR 2026 benchmark's (500 Hz, standard order).
The network takes any length, so one converted folder serves both inputs; the contracts differ only in the
processor (tests/test_ecgfm_ked.py checks it for both)."""

from . import GoldenCase, LoraCase

RELEASED = ["ecgfm-ked", "ecgfm-ked-benchmark"]
_CKPT = "ecgfm_ked/best_valid_all_increase_with_augment_epoch_3_small_random.pt"
CASES = [
    GoldenCase(f"ecgfm_ked-{name}", "ecgfm_ked", _CKPT, f"ecgfm_ked/model_input{suffix}.npy", "ecgfm_ked/meta.json",
               hidden=f"ecgfm_ked/hidden{suffix}.npy", features=f"ecgfm_ked/features{suffix}.npy",
               hidden_channels_first=True)
    for name, suffix in (("original", ""), ("benchmark", "_benchmark"))
]

# Default LoRA on the tiny config: convs.0/1/2.conv of 5 blocks.
LORA = {"ecgfm_ked": LoraCase(15, 1e-4, 1e-4)}

# peft methods the tiny config must refuse (tests/test_adaptation_peft.py), with words the reason must contain.
PEFT_REFUSED = {
    ("ecgfm_ked", "lora+pissa"): ("nn.Linear only", "nn.Conv1d"),
    ("ecgfm_ked", "ia3"): ("no nn.Linear layer", "use lora, loha or lokr"),
    ("ecgfm_ked", "vera"): ("no nn.Linear layer",),
    ("ecgfm_ked", "oft"): ("no nn.Linear layer",),
    ("ecgfm_ked", "boft"): ("no nn.Linear layer",),
}
