"""A linear probe on cached embeddings vs re-encoding every epoch, measured side by side in one run.

    python benchmarks/probe.py                               # HuBERT-ECG base size (768 x 12), 200 records, 10 epochs
    python benchmarks/probe.py --size small --records 400    # a 256 x 4 backbone, more records
    python benchmarks/probe.py --size base --records 60 --epochs 10 --workdir /tmp/probe

A synthetic PTB-XL in the real layout (``ecg_adapt.data.synthetic.make_synthetic_ptbxl``, 10 s records, 100 Hz,
two 5 s windows each) and a random-weight HuBERT-ECG-shaped backbone (``ecg_adapt.demo.write_embedded_backbone``;
``base``: 768 hidden, 12 layers, 3,072 intermediate, 12 heads, the released base size; ``small``: 256 x 4) are
written once. The window cache is built before anything is timed, so both rows measure what differs: the
probe's training. Then the same recipe (``adaptation.method: linear_probe``, superdiagnostic, ``--epochs``
epochs, validation every epoch with best-model selection, seed 0, no checkpoints, no bootstrap) runs twice:

* (a) ``training.embedding_cache: false``: the frozen backbone runs over every window in every epoch (train and
  validation) and again for the final evaluation;
* (b) ``training.embedding_cache: true``: every window is encoded once into the embedding cache (built inside
  the timed run: a fresh cache folder), then only the head trains.

Reported: wall time of each ``train()`` call, the ratio (a)/(b), the one-off encoding time inside (b), and the
test macro AUROC of both with their difference (the issue's target: within 1e-3, and >= 20x faster over 10 epochs).

What bounds the ratio: when the backbone dominates, (a) runs it over ``E x (train + validation) + validation +
test`` windows and (b) over ``train + validation + test`` once, so with PTB-XL's 8:1:1 folds and 10 epochs (a)/(b)
cannot exceed about 9.2x with the encoding counted; the script prints this bound and the ratio without the
one-off encoding (what every further probe on the same cache costs: other heads, seeds, learning rates).
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

SIZES = {
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
}


def _recipe(workdir: Path, backbone: Path, data: Path, epochs: int, cached: bool, batch: int) -> dict:
    return {
        "model": {"model_name_or_path": str(backbone)},
        "adaptation": {"method": "linear_probe"},
        "data": {"path": str(data), "cache_dir": str(workdir / ("cache_b" if cached else "cache_a"))},
        "task": {"name": "superdiagnostic"},
        "training": {"per_device_train_batch_size": batch, "per_device_eval_batch_size": 64,
                     "num_train_epochs": epochs, "learning_rate": 1e-2, "seed": 0, "save_strategy": "no",
                     "bootstrap_resamples": 0, "logging_steps": 50, "embedding_cache": cached},
        "output": {"output_dir": str(workdir / ("run_b" if cached else "run_a")), "overwrite_output_dir": True},
    }


def _prebuild_window_cache(recipe: dict) -> None:
    """Build the window cache the run will open (same records, same processor) outside the timed part."""
    from ecg_adapt.data.cache import build_cache
    from ecg_adapt.models.registry import load_backbone, load_processor
    from ecg_adapt.training import Recipe
    from ecg_adapt.training.trainer import _configure_processor, _select_records

    r = Recipe.from_dict(recipe)
    backbone = load_backbone(r.model.model_name_or_path)
    processor = _configure_processor(load_processor(r.model.model_name_or_path, config=backbone.config), r)
    source, _, split_ids, _ = _select_records(r)
    ids = [i for s in ("train", "validation", "test") for i in split_ids[s]]
    build_cache(source, processor, ids, cache_dir=r.data.cache_dir, progress=False, quality=r.data.quality)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="base")
    p.add_argument("--records", type=int, default=200, help="records of the synthetic PTB-XL (folds 1-8 train, "
                   "9 validation, 10 test)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workdir", default=None)
    args = p.parse_args()

    import torch

    from ecg_adapt.data.synthetic import make_synthetic_ptbxl
    from ecg_adapt.demo import write_embedded_backbone
    from ecg_adapt.training import Recipe, train

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="probe_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    data = make_synthetic_ptbxl(workdir / "data", n_records=args.records, progress=False)
    backbone = write_embedded_backbone(workdir / f"backbone_{args.size}", dict(SIZES[args.size]))
    rows = {}
    for cached in (False, True):
        recipe = _recipe(workdir, backbone, data, args.epochs, cached, args.batch)
        _prebuild_window_cache(recipe)
        t0 = time.perf_counter()
        metrics = train(Recipe.from_dict(recipe))
        wall = time.perf_counter() - t0
        encode = None
        if cached:
            (emb,) = [q for q in (workdir / "cache_b").iterdir() if q.name.startswith("embeddings-")]
            encode = json.loads((emb / "report.json").read_text())["encode_seconds"]
        log = (workdir / ("run_b" if cached else "run_a") / "train.log").read_text()  # "train: 40 records, 80 windows"
        windows = {s: int(re.search(rf"ecg_adapt\.train: {s}: \d+ records, (\d+) windows", log).group(1))
                   for s in ("train", "validation", "test")}
        rows[cached] = dict(wall=wall, auroc=metrics["test"]["macro_auroc"], steps=metrics["global_step"],
                            records=metrics["data"]["records"], encode=encode, windows=windows)
    a, b = rows[False], rows[True]
    print(f"\nlinear probe, HuBERT-ECG-shaped backbone '{args.size}' ({SIZES[args.size]}), {args.epochs} epochs, "
          f"records {a['records']}, {a['steps']} optimiser steps, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    print("| path | wall s | ratio (a)/(b) | test macro AUROC |")
    print("|---|---:|---:|---:|")
    print(f"| (a) re-encode every epoch (`embedding_cache: false`) | {a['wall']:.1f} | 1.0x | {a['auroc']:.6f} |")
    print(f"| (b) cached embeddings (`embedding_cache: true`), incl. encoding {b['encode']:.1f} s | {b['wall']:.1f} | "
          f"{a['wall'] / b['wall']:.1f}x | {b['auroc']:.6f} |")
    w = a["windows"]
    bound = (args.epochs * (w["train"] + w["validation"]) + w["validation"] + w["test"]) / sum(w.values())
    print(f"| (b) training only, after the one-off encoding | {b['wall'] - b['encode']:.1f} | "
          f"{a['wall'] / (b['wall'] - b['encode']):.1f}x | |")
    print(f"\nwindows {w}; backbone passes (a)/(b) = {bound:.1f}: the most (b) incl. encoding can gain when the "
          f"backbone dominates")
    print(f"AUROC difference (b) - (a): {b['auroc'] - a['auroc']:+.2e} (target |diff| <= 1e-3); "
          f"speed-up {a['wall'] / b['wall']:.1f}x (target >= 20x)")


if __name__ == "__main__":
    main()
