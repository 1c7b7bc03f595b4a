"""Transfer check: pretrain a small backbone on one synthetic task, adapt it to another with every method.

    python benchmarks/transfer.py --out runs/transfer            # ~1,000 synthetic PTB-XL records
    python benchmarks/transfer.py --method lora --method full --epochs 4

1. A synthetic dataset in the exact PTB-XL layout is generated (``ecg_adapt.data.synthetic``): every record has a
   rhythm (SR, AFIB, SBRAD, STACH) and a morphology class (NORM, MI, STTC, CD, HYP), drawn independently.
2. A small HuBERT-ECG-shaped backbone (random init) is fully fine-tuned on the **rhythm** task; its encoder is
   saved as a backbone folder (config, weights, processor), like a converted release.
3. That backbone is adapted to the **superdiagnostic morphology** task by every method with the same budget
   (epochs, batch, data) through the real training entry point (``ecg_adapt.training.train``); the test macro
   AUROC of each is reported next to linear probing and full fine-tuning (and full fine-tuning from scratch).

Learning rates: head 1e-2 for every method (a fresh head needs a higher rate than the adapted weights);
backbone/adapter rate 1e-3 for full and partial fine-tuning, 3e-3 for the parameter-efficient methods, 1e-2 for
BitFit, norm tuning, IA³ and prompts (few, scale-like parameters). All runs: same seed and data.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

PRETRAIN_BACKBONE = {
    "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 256,
    "classifier_proj_size": 32, "conv_dim": [32, 32, 32, 32, 32], "num_conv_pos_embeddings": 32,
    "num_conv_pos_embedding_groups": 4,
}

# label -> (adaptation section, backbone learning rate)
METHODS: dict[str, tuple[dict, float]] = {
    "linear_probe": ({"method": "linear_probe"}, 1e-3),
    "full": ({"method": "full"}, 1e-3),
    "partial (last 2)": ({"method": "partial", "num_trainable_blocks": 2}, 1e-3),
    "bitfit": ({"method": "bitfit"}, 1e-2),
    "norm_tuning": ({"method": "norm_tuning"}, 1e-2),
    "lora r8": ({"method": "lora", "r": 8, "dropout": 0.05}, 3e-3),
    "dora r8": ({"method": "lora", "r": 8, "dropout": 0.05, "use_dora": True}, 3e-3),
    "pissa r8": ({"method": "lora", "r": 8, "dropout": 0.0, "init_lora_weights": "pissa"}, 3e-3),
    "ia3": ({"method": "ia3"}, 1e-2),
    "loha r8": ({"method": "loha", "r": 8}, 3e-3),
    "lokr r8": ({"method": "lokr", "r": 8}, 3e-3),
    "vera r32": ({"method": "vera", "r": 32}, 1e-2),
    "oft": ({"method": "oft", "r": 0, "oft_block_size": 16}, 3e-3),
    "boft": ({"method": "boft"}, 3e-3),
    "houlsby_adapter": ({"method": "houlsby_adapter", "adapter_reduction_factor": 4}, 3e-3),
    "pfeiffer_adapter": ({"method": "pfeiffer_adapter", "adapter_reduction_factor": 4}, 3e-3),
    "prompt shallow": ({"method": "prompt_tuning", "num_prompt_tokens": 8}, 1e-2),
    "prompt deep": ({"method": "prompt_tuning", "num_prompt_tokens": 8, "prompt_depth": "deep"}, 1e-2),
}


def _recipe(out: Path, data: Path, task: str, adaptation: dict, lr: float, epochs: int, backbone: str | None,
            batch: int) -> dict:
    return {
        "model": {"model_name_or_path": backbone},
        "adaptation": adaptation,
        "data": {"path": str(data), "cache_dir": str(out.parent / "cache")},
        "task": {"name": task},
        "training": {"learning_rate": lr, "head_learning_rate": 1e-2, "num_train_epochs": epochs,
                     "per_device_train_batch_size": batch, "per_device_eval_batch_size": 128, "seed": 0,
                     "save_strategy": "no", "logging_steps": 50},
        "output": {"output_dir": str(out), "overwrite_output_dir": True},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/transfer"))
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--pretrain-epochs", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=8, help="budget of every adaptation run")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--method", action="append", choices=list(METHODS), help="only these (repeatable)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from ecg_adapt import ECGClassifier
    from ecg_adapt.data.synthetic import make_synthetic_ptbxl
    from ecg_adapt.demo import write_embedded_backbone
    from ecg_adapt.models.registry import load_processor
    from ecg_adapt.training import Recipe, train

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = out / "synthetic_ptbxl"
    if not (data / "ptbxl_database.csv").exists():
        make_synthetic_ptbxl(data, n_records=args.records, seed=0)

    backbone_dir = out / "rhythm_backbone"
    if not (backbone_dir / "config.json").exists():
        t = time.time()
        init = write_embedded_backbone(out / "random_init_backbone", dict(PRETRAIN_BACKBONE))
        pre = train(Recipe.from_dict(_recipe(out / "pretrain_rhythm", data, "rhythm", {"method": "full"}, 1e-3,
                                             args.pretrain_epochs, str(init), args.batch)))
        print(f"pretraining on rhythm: test macro AUROC {pre['test']['macro_auroc']:.3f} ({time.time() - t:.0f} s)")
        clf = ECGClassifier.from_pretrained(str(out / "pretrain_rhythm" / "model"))
        clf.backbone.save_pretrained(backbone_dir)
        load_processor(str(out / "pretrain_rhythm" / "model")).save_pretrained(backbone_dir)

    results = {}
    labels = args.method or list(METHODS)
    runs = [(label, *METHODS[label], str(backbone_dir.resolve())) for label in labels]
    if not args.method:
        runs.append(("full, from scratch", {"method": "full"}, 1e-3, None))
    for label, adaptation, lr, backbone in runs:
        t = time.time()
        safe = label.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
        try:
            m = train(Recipe.from_dict(_recipe(out / "adapt" / safe, data, "superdiagnostic", adaptation, lr,
                                               args.epochs, backbone, args.batch)))
            results[label] = {"test_macro_auroc": m["test"]["macro_auroc"], "trainable": m.get("trainable_parameters"),
                              "seconds": time.time() - t}
        except Exception as e:  # report and go on: one method failing must not hide the others
            results[label] = {"error": f"{type(e).__name__}: {e}"[:200]}
        print(f"  {label}: {results[label]}", flush=True)

    print(f"\nrhythm-pretrained backbone -> superdiagnostic, {args.epochs} epochs, {args.records} records\n")
    print("| method | test macro AUROC | trainable params | time (s) |")
    print("|---|---|---|---|")
    for label, r in results.items():
        if "error" in r:
            print(f"| {label} | n/a: {r['error']} | | |")
        else:
            tp = r["trainable"]
            tp = f"{tp['trainable']:,}" if isinstance(tp, dict) else (f"{tp:,}" if tp else "-")
            print(f"| {label} | {r['test_macro_auroc']:.3f} | {tp} | {r['seconds']:.0f} |")
    (out / "transfer.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
