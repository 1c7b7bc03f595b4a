"""Data loading: the processed Arrow cache vs reading every record with wfdb, side by side in one run.

    python benchmarks/data_loading.py [--records 1000] [--workdir DIR]

Writes 1,000 PTB-XL-shaped records at 100 Hz (the synthetic generator, real PTB-XL layout and WFDB
format 16), builds the HuBERT-ECG cache, then measures records per second for

* ``wfdb.rdsamp`` per item (what a plain ``Dataset.__getitem__`` does: no preprocessing at all);
* ``wfdb.rdsamp`` + the HuBERT-ECG processor per item (what an uncached pipeline really costs);
* the cache, one item at a time (``WindowDataset[i]``);
* the cache through a ``DataLoader`` with batch 64 (one Arrow slice per batch: the training path).

Ratios are to ``wfdb.rdsamp`` per item. Target: cached loader >= 50x.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import wfdb

from ecg_adapt.data import PTBXL, build_cache
from ecg_adapt.data.cache import WindowDataset, make_loader
from ecg_adapt.data.synthetic import make_synthetic_ptbxl
from ecg_adapt.models.hubert_ecg import HUBERT_ECG_CONTRACT, default_processor_steps
from ecg_adapt.processing import ECGProcessor


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--workdir", default=None, help="where to write data and cache (default: a temp dir, removed)")
    ap.add_argument("--repeats", type=int, default=3, help="passes over the cache (best is reported)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ecg_adapt_bench_"))
    try:
        root = make_synthetic_ptbxl(work / "ptbxl", n_records=args.records, progress=False)
        ds = PTBXL(root, sampling_rate=100)
        ids = list(ds.database.index)
        paths = [str(ds.record_path(i)) for i in ids]
        processor = ECGProcessor(HUBERT_ECG_CONTRACT, default_processor_steps("first"))

        t = time.perf_counter()
        cache = build_cache(ds, processor, ids, cache_dir=work / "cache", progress=False)
        build_s = time.perf_counter() - t

        t = time.perf_counter()
        for p in paths:
            wfdb.rdsamp(p)
        rdsamp_s = time.perf_counter() - t

        t = time.perf_counter()
        for i in ids:
            rec = ds.read(i)
            processor.process(rec.signal, rec.sampling_rate, rec.lead_names)
        proc_s = time.perf_counter() - t

        wds = WindowDataset(cache, ids, np.zeros((len(ids), 5), np.float32), HUBERT_ECG_CONTRACT.input_shape)
        item_s = batch_s = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            for i in range(len(wds)):
                wds[i]
            item_s = min(item_s, time.perf_counter() - t)
            loader = make_loader(wds, batch_size=64, shuffle=True)
            t = time.perf_counter()
            n = 0
            for batch in loader:
                n += batch["input_values"].shape[0]
            batch_s = min(batch_s, time.perf_counter() - t)
            assert n == len(ids)

        base = _rate(len(ids), rdsamp_s)
        rows = [
            ("wfdb.rdsamp per item (no preprocessing)", base),
            ("wfdb.rdsamp + HuBERT-ECG processor per item", _rate(len(ids), proc_s)),
            ("cache, one item at a time", _rate(len(ids), item_s)),
            ("cache, DataLoader batch 64 (shuffled)", _rate(len(ids), batch_s)),
        ]
        print(f"\n{len(ids)} PTB-XL-shaped records, 100 Hz, 12 leads, 10 s -> HuBERT-ECG input (6000 samples); "
              f"torch threads 1\ncache build: {build_s:.1f} s ({build_s / len(ids) * 1000:.1f} s per 1,000 records), "
              f"{sum(f.stat().st_size for f in cache.path.iterdir()) / 1e6:.1f} MB\n")
        print(f"| {'path':<46} | {'records/s':>10} | {'x rdsamp':>8} |")
        print(f"|{'-' * 48}|{'-' * 12}|{'-' * 10}|")
        for name, rate in rows:
            print(f"| {name:<46} | {rate:>10.0f} | {rate / base:>7.1f}x |")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
