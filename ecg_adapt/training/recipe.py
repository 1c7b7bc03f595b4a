"""Recipes: one YAML file per experiment, with sections ``model``, ``adaptation``, ``data``, ``task``,
``training``, ``output`` and (optional) ``hub``.

Names follow ``transformers.TrainingArguments`` (``learning_rate``, ``per_device_train_batch_size``,
``num_train_epochs``, ``gradient_accumulation_steps`` ...) and peft (``r``, ``target_modules``, ``use_dora`` ...) wherever
the concept exists there. Hardware (devices, processes, mixed precision defaults) stays in accelerate's own
config. Any key can be overridden on the command line as ``section.key=value``.

Validation is strict: an unknown key or a value of the wrong type is an error that names the key (and
suggests the closest known one). PyYAML reads ``1e-3`` as a string; float fields accept it.

``HfArgumentParser`` only reads flat files, hence this small typed loader for sectioned recipes.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from ..adaptation.config import AdaptationConfig  # the torch-free module: `train --help` reads this schema
from ..utils import did_you_mean
from ..processing.quality import QualityThresholds


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the offending key."""


@dataclass
class ModelArgs:
    """``model:`` — the backbone and the head."""

    model_name_or_path: str | None = None
    """What ``load_backbone`` takes: a registry name (``ecgfounder-12lead``; ``ecg-adapt models`` lists them), an
    original hub repository (``PKUDigitalHealth/ECGFounder``), a local original release file, a converted folder, or
    a hub id in ecg_adapt's format. ``null`` is only for the offline demo: ``ecg-adapt demo`` /
    ``ecg-adapt train`` then build a small random-weight HuBERT-ECG-shaped backbone (``ecg_adapt.demo``)."""
    revision: str | None = None
    """Branch, tag or commit of a hub backbone."""
    classifier_dropout: float = 0.1
    """Dropout before the classification head."""
    layerdrop: float = 0.0
    """LayerDrop while fine-tuning (HuBERT-ECG's original default is 0.1; 0 keeps DDP free of unused parameters)."""
    pooling: Literal["mean", "attention"] = "mean"
    """The head: ``mean`` (pooled features into a linear layer) or ``attention`` (a learnable query attends over
    the frames, the ECG FM benchmark's attention probe; ``ecg_adapt.models.heads.AttentionPoolingHead``)."""
    sequence_model: Literal["gru", "transformer", "none"] | None = None
    """Score each window from its neighbours (sleep epochs, apnea minutes): the window classifier inside an
    ``ECGSequenceClassifier`` (``ecg_adapt.models.sequence``) whose ``gru`` (bidirectional) or ``transformer`` runs
    over the pooled features of consecutive windows; ``none`` looks at the centre window only (the same input
    format, as a baseline). ``null``: a plain window classifier. Needs a source of long recordings (units
    ``<record>/<index>``); the adaptation method applies to the backbone inside, the sequence model always trains."""
    context_epochs: int | None = None
    """Epochs (units) of context on each side of every window, with ``sequence_model`` (``null``: 2). A window sees
    ``context_epochs * W`` windows on each side, ``W`` being the windows per epoch (3 for a 30 s epoch and a 10 s
    backbone window), so the input holds ``2 * context_epochs * W + 1`` windows."""
    sequence_hidden_size: int = 128
    """Width of the sequence model (GRU hidden size per direction; transformer ``d_model``)."""
    sequence_num_layers: int = 1
    """GRU or transformer layers of the sequence model."""
    sequence_num_heads: int = 4
    """Attention heads of a ``transformer`` sequence model (must divide ``sequence_hidden_size``)."""
    sequence_dropout: float = 0.1
    """Dropout inside the sequence model."""


