"""Sweeps: a grid of ordinary runs (backbones x methods x train fractions x seeds x tasks), resumable, one table.

A sweep file names a base recipe, an output root and a grid over recipe keys in dotted form::

    recipe: hubert_ecg_lora_ptbxl_superdiagnostic   # a recipe file, or a shipped recipe's name
    output_root: runs/label_efficiency
    grid:
      model.model_name_or_path: [Edoardo-BS/hubert-ecg-small, PKUDigitalHealth/ECGFounder]
      adaptation.method: [linear_probe, lora]
      data.train_fraction: [0.01, 0.1, 1.0]
      training.seed: [0, 1, 2]
    overrides:                                       # optional, applied to every cell
      training.num_train_epochs: 5

Every cell is the base recipe with the fixed ``overrides``, then the cell's grid values (the same
``section.key=value`` overrides as ``ecg-adapt train``), trained by :func:`ecg_adapt.training.train` into
``<output_root>/<cell name>``. The cell name lists the grid values (``model-hubert-ecg-small__method-lora__...``).

Resuming is per cell: a cell whose folder holds a finished run of the same recipe is skipped; one holding complete
checkpoints continues from the newest (``training.resume_from_checkpoint=latest``); one holding only leftovers of
a run killed before its first checkpoint starts over. A failing cell is reported and the sweep goes on; the
command exits non-zero at the end if any cell failed. After every cell ``sweep_results.csv`` / ``.md`` are
rewritten (atomically), and ``sweep.png`` (metric vs train fraction) at the end when matplotlib is installed.

Under ``accelerate launch -m ecg_adapt.cli sweep SWEEP.yaml`` every cell runs in the same launched processes; only
the main process writes the tables and the plot.

The grid and its table are written here rather than with a sweeper library (Hydra's multirun, W&B sweeps): those
launch one process per cell and know nothing of ``metrics.json``, checkpoints or resuming a half-finished cell.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import logging
import math
import re
import traceback
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..utils import atomic_write, atomic_write_text, did_you_mean
from .recipe import Recipe, RecipeError

logger = logging.getLogger("ecg_adapt.sweep")

RESULTS_CSV = "sweep_results.csv"
RESULTS_MD = "sweep_results.md"
PLOT_PNG = "sweep.png"
_TOP_KEYS = ("recipe", "output_root", "grid", "overrides")
# Keys the sweep sets itself for every cell.
_RESERVED = ("output.output_dir", "training.resume_from_checkpoint", "output.overwrite_output_dir")
# Short labels of the usual grid keys in cell names; any other key is named by its last part.
_LABELS = {
    "model.model_name_or_path": "model",
    "adaptation.method": "method",
    "data.train_fraction": "frac",
    "data.train_fraction_seed": "fracseed",
    "training.seed": "seed",
    "task.name": "task",
    "data.source": "source",
}
# Primary metric of runs whose metrics.json predates the "primary_metric" field (the order `ecg-adapt train` uses).
_METRIC_FALLBACK = ("macro_auroc", "challenge_score", "macro_f1", "kappa", "accuracy", "mae")


class SweepError(RecipeError):
    """A sweep file that cannot be run; the message names the file and the offending key."""


@dataclass
class Cell:
    """One run of a sweep: its grid values, name and output folder."""

    name: str
    values: dict[str, Any]
    output_dir: Path

    def overrides(self) -> list[str]:
        """The cell's grid values as ``section.key=value`` overrides."""
        return [f"{k}={_yaml_value(v)}" for k, v in self.values.items()]


