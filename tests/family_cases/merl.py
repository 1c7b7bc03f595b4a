"""MERL golden fixtures (``golden/merl/README.md``): ResNet and ViT encoder files, small random; one input."""

from . import GoldenCase, LoraCase

RELEASED = ["merl-resnet18", "merl-vit-tiny"]
CASES = [
    GoldenCase(f"merl-{sub}", "merl", f"merl/{sub}/{name}", "merl/resnet1d/model_input.npy", f"merl/{sub}/meta.json",
               hidden=f"merl/{sub}/hidden.npy", features=f"merl/{sub}/features.npy",
               hidden_channels_first=sub == "resnet1d")
    for sub, name in (("resnet1d", "resnet18_small_random_encoder.pth"), ("vit", "vit_small_random_encoder.pth"))
]

# Default LoRA on each tiny config: how many modules it wraps, and the merge tolerance (atol, rtol).
LORA = {"merl_resnet": LoraCase(9, 1e-4, 1e-4), "merl_vit": LoraCase(8, 1e-4, 1e-4)}  # stem + 2 convs x 4 blocks; 4 x 2 blocks

# peft methods a tiny config must refuse (tests/test_adaptation_peft.py), with words the reason must contain.
PEFT_REFUSED = {
    ("merl_resnet", "lora+pissa"): ("nn.Linear only", "nn.Conv1d"),
    ("merl_resnet", "ia3"): ("no nn.Linear layer", "use lora, loha or lokr"),
    ("merl_resnet", "vera"): ("no nn.Linear layer",),
    ("merl_resnet", "oft"): ("no nn.Linear layer",),
    ("merl_resnet", "boft"): ("no nn.Linear layer",),
}