@dataclass
class DataArgs:
    """``data:`` — where the records are and how they are cut."""

    source: str = "ptbxl"
    """A registered source: ``ptbxl``, ``cinc2021``, ``cpsc2018``, ``mitdb``, ``apnea_ecg``, ``cpsc2021``,
    ``slpdb``, ``shhs``, ``mesa`` (``ecg_adapt.data.SOURCES``)."""
    path: str | None = None
    """Dataset folder. ``null`` is only for the offline demo (source ``ptbxl``): ``ecg-adapt demo`` / ``ecg-adapt
    train`` then synthesise a PTB-XL-layout dataset (``ecg_adapt.demo``) and the run says so."""
    source_options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the source class, e.g. ``{sampling_rate: 500}`` (ptbxl), ``{window_seconds: 10}``
    (mitdb), ``{year: 2021, holdout_source: ...}`` (cinc2021); the demo also reads ``synthetic_records`` and
    ``synthetic_dir`` here."""
    augmentations: list[dict[str, Any]] = field(default_factory=list)
    """Training-time augmentations, e.g. ``[{name: gaussian_noise, p: 0.5}]`` (off at evaluation)."""
    windows: Literal["all", "first"] = "all"
    """``all``: every window of a record (predictions averaged per record); ``first``: only the first."""
    missing_leads: Literal["error", "zero", "mask"] = "error"
    """Leads the backbone expects but a record lacks: fail, feed zeros, or zeros with a masked attention."""
    cache_dir: str | None = None
    """Window cache folder (default ``$ECG_ADAPT_CACHE`` or ``~/.cache/ecg_adapt``)."""
    on_error: Literal["skip", "raise"] = "skip"
    """A record that cannot be used is skipped and listed in the cache's ``report.json`` (``raise``: stop)."""
    quality: QualityThresholds = field(default_factory=QualityThresholds)
    """When a record is too poor to train on: ``{flat_lead_max_ptp_mv: 0.0, max_flat_leads: 0}`` skips records with
    a flat lead or an all-zero signal (``max_flat_leads: null`` keeps them)."""
    max_records_per_split: int | None = None
    """Debug/smoke runs: keep at most this many records per split."""
    train_fraction: float = 1.0
    """Label-efficiency runs: train on this fraction of the training split, in (0, 1] (validation and test are
    untouched). The subset is stratified by label, seeded by ``train_fraction_seed``, and nested: for one seed the
    10% subset lies inside the 20% one (``ecg_adapt.tasks.subset``); taken after ``max_records_per_split``."""
    train_fraction_seed: int = 0
    """Seed of the ``train_fraction`` subset (independent of ``training.seed``, which drives initialisation and
    data order)."""


#: Keys that left the schema -> where they live now (an old recipe gets an error that says so).
MOVED_KEYS: dict[str, str] = {
    "data.sampling_rate": "data.source_options.sampling_rate (a PTB-XL option: 100 or 500)",
    "data.synthetic_records": "data.source_options.synthetic_records (read by the demo when data.path is null)",
    "data.synthetic_dir": "data.source_options.synthetic_dir (read by the demo when data.path is null)",
    "model.embedded_backbone": ("ecg_adapt.demo.EMBEDDED_BACKBONE (the demo's backbone is no longer configured by "
                                "recipes; write your own with ecg_adapt.demo.write_embedded_backbone and give its "
                                "folder as model.model_name_or_path)"),
}


@dataclass
class TaskArgs:
    """``task:`` — which label scheme or target of the source."""

    name: str = "superdiagnostic"
    """A label scheme of the source (``superdiagnostic``, ``rhythm``, ... for PTB-XL; ``scored`` for CinC), or a
    target: ``age`` (regression, years), ``sex`` (binary: one logit, positive class ``female``); for PTB-XL also
    any numeric column of ``ptbxl_database.csv`` (``height``, ``weight``), several joined by ``+`` (``age+weight``:
    one output per target). Records without the target's value are masked out of the loss and the metrics and
    counted in ``metrics.json`` (regression), or left out of the task and counted (binary)."""
    regression_loss: Literal["mse", "l1"] | None = None
    """Loss of a regression target (``null``: ``mse``); an error for a classification task."""
    standardize_targets: bool | None = None
    """Regression: train on targets standardised with the training split's mean and std, saved in the model's
    config so its outputs come back in the target's unit (``null``: true); an error for a classification task."""