@dataclass
class SweepSpec:
    """A parsed sweep file (see the module doc). Build with :meth:`from_yaml` or :meth:`from_dict`."""

    recipe: str
    output_root: str
    grid: dict[str, list[Any]] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    base_dir: Path = field(default_factory=Path)
    """Folder a relative ``recipe`` path is looked up in first (the sweep file's)."""
    source: str = "sweep"
    """Where the spec came from, for error messages."""

    @classmethod
    def from_yaml(cls, path: str | Path) -> "SweepSpec":
        path = Path(path)
        if not path.is_file():
            raise SweepError(f"Sweep file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise SweepError(f"{path} is not valid YAML: {e}") from e
        return cls.from_dict(data, base_dir=path.parent, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], base_dir: str | Path = ".", source: str = "sweep") -> "SweepSpec":
        """Validate a sweep mapping: known top-level keys, grid and override keys that exist in the recipe schema,
        non-empty value lists.

        Raises:
            SweepError: naming the file and the key, with the closest known key.
        """
        if not isinstance(data, dict):
            raise SweepError(f"{source}: a sweep is a mapping with keys {list(_TOP_KEYS)}, got {type(data).__name__}")
        for k in data:
            if k not in _TOP_KEYS:
                raise SweepError(f"{source}: unknown sweep key {k!r}{did_you_mean(k, _TOP_KEYS)}; known: {list(_TOP_KEYS)}")
        for k in ("recipe", "output_root"):
            if not data.get(k) or not isinstance(data[k], str):
                raise SweepError(f"{source}: {k!r} is required (a string)")
        grid = data.get("grid") or {}
        overrides = data.get("overrides") or {}
        for what, section in (("grid", grid), ("overrides", overrides)):
            if not isinstance(section, dict):
                raise SweepError(f"{source}: {what!r} must be a mapping of dotted recipe keys, got {section!r}")
            for key in section:
                check_recipe_key(str(key), f"{source}: {what} key")
        grid_lists: dict[str, list[Any]] = {}
        for key, values in grid.items():
            values = values if isinstance(values, list) else [values]
            if not values:
                raise SweepError(f"{source}: grid key {key!r} has no values")
            if len({_yaml_value(v) for v in values}) != len(values):
                raise SweepError(f"{source}: grid key {key!r} lists a value twice: {values}")
            grid_lists[str(key)] = values
        for key in set(grid_lists) & set(overrides):
            raise SweepError(f"{source}: {key!r} is both a grid key and a fixed override")
        return cls(recipe=data["recipe"], output_root=data["output_root"], grid=grid_lists,
                   overrides={str(k): v for k, v in overrides.items()}, base_dir=Path(base_dir), source=source)

    # ------------------------------------------------------------------ cells
    def recipe_path(self) -> Path:
        """The base recipe: a file (relative to the sweep file's folder, then the working folder) or a shipped name."""
        from .catalogue import RECIPE_SUFFIX, find_recipe

        p = Path(self.recipe).expanduser()
        for candidate in ((p,) if p.is_absolute() else (self.base_dir / p, p)):
            if candidate.is_file():
                return candidate
        if len(p.parts) > 1 or self.recipe.endswith(RECIPE_SUFFIX):
            raise SweepError(f"{self.source}: base recipe {self.recipe} not found (looked in {self.base_dir} and the "
                             "working folder)")
        return find_recipe(self.recipe)

    def cells(self) -> list[Cell]:
        """Every cell of the grid, in grid order (the last key varies fastest)."""
        keys = list(self.grid)
        combos = [dict(zip(keys, vs)) for vs in itertools.product(*(self.grid[k] for k in keys))]
        names = [_cell_name(c, keys) for c in combos]
        counts: dict[str, int] = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        # Values that read the same once shortened (two backbones called "base" in different folders) get a digest
        # of the full values, so names stay unique and deterministic.
        names = [n if counts[n] == 1 else f"{n}-{_digest(c)}" for n, c in zip(names, combos)]
        root = Path(self.output_root)
        return [Cell(name=n, values=c, output_dir=root / n) for n, c in zip(names, combos)]

    def cell_recipe(self, cell: Cell) -> Recipe:
        """The resolved recipe of a cell: base recipe, fixed overrides, grid values, the cell's output folder."""
        items = [f"{k}={_yaml_value(v)}" for k, v in self.overrides.items()] + cell.overrides()
        # Where a cell goes and whether it resumes or starts over are the sweep's decisions (see cell_state), not
        # the base recipe's.
        items += [f"output.output_dir={_yaml_value(str(cell.output_dir))}", "training.resume_from_checkpoint=null",
                  "output.overwrite_output_dir=false"]
        try:
            return Recipe.from_yaml(self.recipe_path(), items)
        except SweepError:
            raise
        except RecipeError as e:
            raise SweepError(f"{self.source}: cell {cell.name}: {e}") from e


