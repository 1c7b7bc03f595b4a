"""Batch prediction on CPU: records/s, and the share of time spent reading, processing and in the model.

    python benchmarks/inference.py [--family hubert_ecg --variant hubert-ecg-small] [--records DIR] [--batch-size 32]

The backbone is built at a released size with random weights (the time does not depend on the values), a
5-label head is put on it with a linear probe, and the adapted model is saved and reloaded as a user would
(``Predictor.from_pretrained``). Records are the real CinC 2021 files in ``../shared/ecg-samples/cinc2021``
(12 leads, 500 Hz, 10 s) repeated to ``--n`` records, or any folder of WFDB records.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ecg_adapt import ECGClassifier, adapt, save_adapted
from ecg_adapt.inference import Predictor, find_inputs, read_input
from ecg_adapt.models import FAMILIES, released_variants
from ecg_adapt.processing import ECGProcessor
from ecg_adapt.tasks import aggregate_windows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="hubert_ecg")
    ap.add_argument("--variant", default="hubert-ecg-small")
    ap.add_argument("--records", default=str(Path(__file__).resolve().parents[2] / "shared" / "ecg-samples" / "cinc2021"))
    ap.add_argument("--n", type=int, default=120, help="records to predict (the folder is cycled)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    variant = next(v for v in released_variants() if v["family"] == args.family and v["name"] == args.variant)
    fam = FAMILIES[args.family]
    torch.manual_seed(0)
    backbone = fam.model_class(fam.config_class(**variant["config"]))
    with tempfile.TemporaryDirectory() as tmp:
        backbone.save_pretrained(Path(tmp) / "backbone")
        backbone = fam.model_class.from_pretrained(str(Path(tmp) / "backbone"))
        backbone.name_or_path = str(Path(tmp) / "backbone")
        processor = ECGProcessor(backbone.config.signal_contract, fam.default_processor_steps())
        clf = ECGClassifier.from_backbone(backbone, ["NORM", "MI", "STTC", "CD", "HYP"])
        save_adapted(adapt(clf, "linear_probe"), Path(tmp) / "model", processor)
        predictor = Predictor.from_pretrained(Path(tmp) / "model", missing_leads="zero")

        paths = find_inputs([args.records])
        paths = [paths[i % len(paths)] for i in range(args.n)]
        t_read = t_proc = t_model = 0.0
        n_windows = 0
        t0 = time.perf_counter()
        for start in range(0, len(paths), args.batch_size):
            chunk = paths[start : start + args.batch_size]
            t = time.perf_counter()
            records = [read_input(p) for p in chunk]
            t_read += time.perf_counter() - t
            t = time.perf_counter()
            batch = ECGProcessor.collate(predictor.processor.process_many(records))
            t_proc += time.perf_counter() - t
            t = time.perf_counter()
            with torch.inference_mode():
                probs = torch.cat([
                    torch.sigmoid(predictor.model(input_values=batch["input_values"][i : i + args.batch_size],
                                                  attention_mask=batch["attention_mask"][i : i + args.batch_size]).logits)
                    for i in range(0, len(batch["input_values"]), args.batch_size)
                ])
            aggregate_windows(probs.numpy(), batch["window_to_record"].numpy(), n_records=len(chunk))
            t_model += time.perf_counter() - t
            n_windows += len(batch["input_values"])
        total = time.perf_counter() - t0
        # the same through the public API, end to end
        records = [read_input(p) for p in paths]
        t = time.perf_counter()
        predictor.predict(records, batch_size=args.batch_size)
        api = time.perf_counter() - t

    print(f"\n{args.family}/{args.variant} ({sum(p.numel() for p in backbone.parameters()) / 1e6:.1f}M params, random "
          f"weights), {len(paths)} records ({n_windows} windows), batch {args.batch_size}, torch threads {args.threads}\n")
    print(f"| stage | seconds | share | records/s |")
    print(f"|---|---|---|---|")
    for name, sec in (("reading (wfdb)", t_read), ("processing", t_proc), ("model (+aggregation)", t_model)):
        print(f"| {name} | {sec:.2f} | {100 * sec / total:.0f}% | {len(paths) / sec:.0f} |")
    print(f"| **total** | {total:.2f} | 100% | **{len(paths) / total:.1f}** |")
    print(f"| `Predictor.predict` (public API, reading excluded) | {api:.2f} | | {len(paths) / api:.1f} |")


if __name__ == "__main__":
    main()
