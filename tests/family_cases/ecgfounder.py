"""ECGFounder golden fixtures (``golden/ecgfounder/README.md``): 12-lead and 1-lead checkpoints, small random,
with the original 150-label head (logits)."""

from . import GoldenCase, LoraCase

RELEASED = ["ecgfounder-12lead", "ecgfounder-1lead"]
CASES = [
    GoldenCase(f"ecgfounder-{name}", "ecgfounder", f"ecgfounder/{sub}{ckpt}", f"ecgfounder/{sub}model_input.npy",
               "ecgfounder/meta.json", hidden=f"ecgfounder/{sub}hidden.npy", features=f"ecgfounder/{sub}features.npy",
               logits=f"ecgfounder/{sub}logits.npy", hidden_channels_first=True)
    for name, sub, ckpt in (("12lead", "", "12_lead_ECGFounder_small_random.pth"),
                            ("1lead", "1lead/", "1_lead_ECGFounder_small_random.pth"))
]

# Default LoRA on each tiny config: how many modules it wraps, and the merge tolerance (atol, rtol).
LORA = {"ecgfounder": LoraCase(8, 1e-4, 1e-4)}  # conv1.conv, conv3.conv in 4 blocks

# peft methods the tiny config must refuse (tests/test_adaptation_peft.py), with words the reason must contain.
PEFT_REFUSED = {("ecgfounder", "lora+pissa"): ("nn.Linear only", "conv1.conv", "nn.Conv1d")}
