"""Adaptation methods side by side: trainable parameters, train-step time, peak memory and adapter size.

    python benchmarks/adaptation.py                       # HuBERT-ECG-base and ST-MEM-base sizes, batch 8
    python benchmarks/adaptation.py --backbone hubert_ecg --method lora --method full --rounds 3
    python benchmarks/adaptation.py --gc-batch 32         # + gradient checkpointing rows at batch 32

Backbones have random weights at the released sizes (HuBERT-ECG base: 768 hidden, 12 layers, 6,000-sample
lead-major input; ST-MEM ViT-B: 768 hidden, 12 layers, 12 x 2,250 input). Every configuration runs in a fresh
process, so its peak RSS (``ru_maxrss``) is its own: building the model, one warm-up step, then ``--steps`` timed
AdamW steps (median reported). Ratios are to full fine-tuning of the same backbone at the same batch, measured
in the same run.

``lora (by hand)`` is the baseline a user has today without ecg_adapt: the same backbone (for HuBERT-ECG,
transformers' plain ``HubertModel``), a hand-written mean-pool + ``nn.Linear`` head and ``peft.get_peft_model``
with the same targets, rank and ``modules_to_save``; no attention mask (ecg_adapt's LoRA gets the processor's
mask, as in training). ``lora (by hand, frozen conv)`` also freezes the conv stack the way transformers'
``freeze_feature_encoder()`` does, which ecg_adapt does by itself whenever the conv feature encoder is frozen
(HuBERT-ECG only). The LoRA and by-hand rows are interleaved over ``--rounds`` rounds and the medians taken,
so drift on a shared machine hits them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BACKBONES = {
    "hubert_ecg": ("hubert_ecg", "hubert-ecg-base"),
    "st_mem": ("st_mem", "st-mem-vit-b75-encoder"),
}

# (row label, AdaptationConfig kwargs); "by_hand" is the plain transformers + peft baseline.
METHODS: dict[str, dict] = {
    "full": {"method": "full"},
    "linear_probe": {"method": "linear_probe"},
    "partial (last 2)": {"method": "partial", "num_trainable_blocks": 2},
    "bitfit": {"method": "bitfit"},
    "norm_tuning": {"method": "norm_tuning"},
    "lora r8": {"method": "lora", "r": 8},
    "lora (by hand) r8": {"method": "by_hand", "r": 8},
    "lora (by hand, frozen conv) r8": {"method": "by_hand", "r": 8, "freeze_feature_encoder": True},
    "rslora r8": {"method": "lora", "r": 8, "use_rslora": True},
    "dora r8": {"method": "lora", "r": 8, "use_dora": True},
    "pissa r8": {"method": "lora", "r": 8, "init_lora_weights": "pissa_niter_4"},
    "ia3": {"method": "ia3"},
    "loha r8": {"method": "loha", "r": 8},
    "lokr r8": {"method": "lokr", "r": 8},
    "vera r64": {"method": "vera", "r": 64},
    "oft": {"method": "oft", "r": 0, "oft_block_size": 32},
    "boft": {"method": "boft"},
    "houlsby_adapter": {"method": "houlsby_adapter"},
    "pfeiffer_adapter": {"method": "pfeiffer_adapter"},
    "prompt shallow 10": {"method": "prompt_tuning", "num_prompt_tokens": 10, "prompt_depth": "shallow"},
    "prompt deep 10": {"method": "prompt_tuning", "num_prompt_tokens": 10, "prompt_depth": "deep"},
}
N_LABELS = 5


def _by_hand_model(family: str, config, r: int, freeze_feature_encoder: bool = False):
    """The baseline without ecg_adapt: plain backbone + hand-written head + peft LoRA."""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch import nn

    from ecg_adapt.models import FAMILIES

    if family == "hubert_ecg":
        from transformers import HubertConfig, HubertModel

        plain = HubertConfig(**{k: v for k, v in config.to_dict().items() if k in HubertConfig().to_dict()})
        plain.apply_spec_augment = False  # as ecg_adapt's prepare_for_finetuning
        plain.mask_time_prob = 0.0
        plain.layerdrop = 0.0  # the same compute as ecg_adapt (whose backbone_layerdrop defaults to 0)
        encoder = HubertModel(plain)
        if hasattr(encoder, "masked_spec_embed"):
            del encoder.masked_spec_embed
        if freeze_feature_encoder:  # what transformers' freeze_feature_encoder() does: no backward through the convs
            encoder.feature_extractor._freeze_parameters()
    else:
        encoder = FAMILIES[family].model_class(config)

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.dropout = nn.Dropout(0.1)
            self.head = nn.Linear(config.hidden_size, N_LABELS)

        def forward(self, input_values: torch.Tensor) -> torch.Tensor:
            h = self.encoder(input_values).last_hidden_state.mean(dim=1)
            return self.head(self.dropout(h))

    targets = list(FAMILIES[family].lora_target_modules)
    lora = LoraConfig(r=r, lora_alpha=16, lora_dropout=0.1, target_modules=targets, modules_to_save=["head"])
    return get_peft_model(Head(), lora)


def _measure(backbone: str, label: str, batch: int, steps: int, threads: int, gc: bool) -> dict:
    import torch

    from ecg_adapt import ECGClassifier
    from ecg_adapt.adaptation import AdaptationConfig, adapt, count_parameters, save_adapted
    from ecg_adapt.models import FAMILIES, released_variants
    from ecg_adapt.processing import SignalContract

    torch.set_num_threads(threads)
    family, variant_name = BACKBONES[backbone]
    fam = FAMILIES[family]
    variant = next(v for v in released_variants() if v["family"] == family and v["name"] == variant_name)
    config = fam.config_class(**variant["config"])
    shape = tuple(SignalContract.from_dict(config.signal_contract).input_shape)
    kwargs = dict(METHODS[label])
    method = kwargs.pop("method")
    torch.manual_seed(0)
    if method == "by_hand":
        model = _by_hand_model(family, config, kwargs["r"], kwargs.get("freeze_feature_encoder", False))
        backbone_params = sum(p.numel() for n, p in model.named_parameters() if ".encoder." in n and "lora_" not in n)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if gc:
            model.get_base_model().encoder.gradient_checkpointing_enable({"use_reentrant": False})
    else:
        clf = ECGClassifier.from_backbone(fam.model_class(config), [f"c{i}" for i in range(N_LABELS)])
        clf.config.backbone_name_or_path = f"benchmark/random-{variant_name}"
        backbone_params = sum(p.numel() for p in clf.backbone.parameters())
        if gc:
            clf.gradient_checkpointing_enable({"use_reentrant": False})
        model = adapt(clf, AdaptationConfig(method=method, **kwargs))
        trainable = count_parameters(model).trainable
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randn((batch,) + shape)
    mask = torch.ones_like(x, dtype=torch.long)
    y = torch.randint(0, 2, (batch, N_LABELS)).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step() -> float:
        t = time.perf_counter()
        logits = model(x) if method == "by_hand" else model(input_values=x, attention_mask=mask).logits
        loss = loss_fn(logits, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    step()  # warm-up (allocator, optimizer state)
    times = [step() for _ in range(steps)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = None
    if method != "by_hand":
        with tempfile.TemporaryDirectory() as d:
            out = save_adapted(model, Path(d) / "m")
            files = [f for f in ("adapter_model.safetensors", "model.safetensors") if (out / f).exists()]
            size = sum((out / f).stat().st_size for f in files)
    return {
        "backbone": backbone, "method": label, "batch": batch, "gc": gc, "trainable": trainable,
        "backbone_params": backbone_params, "step_s": statistics.median(times), "peak_rss_mb": peak,
        "adapter_bytes": size, "backbone_bytes": 4 * backbone_params,
    }


def _run_child(args: argparse.Namespace, backbone: str, label: str, batch: int, gc: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", backbone, label, "--batch", str(batch), "--steps", str(args.steps),
           "--threads", str(args.threads)] + (["--gc"] if gc else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"backbone": backbone, "method": label, "batch": batch, "gc": gc, "error": last[:160]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt_row(r: dict, ref: dict | None) -> str:
    if "error" in r:
        return f"| {r['backbone']} | {r['method']} | n/a: {r['error']} | | | | | |"
    pct = 100 * r["trainable"] / r["backbone_params"]
    t_ratio = f"{r['step_s'] / ref['step_s']:.2f}x" if ref and "error" not in ref else "-"
    m_ratio = f"{r['peak_rss_mb'] / ref['peak_rss_mb']:.2f}x" if ref and "error" not in ref else "-"
    if r["adapter_bytes"] is None:
        size = "-"
    else:
        size = f"{r['adapter_bytes'] / 2**20:.2f} MB ({100 * r['adapter_bytes'] / r['backbone_bytes']:.2f}%)"
    return (f"| {r['backbone']} | {r['method']}{' + grad ckpt' if r['gc'] else ''} | {r['trainable']:,} ({pct:.3f}%) | "
            f"{r['step_s']:.2f} | {t_ratio} | {r['peak_rss_mb']:,.0f} | {m_ratio} | {size} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", action="append", choices=sorted(BACKBONES), help="only these (repeatable)")
    ap.add_argument("--method", action="append", choices=list(METHODS), help="only these rows (repeatable)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per configuration (after 1 warm-up)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of 'lora' vs 'lora (by hand)'")
    ap.add_argument("--gc-batch", type=int, default=0, help="also measure gradient checkpointing at this batch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the raw rows here")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--gc", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child[0], args.child[1], args.batch, args.steps, args.threads, args.gc)))
        return

    backbones = args.backbone or list(BACKBONES)
    labels = args.method or list(METHODS)
    rows: list[dict] = []
    for backbone in backbones:
        results: dict[str, dict] = {}
        # LoRA and its by-hand baselines are interleaved over rounds (rotating order), medians taken.
        paired = [lb for lb in labels if lb == "lora r8" or lb.startswith("lora (by hand")]
        paired = paired if len(paired) > 1 and "lora r8" in paired else []
        for label in labels:
            if label in paired:
                continue
            results[label] = _run_child(args, backbone, label, args.batch, False)
            print(f"  {backbone} {label}: {results[label]}", file=sys.stderr)
        runs: dict[str, list[dict]] = {label: [] for label in paired}
        for i in range(args.rounds if paired else 0):
            order = paired[i % len(paired):] + paired[:i % len(paired)]
            for label in order:
                runs[label].append(_run_child(args, backbone, label, args.batch, False))
                print(f"  {backbone} {label} round {i}: {runs[label][-1]}", file=sys.stderr)
        for label, rs in runs.items():
            ok = [r for r in rs if "error" not in r]
            if not ok:
                results[label] = rs[0]
                continue
            med = dict(ok[0])
            med["step_s"] = statistics.median(r["step_s"] for r in ok)
            med["peak_rss_mb"] = statistics.median(r["peak_rss_mb"] for r in ok)
            med["rounds"] = [(r["step_s"], r["peak_rss_mb"]) for r in ok]
            results[label] = med
        rows += [results[label] for label in labels if label in results]
        if args.gc_batch:
            for label in ("full", "lora r8"):
                if label not in labels:
                    continue
                for gc in (False, True):
                    r = _run_child(args, backbone, label, args.gc_batch, gc)
                    print(f"  {backbone} {label} batch {args.gc_batch} gc={gc}: {r}", file=sys.stderr)
                    rows.append(r)

    print(f"\nbatch {args.batch}, {args.threads} threads, median of {args.steps} steps after a warm-up; "
          "ratios to full fine-tuning of the same backbone (gradient-checkpointing rows: to the same method "
          "without it at the same batch)\n")
    print("| backbone | method | trainable (% of backbone) | step (s) | step / full | peak RSS (MB) | RSS / full | "
          "saved weights (% of backbone) |")
    print("|---|---|---|---|---|---|---|---|")
    refs = {(r["backbone"], r["batch"]): r for r in rows if r.get("method") == "full" and not r.get("gc")}
    for r in rows:
        if r.get("gc") or (r.get("batch") != args.batch and r.get("method") in ("full", "lora r8")):
            ref = next((q for q in rows if q.get("backbone") == r["backbone"] and q.get("method") == r["method"]
                        and q.get("batch") == r.get("batch") and not q.get("gc")), None)
        else:
            ref = refs.get((r["backbone"], r.get("batch")))
        print(_fmt_row(r, ref))
    for backbone in backbones:
        a = next((r for r in rows if r.get("backbone") == backbone and r.get("method") == "lora r8"
                  and r.get("batch") == args.batch and "error" not in r), None)
        for b in rows:
            if (a and b.get("backbone") == backbone and str(b.get("method")).startswith("lora (by hand")
                    and "error" not in b):
                print(f"\n{backbone}: ecg_adapt LoRA / {b['method']}: step {a['step_s'] / b['step_s']:.3f}x, "
                      f"peak RSS {a['peak_rss_mb'] / b['peak_rss_mb']:.3f}x (target: within 5%)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