def _yaml_value(value: Any) -> str:
    """A value as the YAML text an override parses back to the same value (``'no'`` stays a string)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("...").strip()


def _short(value: Any) -> str:
    if isinstance(value, str) and ("/" in value or "\\" in value):
        value = Path(value.rstrip("/\\")).name or value  # a backbone folder or hub id: its last part
    elif isinstance(value, (list, tuple)):
        value = "+".join(_short(v) for v in value)
    elif value is None:
        value = "none"
    text = re.sub(r"[^A-Za-z0-9.+-]+", "_", str(value)).strip("_.")
    return text or "_"


def _cell_name(values: dict[str, Any], keys: Sequence[str]) -> str:
    if not keys:
        return "base"
    labels = [_LABELS.get(k, k.split(".")[-1]) for k in keys]
    if len(set(labels)) != len(labels):
        labels = [k.replace(".", "-") for k in keys]
    return "__".join(f"{_short(label)}-{_short(values[k])}" for label, k in zip(labels, keys))


def _digest(values: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _schema_keys(cls: type = Recipe, prefix: str = "") -> dict[str, bool]:
    """Every dotted recipe key -> whether it takes free sub-keys (a mapping such as ``data.source_options``)."""
    out: dict[str, bool] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(_schema_keys(tp, f"{prefix}{f.name}."))
        else:
            origin = typing.get_origin(tp)
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            mapping = tp is dict or origin is dict or tp is Any or any(a is dict or typing.get_origin(a) is dict for a in args)
            out[prefix + f.name] = mapping
    return out


def check_recipe_key(key: str, what: str = "recipe key") -> None:
    """Refuse a dotted key that no recipe has (with the closest known key), or one the sweep sets itself.

    Raises:
        SweepError: ``"<what> 'training.sed' is not a recipe key (did you mean 'training.seed'?)"``.
    """
    if key in _RESERVED:
        raise SweepError(f"{what} {key!r} is set by the sweep for every cell and cannot be chosen")
    known = _schema_keys()
    if key in known:
        return
    # sub-keys of a mapping-valued key (data.source_options.sampling_rate)
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:i])
        if known.get(head):
            return
    raise SweepError(f"{what} {key!r} is not a recipe key{did_you_mean(key, known)}; `ecg-adapt train --help` lists them")


# ---------------------------------------------------------------------------------------------- cell state
def _recipe_differences(recorded: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Keys that differ in what is trained (the keys a resume may change are ignored, as on resume)."""
    from .checkpoints import changed_keys

    # JSON round trip: tuples become lists on both sides, as in the recorded file
    return list(changed_keys(json.loads(json.dumps(recorded, default=str)), json.loads(json.dumps(wanted, default=str))))


def cell_state(recipe: Recipe) -> tuple[str, str]:
    """What a cell's folder holds: ``("done", ...)`` a finished run of this recipe, ``("stale", why)`` a finished
    run of another recipe, ``("resume", checkpoint)`` complete checkpoints, ``("restart", why)`` only leftovers
    of a killed run, ``("new", "")`` nothing."""
    from .checkpoints import CheckpointManager

    out = Path(recipe.output.output_dir)
    if (out / "metrics.json").is_file():
        recorded_file = out / "recipe.yaml"
        if not recorded_file.is_file():
            return "stale", f"{out} holds metrics.json but no recipe.yaml"
        try:
            recorded = yaml.safe_load(recorded_file.read_text()) or {}
        except yaml.YAMLError as e:
            return "stale", f"{recorded_file} is not valid YAML: {e}"
        changed = _recipe_differences(recorded, recipe.to_dict())
        if changed:
            return "stale", (f"{out} holds a finished run of another recipe (differs in {', '.join(changed[:6])}); "
                             "delete it or choose another output_root")
        return "done", ""
    ckpts = CheckpointManager(out, None, {})
    latest = ckpts.latest()
    if latest is not None:
        return "resume", latest.name
    if ckpts.has_any() or (out / "model").exists() or (out / "train.log").exists():
        return "restart", "a killed run left no complete checkpoint"
    return "new", ""