@dataclass
class TrainingArgs:
    """``training:`` — the loop. Names and meanings as in ``transformers.TrainingArguments``."""

    learning_rate: float = 1e-3
    head_learning_rate: float | None = None
    """Learning rate of the new classification head (``null``: ``learning_rate``). A fresh head usually needs
    a larger rate than LoRA matrices or pretrained weights."""
    weight_decay: float = 0.01
    per_device_train_batch_size: int = 32
    per_device_eval_batch_size: int = 64
    num_train_epochs: float = 10
    max_steps: int = -1
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.05
    lr_scheduler_type: str = "cosine"
    max_grad_norm: float = 1.0
    seed: int = 42
    bf16: bool = False
    """Mixed precision bf16; when false, accelerate's own config/flags decide."""
    logging_steps: int = 10
    eval_strategy: Literal["epoch", "steps", "no"] = "epoch"
    """When to evaluate on the validation split (and select a checkpoint): every epoch, every ``eval_steps``, or
    never (then the last step's model is reported, and ``metrics.json`` says it was not selected)."""
    eval_steps: int = 500
    load_best_model_at_end: bool = True
    """Report and save the model of the best validation evaluation (``metric_for_best_model``), not the last
    step's. On by default, unlike transformers: a test number from an unselected checkpoint is not a result."""
    metric_for_best_model: str | None = None
    """A validation metric (``loss``, ``macro_auroc``, ``kappa``, ...; an ``eval_`` prefix is accepted);
    ``null``: the task's primary metric."""
    greater_is_better: bool | None = None
    """``null``: from the metric: false for losses and regression errors (``loss``, ``mae``, ``rmse``), true
    otherwise (transformers' rule for ``loss``, extended to the errors that are also lower-is-better)."""
    early_stopping_patience: int | None = None
    """Stop after this many evaluations without improvement of ``metric_for_best_model`` (``null``: never)."""
    early_stopping_threshold: float = 0.0
    """The least change of the metric that counts as an improvement."""
    bootstrap_resamples: int = 1000
    """Bootstrap resamples for the test metrics' confidence intervals (record-level, seeded by ``seed``;
    0 disables them)."""
    confidence_level: float = 0.95
    save_strategy: Literal["epoch", "steps", "no"] = "epoch"
    save_steps: int = 500
    save_total_limit: int | None = 2
    resume_from_checkpoint: str | None = None
    """``latest`` or a checkpoint folder (``<output_dir>/checkpoints/checkpoint_N``)."""
    report_to: list[str] = field(default_factory=list)
    """accelerate trackers, e.g. ``[tensorboard]``."""
    dataloader_num_workers: int = 0
    eval_aggregation: Literal["mean", "max"] = "mean"
    gradient_checkpointing: bool = False
    embedding_cache: bool = True
    """Frozen-backbone methods encode each window once and train the head on cached embeddings
    (``linear_probe`` without ``data.augmentations``; see :mod:`ecg_adapt.training.embeddings`). Same result as
    re-running the backbone every epoch, many times faster; ``false`` re-encodes every epoch."""
    probe: Literal["head", "logistic_regression"] = "head"
    """What learns on a frozen backbone's features: ``head`` (the model's linear or attention head, trained by
    this loop) or ``logistic_regression`` (scikit-learn ``LogisticRegression`` on the cached pooled embeddings,
    one-vs-rest for multi-label, standardised features, ``C`` chosen on validation from ``logistic_regression_c``;
    the fit is folded into the linear head, so the saved model is an ordinary classifier). Needs
    ``adaptation.method: linear_probe``, ``model.pooling: mean``, ``embedding_cache: true``, no augmentations and a
    classification task; the epoch/step settings are then unused."""
    logistic_regression_c: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0, 10.0])
    """The inverse regularisation strengths tried by ``probe: logistic_regression`` (the best validation
    ``metric_for_best_model`` wins)."""


@dataclass
class OutputArgs:
    """``output:`` — where the run goes."""

    output_dir: str = "runs/experiment"
    overwrite_output_dir: bool = False


@dataclass
class HubArgs:
    """``hub:`` — push the finished run (names as in ``TrainingArguments``)."""

    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_private_repo: bool = False
    hub_revision: str | None = None
    base_model: str | None = None
    """Hub id of the backbone, required when the run used a local backbone folder."""
    license: str | None = None
    merged: bool = False
    """Push a merged full model instead of the adapter."""

    def __post_init__(self) -> None:
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("hub.push_to_hub needs hub.hub_model_id")


