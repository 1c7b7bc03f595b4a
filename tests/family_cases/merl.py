"""MERL golden fixtures (``golden/merl/README.md``): ResNet and ViT encoder files, small random; one input."""

from . import GoldenCase

RELEASED = ["merl-resnet18", "merl-vit-tiny"]
CASES = [
    GoldenCase(f"merl-{sub}", "merl", f"merl/{sub}/{name}", "merl/resnet1d/model_input.npy", f"merl/{sub}/meta.json",
               hidden=f"merl/{sub}/hidden.npy", features=f"merl/{sub}/features.npy",
               hidden_channels_first=sub == "resnet1d")
    for sub, name in (("resnet1d", "resnet18_small_random_encoder.pth"), ("vit", "vit_small_random_encoder.pth"))
]
