"""``ecg-adapt``: the command line. It only composes the library; every command has ``--help``."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from typing import Any
from pathlib import Path

DEMO_RECIPE = "hubert_ecg_lora_ptbxl_superdiagnostic"  # a shipped recipe: found from any folder


def _resolve_recipe(name_or_path: str) -> str:
    """A recipe file, or the name of a shipped one (``ecg-adapt recipes ls``) when no such file exists."""
    from .training.catalogue import RECIPE_SUFFIX, find_recipe

    if Path(name_or_path).exists() or len(Path(name_or_path).parts) > 1 or name_or_path.endswith(RECIPE_SUFFIX):
        return name_or_path
    return str(find_recipe(name_or_path))


def _cmd_train(args: argparse.Namespace) -> int:
    from . import demo
    from .training import Recipe, train

    recipe = Recipe.from_yaml(_resolve_recipe(args.recipe), args.overrides)
    run_info: dict[str, str] = {}
    if demo.needs_demo(recipe):  # no backbone or no data path: the offline demo's stand-ins, said loudly
        recipe, run_info = demo.prepare(recipe)
        for note in run_info.values():
            if note != "synthetic":
                print(f"ecg-adapt: {note}", file=sys.stderr)
    metrics = train(recipe, run_info=run_info)
    from .tasks.bootstrap import describe_test_metric

    primary = metrics.get("primary_metric") or "macro_auroc"
    if "confusion_matrix" in metrics["test"]:  # sleep staging: kappa, F1s, per-subject kappa, confusion matrix
        from .tasks.staging import format_staging_report

        print("test " + format_staging_report(metrics["test"]).replace("\n", "\n  "))
    else:  # the staging report has its own per-stage F1 and confusion matrix
        print(f"test {primary}: {describe_test_metric(metrics['test'], primary)}")
        table = per_class_table(metrics)
        if table:
            print(table)
    selection = metrics.get("selection") or {}
    print(f"model: {'step ' + str(selection.get('best_step')) + ' (best validation)' if selection.get('selected') == 'best' else selection.get('reason', 'last step')}")
    return 0


def per_class_table(metrics: dict) -> str:
    """The test metrics per class of a run's ``metrics.json`` as aligned text: the label (the id), its name (a
    SNOMED CT code's abbreviation, where the task has one), AUROC with its interval, F1 and test positives."""
    per = (metrics.get("test") or {}).get("per_class") or {}
    if not per:
        return ""

    def num(v: object) -> str:
        return "n/a" if v is None else f"{v:.3f}"  # type: ignore[str-format]

    rows = [("LABEL", "NAME", "AUROC [CI]", "F1", "POSITIVES")]
    for label, e in per.items():
        ci = e.get("auroc_ci")
        auroc = num(e.get("auroc")) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        rows.append((label, str(e.get("name", label)), auroc, num(e.get("f1")), str(e.get("positives", ""))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _cmd_embed(args: argparse.Namespace) -> int:
    """Encode a recipe's (or a finished run's) records once with its backbone: the cache linear probes train on."""
    from . import demo
    from .training import Recipe
    from .training.embeddings import embedding_cache_size
    from .training.trainer import embed_recipe

    path = Path(args.run_or_recipe)
    recipe_file = path / "recipe.yaml" if path.is_dir() else None
    if path.is_dir() and not recipe_file.exists():  # type: ignore[union-attr]
        raise FileNotFoundError(f"{path} is a folder without recipe.yaml: give a run folder or a recipe")
    recipe = Recipe.from_yaml(str(recipe_file) if recipe_file else _resolve_recipe(args.run_or_recipe), args.overrides)
    if demo.needs_demo(recipe):
        recipe, _ = demo.prepare(recipe)
    t0 = time.time()
    cache, built = embed_recipe(recipe)
    n = len(cache)
    size = embedding_cache_size(cache)
    print(f"embedding cache: {cache.path}")
    print(f"  {n} windows, {cache.report['pooling']} pooling, features {tuple(cache.report['feature_shape'])}, "
          f"{size / 1e6:.1f} MB")
    if built:
        seconds = float(cache.report["encode_seconds"])
        print(f"  encoded in {seconds:.1f} s ({n / max(seconds, 1e-9):.0f} windows/s; {time.time() - t0:.1f} s in all)")
    else:
        print(f"  already built (encoded at {n / max(float(cache.report['encode_seconds']), 1e-9):.0f} windows/s); reused")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .training.sweep import SweepSpec, describe, end_sweep, plot_sweep, run_sweep

    spec = SweepSpec.from_yaml(args.sweep)
    if args.dry_run:
        print(describe(spec))
        return 0
    if args.plot_only:
        print(f"wrote {plot_sweep(spec.output_root, Path(spec.output_root) / 'sweep.png', metric=args.metric)}")
        return 0
    logging.getLogger("ecg_adapt.sweep").setLevel(logging.INFO)  # one line per cell: trained, skipped, failed
    try:
        result = run_sweep(spec)
    finally:
        end_sweep()
    if not result.is_main_process:  # every launched process ran the cells; one reports
        return 1 if result.failed else 0
    print(f"sweep {spec.output_root}: {len(result.trained)} trained, {len(result.skipped)} skipped (finished "
          f"earlier), {len(result.failed)} failed; results in {Path(spec.output_root) / 'sweep_results.md'}")
    for name, error in result.failed:
        print(f"  failed {name}: {error}", file=sys.stderr)
    return 1 if result.failed else 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """Train the demo recipe offline (embedded backbone, synthetic data), reload it and predict."""
    from . import demo
    from .training import Recipe

    overrides = list(args.overrides)
    if not any(o.startswith("output.overwrite_output_dir") for o in overrides):
        overrides.append("output.overwrite_output_dir=true")
    demo.run(Recipe.from_yaml(_resolve_recipe(args.recipe), overrides), predict_dir=args.predict_dir)
    return 0


def _print_predictions(preds, limit: int | None = None) -> None:
    for p in preds[:limit]:
        top = sorted(p.probabilities.items(), key=lambda kv: -kv[1])[:3]
        tops = ", ".join(f"{k} {v:.2f}" for k, v in top)
        print(f"  {p.record_id:<12} windows={p.n_windows}  predicted={p.predicted or '-'}  top: {tops}")


def _cmd_recipes_ls(args: argparse.Namespace) -> int:
    from .training.catalogue import list_recipes

    rows = list_recipes()
    if args.json:
        print(json.dumps([{**r.__dict__, "path": str(r.path)} for r in rows], indent=2))
        return 0
    header = ("RECIPE", "FAMILY", "METHOD", "TASK", "DATASET")
    table = [header] + [(r.name, r.family, r.method, r.task, r.dataset) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _cmd_recipes_cp(args: argparse.Namespace) -> int:
    from .training.catalogue import copy_recipe

    dest = copy_recipe(args.name, args.dest, force=args.force)
    print(f"copied {args.name} to {dest}")
    return 0


class _RecipeSchemaHelp(argparse.Action):
    """``train --help``: the usage, then every recipe section and key generated from the schema dataclasses
    (imported only when asked: the schema module imports no torch)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs) -> None:
        super().__init__(option_strings, dest=dest, nargs=0, help="show this help and every recipe key, then exit")

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        from .training.recipe import schema_help

        parser.print_help()
        print("\n" + schema_help())
        parser.exit()


def _epoch_rows(night) -> list[list[str]]:
    return [[night.record_id, str(e.epoch), f"{e.start_s:.3f}", e.clock_time or "", e.predicted or "",
             *(f"{e.probabilities[n]:.6f}" if e.probabilities else "" for n in night.labels), e.error]
            for e in night.epochs]


def _write_predictions(out: Path, json_rows: list[dict[str, Any]], header: list[str], csv_rows: list[list[Any]]) -> None:
    """Write predictions to ``out`` atomically (a killed run leaves no half file): a JSON list of ``json_rows``
    when ``out`` ends in ``.json``, else a CSV of ``header`` and ``csv_rows``."""
    import io

    from .utils import atomic_write_text

    if out.suffix == ".json":
        atomic_write_text(out, json.dumps(json_rows, indent=2) + "\n")
        return
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(csv_rows)
    atomic_write_text(out, buf.getvalue())


def _predict_nights(predictor, args: argparse.Namespace) -> int:
    """``predict`` with a sequence model: one row per scoring epoch of every PSG file (EDF or WFDB)."""
    from collections import Counter

    from .data.record import RecordError
    from .inference import find_inputs, read_night, write_hypnogram

    per_record = [flag for flag, v in (("--per-window", args.per_window), ("--leads", args.leads),
                                       ("--sampling-rate", args.sampling_rate),
                                       ("--aggregation max", args.aggregation == "max")) if v]
    if per_record:  # silently ignored otherwise: an epoch's probabilities are always the mean over its windows
        print(f"ecg-adapt: error: {', '.join(per_record)} apply to window classifiers (per-record prediction); "
              f"{args.model} is a sequence model, which predicts per {predictor.epoch_seconds:g} s epoch of PSG files "
              "(choose the ECG with --ecg-channel and its lead with --lead)", file=sys.stderr)
        return 2
    try:
        lead = predictor.resolve_lead(args.lead)
    except ValueError as e:
        print(f"ecg-adapt: error: {e}", file=sys.stderr)
        return 2
    channels = [c.strip() for c in args.ecg_channel.split(",")] if args.ecg_channel else predictor.ecg_channels
    inputs = find_inputs(args.paths)
    if not inputs:
        print(f"ecg-adapt: error: no PSG files found in {', '.join(args.paths)} (looked for *.edf files and WFDB *.hea "
              "records, recursively)", file=sys.stderr)
        return 1
    nights, bad = [], []
    for path in inputs:
        if path.suffix.lower() == ".npy":
            bad.append(RecordError(path.name, "bad_input", "a sequence model stages PSG files (EDF or WFDB), not .npy arrays"))
            continue
        try:
            night = read_night(path, channels)
            nights.append(predictor.predict_night(night, lead, batch_size=args.batch_size))
        except RecordError as e:
            bad.append(e)
        except (ValueError, OSError) as e:  # one unreadable night never stops the others
            bad.append(RecordError(path.stem, "bad_input", str(e)))
    for e in bad:
        print(f"skipped {e.record}: {e.reason}: {e.detail}", file=sys.stderr)
    for night in nights:
        counts = Counter(e.predicted for e in night.epochs if e.predicted)
        failed = sum(1 for e in night.epochs if e.error)
        print(f"{night.record_id}: {len(night.epochs)} epochs of {night.epoch_seconds:g} s, channel {night.ecg_channel} "
              f"as lead {night.lead} at {night.sampling_rate:g} Hz; predicted "
              + ", ".join(f"{n} {counts[n]}" for n in night.labels) + (f"; {failed} epoch(s) not processed" if failed else ""),
              file=sys.stderr)
    print(f"model input: {predictor.processor.contract.describe()}", file=sys.stderr)
    labels = predictor.labels
    header = ["record_id", "epoch", "start_s", "clock_time", "predicted", *labels, "error"]
    if args.output:
        out = Path(args.output)
        _write_predictions(
            out, [n.to_dict() for n in nights] + [{"record_id": e.record, "error": {"reason": e.reason, "detail": e.detail}}
                                                  for e in bad],
            header, [row for night in nights for row in _epoch_rows(night)]
            + [[e.record, "", "", "", "", *([""] * len(labels)), f"{e.reason}: {e.detail}"] for e in bad])
        print(f"wrote {sum(len(n.epochs) for n in nights)} epochs of {len(nights)} night(s) ({len(bad)} skipped) to {out}",
              file=sys.stderr)
    else:
        w = csv.writer(sys.stdout)
        w.writerow(header)
        for night in nights:
            w.writerows(_epoch_rows(night))
    if args.hypnogram and nights:
        target = Path(args.hypnogram)
        for night in nights:
            path = target if len(nights) == 1 else target.with_name(f"{target.stem}-{night.record_id}{target.suffix or '.png'}")
            print(f"wrote hypnogram {write_hypnogram(night, path)}", file=sys.stderr)
    return 0 if nights else 1


def _cmd_predict(args: argparse.Namespace) -> int:
    from .inference import Predictor, SequencePredictor, find_inputs, find_sequence_model_folder, read_records

    folder = find_sequence_model_folder(args.model) if Path(args.model).exists() else None
    if folder is not None:  # a sequence model saved with save_pretrained (no adapter folder layout)
        predictor = Predictor.from_pretrained(folder, missing_leads=args.missing_leads, aggregation=args.aggregation)
    else:
        from .hub import from_hub

        predictor = from_hub(args.model, revision=args.revision, missing_leads=args.missing_leads,
                             aggregation=args.aggregation)
    if isinstance(predictor, SequencePredictor):
        return _predict_nights(predictor, args)
    per_epoch = [flag for flag, v in (("--ecg-channel", args.ecg_channel), ("--lead", args.lead),
                                      ("--hypnogram", args.hypnogram)) if v]
    if per_epoch:
        print(f"ecg-adapt: error: {', '.join(per_epoch)} apply to sequence models (per-epoch staging); {args.model} is a "
              "window classifier, which predicts per record", file=sys.stderr)
        return 2
    leads = [x.strip() for x in args.leads.split(",")] if args.leads else None
    inputs = find_inputs(args.paths)
    if not inputs:
        print(f"ecg-adapt: error: no records found in {', '.join(args.paths)} (looked for WFDB *.hea, *.edf and *.npy "
              "files, recursively)", file=sys.stderr)
        return 1
    records, bad = read_records(inputs, args.sampling_rate, leads)
    preds, failed = predictor.predict_each(records, batch_size=args.batch_size, progress=True, per_window=args.per_window)
    bad = bad + failed
    # Every record that could not be predicted is reported with its reason, on stderr and in the output file.
    for e in bad:
        print(f"skipped {e.record}: {e.reason}: {e.detail}", file=sys.stderr)
    contract = predictor.processor.contract
    for p in preds:
        print(f"{p.record_id}: {p.report}", file=sys.stderr)
    print(f"model input: {contract.describe()}", file=sys.stderr)
    if args.output:
        out = Path(args.output)
        rows: list[list[Any]] = []
        for p in preds:
            rows.append([p.record_id, "record", "", p.n_windows, ";".join(p.predicted),
                         *(f"{p.probabilities[n]:.6f}" for n in predictor.labels), ""])
            rows.extend([p.record_id, i, f"{start:.3f}", "", "", *(f"{wp[n]:.6f}" for n in predictor.labels), ""]
                        for i, (start, wp) in enumerate(zip(p.window_starts_s, p.window_probabilities)))
        rows.extend([e.record, "record", "", 0, "", *([""] * len(predictor.labels)), f"{e.reason}: {e.detail}"] for e in bad)
        _write_predictions(
            out, [p.to_dict() for p in preds] + [{"record_id": e.record, "error": {"reason": e.reason, "detail": e.detail}}
                                                 for e in bad],
            ["record_id", "window", "start_s", "n_windows", "predicted", *predictor.labels, "error"], rows)
        print(f"wrote {len(preds)} predictions ({len(bad)} record(s) skipped) to {out}", file=sys.stderr)
    else:
        _print_predictions(preds)
    if bad:
        print(f"{len(preds)} of {len(preds) + len(bad)} record(s) predicted, {len(bad)} skipped (reasons above)",
              file=sys.stderr)
    return 0 if preds else 1


def _cmd_register(args: argparse.Namespace) -> int:
    from .hub import register_to_mlflow

    uri = register_to_mlflow(args.run_dir, args.name, tracking_uri=args.tracking_uri, alias=args.alias)
    print(f"registered {args.run_dir} as {uri}")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from .hub import prepare_push_folder, push_to_hub

    if args.dry_run:
        folder = prepare_push_folder(args.run_dir, args.base_model, args.merged, repo_id=args.repo_id,
                                     license=args.license, output_dir=args.dry_run)
        for f in sorted(Path(folder).rglob("*")):
            if f.is_file():
                print(f"{f.stat().st_size:>12,}  {f.relative_to(folder)}")
        return 0
    url = push_to_hub(args.run_dir, args.repo_id, base_model=args.base_model, private=args.private,
                      revision=args.revision, commit_message=args.commit_message, merged=args.merged,
                      license=args.license, overwrite=args.overwrite)
    print(f"pushed {args.run_dir} -> {url}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    """Compare finished runs on their shared test records; write the table (markdown + CSV) and curve plots."""
    from .evaluation import compare_runs, plot_curves
    from .utils import atomic_write_text

    try:
        table = compare_runs(args.runs, metric=args.metric, split=args.split, n_resamples=args.resamples,
                             level=args.level, seed=args.seed)
    except ValueError as e:  # runs of different tasks or records, an unknown metric: say why, no traceback
        print(f"ecg-adapt: error: {e}", file=sys.stderr)
        return 2
    print(table.to_markdown())
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "comparison.md", table.to_markdown())
        atomic_write_text(out / "comparison.csv", table.to_csv())
        written = [out / "comparison.md", out / "comparison.csv"]
        if args.plots:
            for row in table.rows:
                written.append(plot_curves(row.path, out / f"curves_{Path(row.path).name}.png", split=args.split))
        print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    # The family records are torch-free (ecg_adapt/models/<family>/family.py): listing them imports neither torch
    # nor transformers, so this answers in a fraction of a second once the package face is lazy.
    from .models.registry import FAMILIES, release_location, released_variants

    rows = [v for v in released_variants() if not args.family or v["family"] == args.family]
    if args.family and args.family not in FAMILIES:
        print(f"ecg-adapt: error: unknown family {args.family!r}; known: {sorted(FAMILIES)}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for v in rows:
        params = v.get("parameters")
        params_s = f"{params / 1e6:.1f}M" if isinstance(params, (int, float)) else str(params)
        print(f"{v['family']:<12} {v['name']:<28} {params_s:>8}")
        print(f"{'':<12} release: {release_location(v)}")
        note = f" ({v['licence_note']})" if v.get("licence_note") else ""
        print(f"{'':<12} licence: {v.get('licence') or 'not stated'}{note}; redistribution: {v.get('redistribution', '?')}")
        print(f"{'':<12} input: {v.get('contract', '?')}\n")
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from .adaptation.support import full_support_matrix, methods_table, support_matrix_markdown

    matrix = full_support_matrix()
    if args.json:
        print(json.dumps(matrix, indent=2))
        return 0
    print(methods_table())
    print("Which method adapts which family (checked on every released architecture):\n")
    print(support_matrix_markdown(matrix))
    return 0


def parse_config_overrides(items: list[str] | None) -> dict[str, Any]:
    """``--config key=value`` items -> a dict; values are parsed as YAML scalars or lists (``4``, ``0.1``, ``true``,
    ``[2, 2, 2]``), anything else stays a string.

    Raises:
        ValueError: an item without ``=`` or with an empty key, naming it.
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--config {item!r}: expected key=value (e.g. --config vit_heads=4)")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else value
        except yaml.YAMLError as e:
            raise ValueError(f"--config {item!r}: the value is not a YAML/JSON scalar or list ({e})") from None
    return out


def _cmd_convert(args: argparse.Namespace) -> int:
    from .models import get_family
    from .models.conversion import config_fields, run_converter

    family = get_family(args.family)
    try:
        overrides = parse_config_overrides(args.config)
        if args.num_attention_heads is not None:  # the older spelling of --config num_attention_heads=N
            if "num_attention_heads" not in config_fields(family.config_class):
                heads = [f for f in config_fields(family.config_class) if "head" in f]
                raise ValueError(f"--num-attention-heads: {args.family} configurations have no num_attention_heads; "
                                 f"give the head count with --config {heads[0] if heads else '<field>'}=N")
            overrides.setdefault("num_attention_heads", args.num_attention_heads)
        report = run_converter(family, args.src, args.dst, allow_pickle=args.allow_pickle, config_overrides=overrides)
    except ValueError as e:  # mismatched keys, unknown sizes, pickles without --allow-pickle: say why, no traceback
        print(f"ecg-adapt: error: {e}", file=sys.stderr)
        return 2
    print(f"converted {args.src} -> {args.dst}: {report.summary()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ecg-adapt", description="Adapt pretrained ECG foundation models to arrhythmia and sleep tasks.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train from a recipe YAML (or a shipped recipe's name)", add_help=False, description=(
        "Train from a recipe: a YAML file or the name of a shipped one (`ecg-adapt recipes ls`). Overrides: "
        "section.key=value (e.g. training.learning_rate=3.0e-4). Multi-process: accelerate launch -m "
        "ecg_adapt.train RECIPE [overrides]. A recipe with a null model.model_name_or_path or data.path runs on the "
        "offline demo's random-weight backbone / synthetic PTB-XL (ecg_adapt.demo), and the run says so."))
    t.add_argument("-h", "--help", action=_RecipeSchemaHelp)
    t.add_argument("recipe", help="path to the recipe YAML, or a shipped recipe's name")
    t.add_argument("overrides", nargs="*", help="section.key=value overrides")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("embed", help="encode a recipe's records once with its frozen backbone (the cache linear "
                       "probes train on)", description=(
        "Build the embedding cache of a recipe (a YAML file or a shipped recipe's name) or of a finished run's "
        "folder (its recipe.yaml): every window of the train, validation and test splits encoded once by the "
        "backbone, pooled as model.pooling says (mean: pooled features; attention: the frames). A linear_probe run "
        "with training.embedding_cache: true (the default) trains on this cache, building it if needed. Prints "
        "where it is, its size and windows/s."))
    e.add_argument("run_or_recipe", help="a run folder (with recipe.yaml), a recipe YAML or a shipped recipe's name")
    e.add_argument("overrides", nargs="*", help="section.key=value overrides")
    e.set_defaults(func=_cmd_embed)

    w = sub.add_parser("sweep", help="run a grid of recipes (backbones x methods x train fractions x seeds), resumable",
                       description=(
        "Run every cell of a sweep file: a base recipe (file or shipped name), an output_root, a grid over dotted "
        "recipe keys (e.g. adaptation.method: [lora, linear_probe], data.train_fraction: [0.1, 1.0]) and optional "
        "fixed overrides. Each cell is an ordinary run in <output_root>/<cell>; finished cells are skipped, "
        "interrupted ones resume from their latest checkpoint, a failing cell is reported and the sweep goes on "
        "(exit status 1 at the end). Writes sweep_results.csv/.md after every cell and sweep.png at the end. "
        "Multi-process: accelerate launch -m ecg_adapt.cli sweep SWEEP.yaml (ecg_adapt.training.sweep)."))
    w.add_argument("sweep", help="the sweep YAML file")
    w.add_argument("--dry-run", action="store_true", help="list the cells (and whether each is new, finished or "
                                                           "resumable) without training")
    w.add_argument("--plot-only", action="store_true", help="only redraw <output_root>/sweep.png from finished cells")
    w.add_argument("--metric", default=None, help="metric of --plot-only (default: the runs' primary metric)")
    w.set_defaults(func=_cmd_sweep)

    d = sub.add_parser("demo", help="train the demo recipe offline end to end, reload it and predict", description=(
        "Synthesises a small PTB-XL-layout dataset, fine-tunes a small HuBERT-ECG-shaped backbone (random weights) "
        "with LoRA, reloads the saved adapter and predicts on the synthetic test fold and on real WFDB records "
        "(ecg_adapt.demo)."))
    d.add_argument("--recipe", default=DEMO_RECIPE, help=f"recipe file or shipped name (default {DEMO_RECIPE})")
    d.add_argument("--predict-dir", default=None, help="folder of real WFDB records to predict on")
    d.add_argument("overrides", nargs="*", help="section.key=value overrides")
    d.set_defaults(func=_cmd_demo)

    rc = sub.add_parser("recipes", help="list or copy the shipped recipes (as torchtune's tune ls / tune cp)")
    rsub = rc.add_subparsers(dest="recipes_command", required=True)
    rl = rsub.add_parser("ls", help="table of the shipped recipes: name, family, method, task, dataset")
    rl.add_argument("--json", action="store_true", help="print JSON (with each recipe's path and title)")
    rl.set_defaults(func=_cmd_recipes_ls)
    rp = rsub.add_parser("cp", help="copy a shipped recipe to edit it", description=(
        "Copy a shipped recipe (comments included). NAME is as listed by `ecg-adapt recipes ls` (no .yaml); "
        "DEST is a file or a folder. An existing file is kept unless --force."))
    rp.add_argument("name", help="recipe name, e.g. hubert_ecg_lora_ptbxl_superdiagnostic")
    rp.add_argument("dest", help="destination file or folder")
    rp.add_argument("--force", action="store_true", help="overwrite DEST if it exists")
    rp.set_defaults(func=_cmd_recipes_cp)

    r = sub.add_parser("predict", help="predict with a saved model on WFDB / EDF / .npy inputs or folders",
                       description="Window classifiers: long recordings are cut into the model's windows; window "
                                   "probabilities are aggregated per record (and listed per window with --per-window). "
                                   "Sequence (sleep staging) models: one row per 30 s epoch of each PSG file (EDF: SHHS, "
                                   "MESA; WFDB: slpdb) from its ECG channel only, with its neighbours as context "
                                   "(epoch, start_s, clock_time, predicted, per-stage probabilities).")
    r.add_argument("model", help="hub id (namespace/name), run folder, model folder, or MLflow models:/NAME/VERSION")
    r.add_argument("paths", nargs="+", help="WFDB records (without extension, or the .hea), .edf, .npy, or folders")
    r.add_argument("--revision", default=None, help="branch or commit of a hub model")
    r.add_argument("--output", "-o", help="write predictions to .csv (one row per record, then per window; sequence "
                                          "models: per epoch) or .json")
    r.add_argument("--missing-leads", choices=["error", "zero", "mask"], default=None,
                   help="how to feed leads the model expects but a record lacks (default: the saved processor's choice)")
    r.add_argument("--aggregation", choices=["mean", "max"], default="mean", help="window-to-record aggregation")
    r.add_argument("--sampling-rate", type=float, help="sampling rate of .npy inputs (Hz)")
    r.add_argument("--leads", help="comma-separated lead names of .npy inputs, in row order (e.g. I,II,V1)")
    r.add_argument("--batch-size", type=int, default=64)
    r.add_argument("--per-window", action="store_true", help="also output every window's probabilities")
    r.add_argument("--ecg-channel", help="sequence models: the PSG channel label(s) holding the ECG, comma-separated "
                                         "in order of preference (default: the model's saved ecg_channels, else ECG,EKG)")
    r.add_argument("--lead", help="sequence models: the model lead the ECG channel stands for (default: the model's "
                                  "saved ecg_lead, or its only lead)")
    r.add_argument("--hypnogram", help="sequence models: write a hypnogram PNG of the predicted stages here")
    r.set_defaults(func=_cmd_predict)

    u = sub.add_parser("push", help="push a training run to the Hugging Face Hub (adapter, head, processor, card)")
    u.add_argument("run_dir", help="the run's output_dir")
    u.add_argument("--repo-id", required=True, help="namespace/name on the Hub")
    u.add_argument("--base-model", help="the backbone others can load: a hub id, or the original hub repo or registry name "
                                        "of the release it was converted from (PKUDigitalHealth/ECGFounder, "
                                        "ecgfounder-1lead); required when the run used a local backbone folder")
    u.add_argument("--license", help="licence of the pushed model (default: the base model's)")
    u.add_argument("--private", action="store_true")
    u.add_argument("--revision", help="branch to push to (created if missing)")
    u.add_argument("--merged", action="store_true", help="push a merged full model instead of the adapter")
    u.add_argument("--overwrite", action="store_true", help="replace a repo whose content is not from ecg_adapt")
    u.add_argument("--commit-message")
    u.add_argument("--dry-run", metavar="FOLDER", help="write the folder that would be pushed, list it, push nothing")
    u.set_defaults(func=_cmd_push)

    g = sub.add_parser("register", help="register a training run in an MLflow model registry (extra [mlflow])")
    g.add_argument("run_dir", help="the run's output_dir")
    g.add_argument("--name", required=True, help="registered model name")
    g.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI), e.g. sqlite:///mlflow.db")
    g.add_argument("--alias", help="alias to point at the new version (e.g. champion)")
    g.set_defaults(func=_cmd_register)

    c = sub.add_parser("convert", help="convert an original release to an ecg_adapt folder")
    c.add_argument("--family", required=True, help="backbone family (e.g. hubert_ecg)")
    c.add_argument("src", help="the original release (folder or checkpoint file)")
    c.add_argument("dst", help="output folder")
    c.add_argument("--allow-pickle", action="store_true",
                   help="allow reading pickled checkpoints (.pt/.pth) that hold Python objects besides tensors; "
                        "only for files you trust (a restricted unpickler is used where possible)")
    c.add_argument("--config", action="append", metavar="KEY=VALUE", default=[],
                   help="set a configuration field the converter cannot read from the tensors, for checkpoints of a "
                        "non-released width (repeatable; values parsed as YAML/JSON: 4, 0.1, true, [2,2,2]), e.g. "
                        "--config vit_heads=4 --config vit_dim_head=32 (merl), --config num_attention_heads=4, "
                        "--config 'encoder_strides=[4,1,1,1]' (ecg_cpc without hyperparameters) or "
                        "--config input_contract=benchmark (ecgfm_ked)")
    c.add_argument("--num-attention-heads", type=int, default=None,
                   help="same as --config num_attention_heads=N (families whose config has that field)")
    c.set_defaults(func=_cmd_convert)

    cmp = sub.add_parser("compare", help="compare runs: metric with bootstrap CI, paired differences, tied ranks",
                         description=(
        "Scores every run on the test records they all predicted (predictions/<split>.npz), with a bootstrap "
        "interval per run, the paired bootstrap difference to the best run, and tied-rank groups (a run not "
        "significantly worse than its group's best shares its rank). Prints a markdown table; --out also writes "
        "comparison.md, comparison.csv and, with --plots, ROC/PR curves per class of each run."))
    cmp.add_argument("runs", nargs="+", help="run folders (output.output_dir of finished recipes)")
    cmp.add_argument("--metric", default=None,
                     help="metric to compare (default: the first run's primary metric), e.g. macro_auroc, macro_f1, "
                          "kappa, per_class_auroc/AF")
    cmp.add_argument("--split", default="test", choices=["test", "validation"], help="which predictions (default test)")
    cmp.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    cmp.add_argument("--level", type=float, default=0.95, help="confidence level (default 0.95)")
    cmp.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    cmp.add_argument("--out", default=None, help="folder for comparison.md / comparison.csv (and plots)")
    cmp.add_argument("--plots", action="store_true", help="with --out: ROC and PR curves per class of each run (PNG)")
    cmp.set_defaults(func=_cmd_compare)

    m = sub.add_parser("models", help="list the released pretrained variants ecg_adapt can load")
    m.add_argument("--family", help="only this family")
    m.add_argument("--json", action="store_true", help="print JSON")
    m.set_defaults(func=_cmd_models)

    a = sub.add_parser("methods", help="list the adaptation methods and which backbone families each one supports",
                       description="Every adaptation method (adaptation.method in a recipe), what it trains, whether it "
                                   "merges, and a family x method table; an unsupported pair says why.")
    a.add_argument("--json", action="store_true", help="print the family x method matrix as JSON")
    a.set_defaults(func=_cmd_methods)
    return p


def main(argv: list[str] | None = None) -> int:
    import warnings

    # peft calls a transformers property that transformers 5 deprecates; nothing for a user to act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except Exception as e:
        if not isinstance(e, _user_errors()):
            raise
        print(f"ecg-adapt: error: {e}", file=sys.stderr)
        return 2


def _user_errors() -> tuple[type[Exception], ...]:
    """The exceptions a user fixes by changing their input: printed as one line, without a traceback.

    Read from the modules already imported rather than imported here: importing the hub or the recipe module
    would load torch, transformers and peft for every command (``--help`` included), and a command that never
    imported them cannot raise their exceptions.
    """
    errors: list[type[Exception]] = [FileNotFoundError, FileExistsError]
    for module, name in (
        ("ecg_adapt.training.recipe", "RecipeError"),
        ("ecg_adapt.hub.errors", "HubError"),
        ("ecg_adapt.training.checkpoints", "CheckpointError"),
        ("ecg_adapt.training.checkpoints", "TrainingDivergedError"),
        ("ecg_adapt.adaptation.core", "IncompleteModelError"),
    ):
        loaded = sys.modules.get(module)
        if loaded is not None:
            errors.append(getattr(loaded, name))
    return tuple(errors)


if __name__ == "__main__":
    sys.exit(main())