# ---------------------------------------------------------------------------------------------- results
def _primary_metric(metrics: dict[str, Any]) -> str | None:
    name = metrics.get("primary_metric")
    if name:
        return str(name)
    test = metrics.get("test") or {}
    return next((k for k in _METRIC_FALLBACK if k in test), None)


def _interval(metrics: dict[str, Any], metric: str) -> tuple[float | None, float | None]:
    """The test metric's bootstrap interval as the run recorded it (``test.ci.<metric>``: ``low``/``high``, written
    by the trainer); never computed here. ``(None, None)`` for a run without intervals (``bootstrap_resamples: 0``)."""
    entry = ((metrics.get("test") or {}).get("ci") or {}).get(metric)
    return (entry["low"], entry["high"]) if isinstance(entry, dict) else (None, None)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def result_row(spec: SweepSpec, cell: Cell, status: str, error: str = "") -> dict[str, Any]:
    """One table row: the cell, its grid values, status, and the test primary metric (with its interval if the
    run recorded one)."""
    row: dict[str, Any] = {"cell": cell.name, **{k: _yaml_value(v) for k, v in cell.values.items()}, "status": status}
    metrics: dict[str, Any] = {}
    mfile = cell.output_dir / "metrics.json"
    if status == "done" and mfile.is_file():
        metrics = json.loads(mfile.read_text())
    metric = _primary_metric(metrics) if metrics else None
    value = (metrics.get("test") or {}).get(metric) if metric else None
    low, high = _interval(metrics, metric) if metric else (None, None)
    subset = (metrics.get("data") or {}).get("train_subset") or {}
    row.update({"metric": metric or "", "test": value, "ci_low": low, "ci_high": high,
                "train_records": subset.get("records"), "global_step": metrics.get("global_step"), "error": error})
    return row


