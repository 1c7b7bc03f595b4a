"""ST-MEM golden fixtures (``golden/st_mem/README.md``): encoder-only and full MAE checkpoints, tiny random."""

from . import GoldenCase, LoraCase

RELEASED = ["st-mem-vit-b75-encoder", "st-mem-vit-b75-full", "st-mem-vit-s75"]
CASES = [
    GoldenCase(f"st_mem-{kind}", "st_mem", f"st_mem/{name}", "st_mem/model_input.npy", "st_mem/meta.json",
               hidden="st_mem/hidden.npy", features="st_mem/features.npy")
    for kind, name in (("encoder", "encoder_tiny_random.pth"), ("mae-full", "mae_full_tiny_random.pth"))
]

# Default LoRA on each tiny config: how many modules it wraps, and the merge tolerance (atol, rtol).
LORA = {"st_mem": LoraCase(8, 1e-5, 1e-5)}  # to_qkv, to_out.0, net.0, net.3 in 2 blocks