@dataclass
class Recipe:
    """A whole recipe. Build with :meth:`from_yaml` (or :meth:`from_dict`); ``to_dict`` gives the resolved form."""

    model: ModelArgs = field(default_factory=ModelArgs)
    adaptation: AdaptationConfig = field(default_factory=AdaptationConfig)
    data: DataArgs = field(default_factory=DataArgs)
    task: TaskArgs = field(default_factory=TaskArgs)
    training: TrainingArgs = field(default_factory=TrainingArgs)
    output: OutputArgs = field(default_factory=OutputArgs)
    hub: HubArgs = field(default_factory=HubArgs)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Recipe":
        if not isinstance(d, dict):
            raise RecipeError(f"A recipe is a mapping of sections, got {type(d).__name__}")
        recipe = _build(cls, d, "")
        recipe.validate()
        return recipe

    def validate(self) -> None:
        """Refuse values that type-check but cannot work (a batch size of 0, a warm-up ratio above 1, ...).

        Raises:
            RecipeError: naming the first offending key and the allowed range; raised before anything starts.
        """
        t, d, m = self.training, self.data, self.model
        checks: list[tuple[str, Any, bool, str]] = [
            ("training.per_device_train_batch_size", t.per_device_train_batch_size, t.per_device_train_batch_size >= 1, ">= 1"),
            ("training.per_device_eval_batch_size", t.per_device_eval_batch_size, t.per_device_eval_batch_size >= 1, ">= 1"),
            ("training.gradient_accumulation_steps", t.gradient_accumulation_steps, t.gradient_accumulation_steps >= 1, ">= 1"),
            ("training.logging_steps", t.logging_steps, t.logging_steps >= 1, ">= 1"),
            ("training.save_steps", t.save_steps, t.save_steps >= 1 or t.save_strategy != "steps", ">= 1 with save_strategy: steps"),
            ("training.num_train_epochs", t.num_train_epochs, t.num_train_epochs > 0 or t.max_steps > 0,
             "> 0 (or set training.max_steps > 0)"),
            ("training.max_steps", t.max_steps, t.max_steps != 0, "> 0, or -1 to use num_train_epochs"),
            ("training.warmup_ratio", t.warmup_ratio, 0.0 <= t.warmup_ratio <= 1.0, "between 0 and 1"),
            ("training.learning_rate", t.learning_rate, t.learning_rate > 0, "> 0"),
            ("training.head_learning_rate", t.head_learning_rate, t.head_learning_rate is None or t.head_learning_rate > 0,
             "> 0 (or null)"),
            ("training.weight_decay", t.weight_decay, t.weight_decay >= 0, ">= 0"),
            ("training.max_grad_norm", t.max_grad_norm, t.max_grad_norm >= 0, ">= 0 (0 disables clipping)"),
            ("training.save_total_limit", t.save_total_limit, t.save_total_limit is None or t.save_total_limit >= 1,
             ">= 1 (or null to keep every checkpoint)"),
            ("training.dataloader_num_workers", t.dataloader_num_workers, t.dataloader_num_workers >= 0, ">= 0"),
            ("training.eval_steps", t.eval_steps, t.eval_steps >= 1 or t.eval_strategy != "steps", ">= 1 with eval_strategy: steps"),
            ("training.early_stopping_patience", t.early_stopping_patience,
             t.early_stopping_patience is None or t.early_stopping_patience >= 1, ">= 1 (or null)"),
            ("training.early_stopping_patience", t.early_stopping_patience,
             t.early_stopping_patience is None or t.eval_strategy != "no", "null when eval_strategy is 'no' (nothing to stop on)"),
            ("training.early_stopping_threshold", t.early_stopping_threshold, t.early_stopping_threshold >= 0, ">= 0"),
            ("training.bootstrap_resamples", t.bootstrap_resamples, t.bootstrap_resamples >= 0, ">= 0 (0 disables intervals)"),
            ("training.confidence_level", t.confidence_level, 0.0 < t.confidence_level < 1.0, "in (0, 1), e.g. 0.95"),
            ("model.classifier_dropout", m.classifier_dropout, 0.0 <= m.classifier_dropout < 1.0, "in [0, 1)"),
            ("model.layerdrop", m.layerdrop, 0.0 <= m.layerdrop < 1.0, "in [0, 1)"),
            ("data.max_records_per_split", d.max_records_per_split,
             d.max_records_per_split is None or d.max_records_per_split >= 1, ">= 1 (or null)"),
            ("data.train_fraction", d.train_fraction, 0.0 < d.train_fraction <= 1.0, "in (0, 1]"),
        ]
        if m.sequence_model is not None:
            checks += [
                ("model.context_epochs", m.context_epochs, m.context_epochs is None or m.context_epochs >= 0, ">= 0 (or null for 2)"),
                ("model.sequence_hidden_size", m.sequence_hidden_size, m.sequence_hidden_size >= 1, ">= 1"),
                ("model.sequence_num_layers", m.sequence_num_layers, m.sequence_num_layers >= 1, ">= 1"),
                ("model.sequence_num_heads", m.sequence_num_heads,
                 m.sequence_num_heads >= 1 and (m.sequence_model != "transformer" or m.sequence_hidden_size % m.sequence_num_heads == 0),
                 f">= 1 and divide model.sequence_hidden_size ({m.sequence_hidden_size}) for a transformer"),
                ("model.sequence_dropout", m.sequence_dropout, 0.0 <= m.sequence_dropout < 1.0, "in [0, 1)"),
                ("data.source_options.context_epochs", d.source_options.get("context_epochs"),
                 not d.source_options.get("context_epochs"),
                 "0 or absent with model.sequence_model (the source would put the context into every window; the "
                 "sequence model takes its context from the neighbouring windows: set model.context_epochs instead)"),
            ]
        elif m.context_epochs is not None:
            raise RecipeError("Recipe key 'model.context_epochs' needs model.sequence_model (gru, transformer or none); "
                              "for a window that itself spans the neighbouring epochs use data.source_options.context_epochs")
        if t.probe == "logistic_regression":
            checks += [
                ("adaptation.method", self.adaptation.method, self.adaptation.method == "linear_probe",
                 "linear_probe with training.probe: logistic_regression"),
                ("model.pooling", m.pooling, m.pooling == "mean", "mean with training.probe: logistic_regression"),
                ("training.embedding_cache", t.embedding_cache, t.embedding_cache,
                 "true with training.probe: logistic_regression (it fits on the cached embeddings)"),
                ("data.augmentations", d.augmentations, not d.augmentations,
                 "empty with training.probe: logistic_regression (features are encoded once)"),
                ("training.logistic_regression_c", t.logistic_regression_c,
                 bool(t.logistic_regression_c) and all(c > 0 for c in t.logistic_regression_c), "a non-empty list of C > 0"),
            ]
        for key, value, ok, allowed in checks:
            if not ok:
                raise RecipeError(f"Recipe key {key!r} must be {allowed}, got {value!r}")

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> "Recipe":
        """Read a recipe file and apply ``section.key=value`` overrides."""
        path = Path(path)
        if not path.exists():
            raise RecipeError(f"Recipe file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise RecipeError(f"{path} is not valid YAML: {e}") from e
        for item in overrides or []:
            apply_override(data, item)
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one ``section.key=value`` override (the value is parsed as YAML) to a recipe dict."""
    if "=" not in item:
        raise RecipeError(f"Override {item!r} must look like section.key=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) < 2:
        raise RecipeError(f"Override {item!r}: name a section and a key, e.g. training.learning_rate=3e-4")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise RecipeError(f"Override {item!r}: {p} is not a section")
    node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None


def _build(cls: type, d: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in d:
        if where + k in MOVED_KEYS:
            raise RecipeError(f"Recipe key {where + k!r} has moved to {MOVED_KEYS[where + k]}")
    unknown = [k for k in d if k not in fields]
    if unknown:
        k = unknown[0]
        raise RecipeError(f"Unknown recipe key {where + k!r}{did_you_mean(k, fields)}; known keys: {sorted(fields)}")
    kwargs = {}
    for name, value in d.items():
        kwargs[name] = _coerce(value, hints[name], where + name)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise RecipeError(f"Recipe section {where.rstrip('.') or 'root'}: {e}") from e


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if value is None:
            return tp()
        if not isinstance(value, dict):
            raise RecipeError(f"Recipe key {key!r} must be a section (mapping), got {value!r}")
        return _build(tp, value, key + ".")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except RecipeError as e:
                errors.append(str(e))
        raise RecipeError(errors[0] if len(errors) == 1 else f"Recipe key {key!r}: {value!r} fits none of {tp}")
    if origin is Literal:
        if value is False and "no" in args:  # YAML 1.1 reads a bare `no` as false: `save_strategy: no` means "no"
            value = "no"
        if value not in args:
            raise RecipeError(f"Recipe key {key!r} must be one of {list(args)}, got {value!r}{did_you_mean(value, args)}")
        return value
    if tp is Any:
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"Recipe key {key!r} must be a list, got {value!r}")
        inner = args[0] if args else Any
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"Recipe key {key!r} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise RecipeError(f"Recipe key {key!r} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise RecipeError(f"Recipe key {key!r} must be an integer, got {value!r}")
        try:
            f = float(value)
        except ValueError:
            raise RecipeError(f"Recipe key {key!r} must be an integer, got {value!r}") from None
        if f != int(f):
            raise RecipeError(f"Recipe key {key!r} must be an integer, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise RecipeError(f"Recipe key {key!r} must be a number, got {value!r}")
        try:
            return float(value)  # accepts PyYAML's string '1e-3'
        except (TypeError, ValueError):
            raise RecipeError(f"Recipe key {key!r} must be a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise RecipeError(f"Recipe key {key!r} must be a string, got {value!r}")
        return str(value)
    return value


# ---------------------------------------------------------------------------------------------- schema help
def _field_docs(cls: type) -> dict[str, str]:
    """Descriptions of a dataclass's fields: the string literal under each field (attribute docstrings) and the
    ``Attributes:`` section of the class docstring. Python keeps neither at runtime in a usable form (attribute
    docstrings are dropped by the compiler), hence this small parse of the class source."""
    docs: dict[str, str] = {}
    doc = inspect.getdoc(cls) or ""
    if "Attributes:" in doc:
        block = doc.split("Attributes:", 1)[1]
        current: list[str] | None = None
        for line in block.splitlines():
            m = re.match(r"^    ([\w, ]+): (.*)$", line)
            if m:
                current = [m.group(2).strip()]
                for name in (n.strip() for n in m.group(1).split(",")):
                    docs[name] = current  # type: ignore[assignment]
            elif line.startswith("        ") and current is not None:
                current.append(line.strip())
            elif line.strip() and not line.startswith(" "):
                break  # the next docstring section
        docs = {k: " ".join(v) for k, v in docs.items()}  # type: ignore[arg-type]
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):  # no source (frozen app): types and defaults only
        return docs
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(inspect.cleandoc(nxt.value.value).split())
    return docs


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "|".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in args)}]"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value  # e.g. data.quality
    return "(required)"


def schema_help(width: int = 100) -> str:
    """Every recipe section and key with its type, default and description, generated from the dataclasses
    (what ``ecg-adapt train --help`` prints)."""
    lines = ["recipe sections and keys (type = default), from ecg_adapt.training.recipe; override any as "
             "section.key=value:"]
    hints_root = typing.get_type_hints(Recipe)
    for section in dataclasses.fields(Recipe):
        cls = hints_root[section.name]
        summary = re.sub(r"^``\w+:`` — ", "", (inspect.getdoc(cls) or "").split("\n", 1)[0])
        lines += ["", f"{section.name}:  {summary}".rstrip()]
        hints, docs = typing.get_type_hints(cls), _field_docs(cls)
        for f in dataclasses.fields(cls):
            value = _default(f)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):  # a nested section (data.quality)
                value = dataclasses.asdict(value)
            default = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
            default = default.removesuffix("\n...").removesuffix("...").strip()
            lines.append(f"  {f.name}: {_type_name(hints[f.name])} = {default}")
            if docs.get(f.name):
                lines += textwrap.wrap(docs[f.name], width, initial_indent="      ", subsequent_indent="      ",
                                       break_on_hyphens=False)
    moved = ", ".join(f"{old} -> {new.split(' ')[0]}" for old, new in MOVED_KEYS.items())
    lines += ["", f"moved keys: {moved}"]
    return "\n".join(lines)
