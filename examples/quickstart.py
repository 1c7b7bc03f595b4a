"""Quickstart: HuBERT-ECG + LoRA (r=8) on PTB-XL superdiagnostic, from Python.

    python examples/quickstart.py                                  # embedded defaults (synthetic data, tiny backbone)
    python examples/quickstart.py --backbone /models/hubert-ecg-small --ptbxl /data/ptb-xl/1.0.3

The first half shows the building blocks; the second trains the same thing from the recipe YAML with
accelerate (the same loop as `ecg-adapt train` and `accelerate launch -m ecg_adapt.train`).
"""

from __future__ import annotations

import argparse

import torch

from ecg_adapt import PTBXL, ECGClassifier, Recipe, adapt, load_adapted, load_backbone, load_processor, train
from ecg_adapt.demo import prepare as prepare_demo

RECIPE = "recipes/hubert_ecg_lora_ptbxl_superdiagnostic.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", help="HuBERT-ECG folder or hub id (default: the recipe's embedded tiny backbone)")
    ap.add_argument("--ptbxl", help="PTB-XL folder (default: synthesise one in the PTB-XL layout)")
    ap.add_argument("--output", default="runs/quickstart")
    ap.add_argument("--epochs", type=float, default=8)
    ap.add_argument("--records", type=int, default=1000, help="synthetic records when --ptbxl is not given")
    args = ap.parse_args()

    overrides = [f"output.output_dir={args.output}", "output.overwrite_output_dir=true",
                 f"training.num_train_epochs={args.epochs}"]
    if args.backbone:
        overrides.append(f"model.model_name_or_path={args.backbone}")
    if args.ptbxl:
        overrides.append(f"data.path={args.ptbxl}")

    # 1. Train from the recipe (accelerate decides devices; run the same file with `accelerate launch`).
    if not args.ptbxl:
        overrides.append(f"data.source_options.synthetic_records={args.records}")
    # The demo fills in what the recipe leaves null (the random-weight backbone, synthetic PTB-XL) and says so.
    recipe, run_info = prepare_demo(Recipe.from_yaml(RECIPE, overrides))
    metrics = train(recipe, run_info=run_info)
    print(f"test macro AUROC: {metrics['test']['macro_auroc']:.4f}  (adapter saved in {args.output}/model)")

    # 2. The same pieces by hand: backbone -> head -> LoRA, and one real forward pass.
    backbone_id = recipe.model.model_name_or_path
    backbone = load_backbone(backbone_id)                        # no trust_remote_code needed
    processor = load_processor(backbone_id)                      # the backbone's signal contract
    ptbxl = PTBXL(recipe.data.path, sampling_rate=100)
    task = ptbxl.task("superdiagnostic")
    model = ECGClassifier.from_backbone(backbone, task.labels)
    model = adapt(model, "lora", r=8)                       # or "full" / "linear_probe"
    print(f"by hand: {task.name} {task.labels}; {model.adaptation_config.method}")

    # 3. Reload the trained adapter and predict one test record (windows averaged per record).
    trained = load_adapted(f"{args.output}/model")
    record = ptbxl.read(ptbxl.split_ids(task, "test")[0])
    batch = processor(record)
    with torch.no_grad():
        probs = torch.sigmoid(trained(input_values=batch["input_values"], attention_mask=batch["attention_mask"]).logits)
    print(f"record {record.record_id}: " + ", ".join(f"{n} {p:.2f}" for n, p in zip(task.labels, probs.mean(0).tolist())))


if __name__ == "__main__":
    main()