def write_results(root: str | Path, rows: list[dict[str, Any]]) -> tuple[Path, Path]:
    """Write ``sweep_results.csv`` and ``sweep_results.md`` under ``root`` (each atomically)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    csv_path = atomic_write_text(root / RESULTS_CSV, buf.getvalue())
    md_cols = [c for c in columns if c != "error"]
    lines = ["| " + " | ".join(md_cols) + " |", "|" + "---|" * len(md_cols)]
    for r in rows:
        cells = [_fmt(r.get(c)).replace("|", "\\|") for c in md_cols]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in rows if r.get("error")]
    if failed:
        lines += ["", "Failed cells:", ""] + [f"- `{r['cell']}`: {r['error'].splitlines()[0]}" for r in failed]
    md_path = atomic_write_text(root / RESULTS_MD, "\n".join(lines) + "\n")
    return csv_path, md_path


def read_results(root: str | Path) -> list[dict[str, str]]:
    """The rows of ``<root>/sweep_results.csv``."""
    path = Path(root) / RESULTS_CSV
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (run the sweep first)")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


Curves = dict[tuple[str, str, str], dict[float, list[float]]]


def sweep_curves(root: str | Path, metric: str | None = None) -> tuple[str, Curves]:
    """The points of a label-efficiency plot: ``(metric, {(backbone, method, task): {train fraction: [value per
    seed]}})``; the task is part of the key so that a grid over tasks never averages two tasks into one point.

    Reads every finished cell listed in ``<root>/sweep_results.csv`` (its ``metrics.json`` and ``recipe.yaml``);
    ``metric`` defaults to the runs' primary metric.

    Raises:
        ValueError: no finished cell reports the metric.
    """
    root = Path(root)
    points: Curves = {}
    for row in read_results(root):
        mfile = root / row["cell"] / "metrics.json"
        if row.get("status") != "done" or not mfile.is_file():
            continue
        metrics = json.loads(mfile.read_text())
        name = metric or _primary_metric(metrics)
        value = (metrics.get("test") or {}).get(name) if name else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        metric = name
        recipe = yaml.safe_load((root / row["cell"] / "recipe.yaml").read_text()) or {}
        backbone = _short((recipe.get("model") or {}).get("model_name_or_path"))
        method = str((recipe.get("adaptation") or {}).get("method"))
        fraction = float((recipe.get("data") or {}).get("train_fraction", 1.0))
        task = f"{(recipe.get('data') or {}).get('source', '')}/{(recipe.get('task') or {}).get('name', '')}"
        points.setdefault((backbone, method, task), {}).setdefault(fraction, []).append(float(value))
    if not points or metric is None:
        raise ValueError(f"no finished cell under {root} reports {metric or 'a primary metric'}")
    return metric, points


def plot_sweep(root: str | Path, out_png: str | Path, metric: str | None = None) -> Path:
    """Metric vs train fraction, one line per (backbone, method) (and task, when the sweep has several): the mean
    over seeds and a min-max band.

    The points are :func:`sweep_curves`'s. Needs matplotlib (extra ``plots``), imported here only.

    Raises:
        ImportError: matplotlib is not installed.
        ValueError: no finished cell reports the metric.
    """
    metric, points = sweep_curves(root, metric)
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    fractions: set[float] = set()
    several_tasks = len({task for _, _, task in points}) > 1
    for (backbone, method, task), by_fraction in sorted(points.items()):
        xs = np.array(sorted(by_fraction))
        fractions.update(xs.tolist())
        values = [np.array(by_fraction[x]) for x in xs]
        (line,) = ax.plot(xs, [v.mean() for v in values], marker="o", label=f"{backbone} / {method}" + (f" / {task}" if several_tasks else ""))
        ax.fill_between(xs, [v.min() for v in values], [v.max() for v in values], color=line.get_color(), alpha=0.2)
    ax.set_xscale("log")
    ticks = sorted(fractions)
    ax.set_xticks(ticks, [f"{100 * x:g}%" for x in ticks])
    ax.minorticks_off()
    ax.set_xlabel("training records used (fraction of the training split)")
    ax.set_ylabel(f"test {metric}")
    ax.set_title("label efficiency (mean over seeds, min-max band)" + ("" if several_tasks else f"\n{next(iter(points))[2]}"))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------- running
@dataclass
class SweepResult:
    """What a sweep did: the cells trained, skipped (already finished) and failed (cell name, error)."""

    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    is_main_process: bool = True
    """Whether this process is the launch's main one (the one that wrote the tables and reports)."""


def plan(spec: SweepSpec) -> list[tuple[Cell, Recipe]]:
    """Every cell with its resolved recipe; any invalid cell fails here, before anything runs.

    Raises:
        SweepError: an invalid cell recipe, or one that would push to the Hub (every cell would push to the same
            repo; push the cells you choose afterwards with ``ecg-adapt push``).
    """
    planned = [(cell, spec.cell_recipe(cell)) for cell in spec.cells()]
    for cell, recipe in planned:
        if recipe.hub.push_to_hub:
            raise SweepError(f"{spec.source}: cell {cell.name} has hub.push_to_hub=true; a sweep does not push (every "
                             "cell would go to the same repo): set it to false and push chosen cells with ecg-adapt push")
    return planned


def describe(spec: SweepSpec) -> str:
    """The ``--dry-run`` listing: one line per cell with its state and output folder."""
    planned = plan(spec)
    lines = [f"{len(planned)} cells, base recipe {spec.recipe_path()}, output root {spec.output_root}"]
    for cell, recipe in planned:
        state, detail = cell_state(recipe)
        values = " ".join(f"{k}={_yaml_value(v)}" for k, v in cell.values.items())
        lines.append(f"  {cell.name}  [{state}{': ' + detail if detail else ''}]  {values}")
    return "\n".join(lines)


