"""Backbones at their released sizes (random weights): parameters, CPU latency, throughput, peak memory.

    python benchmarks/backbones.py [--family hubert_ecg] [--threads 2] [--batch 32]

Every configuration runs in a fresh process, so the peak RSS it reports belongs to that model alone
(``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after building the model and running both batch sizes).
Latency is the median of ``--repeats`` eval-mode forwards of one record (batch 1); throughput is records/s
at ``--batch``. All rows are measured in one run on the same machine, side by side.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def _measure(family: str, name: str, threads: int, batch: int, repeats: int) -> dict:
    import torch

    from ecg_adapt.models import FAMILIES, released_variants

    torch.set_num_threads(threads)
    variant = next(v for v in released_variants() if v["family"] == family and v["name"] == name)
    fam = FAMILIES[family]
    config = fam.config_class(**variant["config"])
    torch.manual_seed(0)
    model = fam.model_class(config).eval()
    as_released = sum(p.numel() for p in model.parameters())
    if hasattr(model, "prepare_for_finetuning"):  # drop pretraining-only parameters, as adaptation does
        model.prepare_for_finetuning()
    params = sum(p.numel() for p in model.parameters())
    shape = tuple(config.contract.input_shape) if hasattr(config, "contract") else None
    if shape is None:
        from ecg_adapt.processing import SignalContract

        shape = SignalContract.from_dict(config.signal_contract).input_shape
    x1 = torch.randn((1,) + tuple(shape))
    xb = torch.randn((batch,) + tuple(shape))
    with torch.inference_mode():
        model(x1)  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            model(x1)
            times.append(time.perf_counter() - t)
        model(xb)
        t = time.perf_counter()
        model(xb)
        tb = time.perf_counter() - t
    return {
        "family": family,
        "variant": name,
        "parameters": params,
        "table_parameters": variant.get("parameters"),
        "as_released": as_released,
        "input": "x".join(map(str, shape)),
        "latency_ms": 1000 * statistics.median(times),
        "throughput": batch / tb,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", action="append", help="only these families (repeatable)")
    ap.add_argument("--variant", action="append", help="only these variant names (repeatable)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--child", nargs=2, metavar=("FAMILY", "VARIANT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_measure(*args.child, args.threads, args.batch, args.repeats)))
        return

    from ecg_adapt.models import released_variants

    rows = []
    for v in released_variants():
        if args.family and v["family"] not in args.family or args.variant and v["name"] not in args.variant:
            continue
        if "config" not in v:
            print(f"skip {v['family']}/{v['name']}: no config in the variant table", file=sys.stderr)
            continue
        cmd = [sys.executable, __file__, "--child", v["family"], v["name"], "--threads", str(args.threads),
               "--batch", str(args.batch), "--repeats", str(args.repeats)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"FAILED {v['family']}/{v['name']}:\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"measured {v['family']}/{v['name']}", file=sys.stderr)
    print(f"\nCPU, torch threads {args.threads}, eval mode, random weights; throughput at batch {args.batch}; "
          "params without pretraining-only heads\n")
    print(f"| {'family':<11} | {'variant':<26} | {'params':>8} | {'input':>9} | {'latency b1 (ms)':>15} | {'records/s b' + str(args.batch):>13} | {'peak RSS (MB)':>13} |")
    print(f"|{'-' * 13}|{'-' * 28}|{'-' * 10}|{'-' * 11}|{'-' * 17}|{'-' * 15}|{'-' * 15}|")
    for r in rows:
        flag = "" if r["table_parameters"] in (None, r["parameters"], r["as_released"]) else " (!)"
        print(f"| {r['family']:<11} | {r['variant']:<26} | {r['parameters'] / 1e6:>7.2f}M{flag} | {r['input']:>9} | "
              f"{r['latency_ms']:>15.1f} | {r['throughput']:>13.1f} | {r['peak_rss_mb']:>13.0f} |")
    if any(r["table_parameters"] not in (None, r["parameters"], r["as_released"]) for r in rows):
        print("(!) parameter count differs from the variant table")


if __name__ == "__main__":
    main()
