"""Predict with a saved adapter on every WFDB record in a folder; print a CSV.

    python examples/predict_folder.py runs/hubert_ecg_lora_ptbxl_superdiagnostic/model ../shared/ecg-samples/cinc2021
    python examples/predict_folder.py MODEL_DIR /data/holter --missing-leads mask     # fewer leads than the model

Records longer than the model's window are cut into windows and the window probabilities averaged;
unreadable records are listed on stderr, not fatal.
"""

from __future__ import annotations

import argparse
import sys

from ecg_adapt import Predictor
from ecg_adapt.inference import find_wfdb_records, read_records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="folder written by training (<output_dir>/model)")
    ap.add_argument("folder", help="folder of WFDB records (.hea + signal files)")
    ap.add_argument("--missing-leads", choices=["error", "zero", "mask"], default="error")
    args = ap.parse_args()

    predictor = Predictor.from_pretrained(args.model, missing_leads=args.missing_leads)
    records, errors = read_records(find_wfdb_records([args.folder]))
    for e in errors:
        print(f"skipped: {e}", file=sys.stderr)
    print("record_id,n_windows,predicted," + ",".join(predictor.labels))
    for p in predictor.predict(records):
        probs = ",".join(f"{p.probabilities[n]:.4f}" for n in predictor.labels)
        print(f"{p.record_id},{p.n_windows},{';'.join(p.predicted)},{probs}")


if __name__ == "__main__":
    main()