def _reset_accelerate_state() -> None:
    """Let the next cell's ``Accelerator`` take its own mixed precision and gradient accumulation.

    accelerate keeps one process-wide ``AcceleratorState``/``GradientState`` and refuses a second Accelerator that
    differs from the first; its launcher never runs two trainings in one process, so it offers no public reset.
    The ``PartialState`` (devices, process group) is kept: every cell runs in the same launched processes.
    """
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def run_sweep(spec: SweepSpec, train_fn: Callable[..., dict[str, Any]] | None = None) -> SweepResult:
    """Run every cell not finished yet, in order; write the tables after each and the plot at the end.

    Args:
        spec: the sweep.
        train_fn: what trains a cell (default :func:`ecg_adapt.training.train`); called as
            ``train_fn(recipe, keep_process_group=True)``.

    Every recipe is resolved before the first cell runs, so a typo fails in seconds. A cell that raises is
    recorded (name, error) and the sweep goes on.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    if train_fn is None:
        from .trainer import train as train_fn
    planned = plan(spec)
    # The launcher's processes, set up as the cells' Accelerator would: a bare PartialState() ignores
    # ACCELERATE_USE_CPU (only AcceleratorState reads it), and multi-process CPU runs would each go solo.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    say = logger.info if state.is_main_process else logger.debug  # one progress line per cell, not one per rank
    root = Path(spec.output_root)
    result = SweepResult(is_main_process=state.is_main_process)
    rows: dict[str, dict[str, Any]] = {}
    for cell, recipe in planned:
        status, detail = cell_state(recipe)
        rows[cell.name] = result_row(spec, cell, "done" if status == "done" else "pending")
    if state.is_main_process:
        write_results(root, list(rows.values()))
    for i, (cell, recipe) in enumerate(planned, 1):
        status, detail = cell_state(recipe)
        state.wait_for_everyone()  # every rank has read the folder before any rank writes to it
        if status == "done":
            say("[%d/%d] %s: finished earlier, skipped", i, len(planned), cell.name)
            result.skipped.append(cell.name)
            continue
        try:
            if status == "stale":
                raise SweepError(detail)
            if status == "resume":
                say("[%d/%d] %s: resuming from %s", i, len(planned), cell.name, detail)
                recipe = dataclasses.replace(recipe, training=dataclasses.replace(recipe.training, resume_from_checkpoint="latest"))
            elif status == "restart":
                say("[%d/%d] %s: %s; starting it over", i, len(planned), cell.name, detail)
                recipe = dataclasses.replace(recipe, output=dataclasses.replace(recipe.output, overwrite_output_dir=True))
            else:
                say("[%d/%d] %s: training", i, len(planned), cell.name)
            _reset_accelerate_state()
            train_fn(recipe, keep_process_group=True)
        except Exception as e:  # noqa: BLE001 - a failing cell must not stop the sweep; it is reported
            logger.error("[%d/%d] %s failed: %s", i, len(planned), cell.name, e)
            logger.debug("%s", traceback.format_exc())
            result.failed.append((cell.name, f"{type(e).__name__}: {e}"))
            rows[cell.name] = result_row(spec, cell, "failed", f"{type(e).__name__}: {e}")
        else:
            result.trained.append(cell.name)
            rows[cell.name] = result_row(spec, cell, "done")
        if state.is_main_process:
            write_results(root, list(rows.values()))
    result.rows = list(rows.values())
    if state.is_main_process:
        try:
            plot_sweep(root, root / PLOT_PNG)
        except ImportError:
            logger.info("matplotlib is not installed (extra [plots]): no %s", PLOT_PNG)
        except ValueError as e:
            logger.info("no plot: %s", e)
    state.wait_for_everyone()
    return result


def end_sweep() -> None:
    """Tear the process group down once the last cell ran (cells keep it up for the next one)."""
    from accelerate import PartialState

    PartialState().destroy_process_group()


__all__ = [
    "Cell", "SweepError", "SweepResult", "SweepSpec", "cell_state", "check_recipe_key", "describe", "end_sweep", "plan",
    "plot_sweep", "read_results", "result_row", "run_sweep", "sweep_curves", "write_results",
]
