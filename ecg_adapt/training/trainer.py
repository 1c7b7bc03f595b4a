"""The training loop, on ``accelerate``: readable top to bottom, no hidden trainer.

One function, :func:`train`, runs a :class:`~ecg_adapt.training.recipe.Recipe`:

1. load the backbone (a folder or hub id) and its processor;
2. open the data source, pick the task, and build the window cache once
   (on the main process first, the other ranks then open it);
3. put a head on the backbone and apply the adaptation method;
4. train with gradient accumulation, clipping, a warm-up schedule, mixed precision from accelerate, and
   ``save_state`` checkpoints that ``resume_from_checkpoint`` continues from at the exact step;
5. evaluate with gathered predictions (every rank computes the same metrics), aggregate windows to records,
   tune F1 thresholds on validation and apply them to test;
6. write ``model/`` (only what was trained), ``recipe.yaml`` (resolved), ``metrics.json`` and ``train.log``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.utils import ProjectConfiguration, set_seed
from transformers import get_scheduler

from ..adaptation.core import adapt, count_parameters, save_adapted
from ..adaptation.optim import parameter_groups
from ..data.cache import WindowDataset, build_cache, make_loader
from ..data.context import ContextWindowDataset
from ..data import SOURCES, LabelledSource, open_source
from ..models.classifier import ECGClassifier
from ..models.sequence import ECGSequenceClassifier
from ..processing.augment import Augmenter, batch_generator
from ..models.registry import load_backbone, load_processor
from ..processing.processor import ECGProcessor
from ..processing.steps import Window
from ..progress import Progress, quiet_library_bars
from ..tasks.bootstrap import record_groups
from ..tasks.subset import stratified_subset
from ..tasks.task import RegressionTask, Task, per_class_summary
from ..tasks.windows import aggregate_windows
from ..utils import atomic_write_text, did_you_mean, flatten_dict
from ..evaluation.predictions import PREDICTIONS_DIR, Predictions, save_predictions
from .embeddings import EmbeddingDataset, HeadOnly, build_embedding_cache, fit_logistic_probe, model_inputs
from .checkpoints import CheckpointManager, TrainingDivergedError, check_finite_loss, prepare_output_dir
from .selection import BestTracker, load_best, save_best, selection_value
from .recipe import Recipe, RecipeError

logger = logging.getLogger("ecg_adapt.train")


@dataclass
class TrainProgress:
    """Loop position, saved with every checkpoint so a resumed run continues at the right step."""

    epoch: int = 0
    step_in_epoch: int = 0  # batches consumed in the current epoch
    global_step: int = 0  # optimiser steps
    samples_seen: int = 0  # samples seen by this rank
    best: dict[str, Any] | None = None  # BestTracker state: a resumed run keeps its best-so-far and patience
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per validation evaluation

    def state_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.__dict__.update(state)


def _setup_logging(accelerator: Accelerator, output_dir: Path) -> logging.Handler | None:
    """Log to ``train.log`` (main process) and the console; returns the file handler to remove afterwards."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger("ecg_adapt")
    root.setLevel(logging.INFO)
    fh = None
    if accelerator.is_main_process:
        fh = logging.FileHandler(output_dir / "train.log")
        fh.setFormatter(fmt)
        root.addHandler(fh)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in root.handlers):
        sh = logging.StreamHandler()
        sh.setFormatter(fmt)
        sh.setLevel(logging.INFO if accelerator.is_main_process else logging.WARNING)
        root.addHandler(sh)
    root.propagate = False  # the CLI's root handler would print every line twice
    return fh


def _configure_processor(processor: ECGProcessor, recipe: Recipe) -> ECGProcessor:
    steps = []
    for s in processor.steps:
        if s["name"] == Window.name:
            s = dict(s, mode=recipe.data.windows)
        steps.append(s)
    return ECGProcessor(processor.signal_contract, steps, missing_leads=recipe.data.missing_leads,
                        max_nan_fraction=processor.max_nan_fraction)


def _open_source(recipe: Recipe) -> LabelledSource:
    name = recipe.data.source
    if name not in SOURCES:
        raise RecipeError(f"Unknown data.source {name!r}{did_you_mean(name, SOURCES)}; available: {sorted(SOURCES)}")
    if not recipe.data.path:
        raise RecipeError("data.path is required (a null path is filled in by ecg_adapt.demo.prepare, which "
                          "`ecg-adapt demo` and `ecg-adapt train` call: the synthetic demo data)")
    opener = SOURCES[name]
    options = dict(recipe.data.source_options)
    params = inspect.signature(opener).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if "on_error" in params or takes_any:
        options.setdefault("on_error", recipe.data.on_error)
    try:
        return open_source(name, recipe.data.path, **options)
    except TypeError as e:  # an option the source class does not take: name the recipe key
        raise RecipeError(f"data.source_options for {name!r}: {e}") from e


def _task_of(source: LabelledSource, recipe: Recipe) -> Task:
    """The source's task ``task.name``, with the recipe's regression settings (an unknown name is a RecipeError
    naming ``task.name``; regression keys on a classification task are refused)."""
    t = recipe.task
    try:
        task = source.task(t.name)
    except ValueError as e:
        raise RecipeError(f"task.name: {e}") from e
    if isinstance(task, RegressionTask):
        return dataclasses.replace(task, loss=t.regression_loss or task.loss,
                                   standardize=task.standardize if t.standardize_targets is None else t.standardize_targets)
    for key in ("regression_loss", "standardize_targets"):
        if getattr(t, key) is not None:
            raise RecipeError(f"task.{key} is for regression targets, but task {task.name!r} is {task.problem_type}")
    return task


def _select_records(recipe: Recipe) -> tuple[LabelledSource, Task, dict[str, list[Any]], Any]:
    """The source, task, record ids per split (``max_records_per_split``, ``train_fraction`` applied) and label
    sets of a recipe: what the run caches and trains on (``ecg-adapt embed`` encodes the same records)."""
    source = _open_source(recipe)
    task = _task_of(source, recipe)
    split_ids = {s: source.split_ids(task, s) for s in ("train", "validation", "test")}
    if recipe.data.max_records_per_split:
        split_ids = {s: ids[: recipe.data.max_records_per_split] for s, ids in split_ids.items()}
    label_sets = source.label_sets(recipe.task.name)
    if recipe.data.train_fraction < 1.0 and split_ids["train"]:  # label efficiency: validation/test untouched
        strata = task.stratification_labels(task.encode([label_sets[i] for i in split_ids["train"]]))
        split_ids["train"] = stratified_subset(split_ids["train"], strata, recipe.data.train_fraction,
                                               recipe.data.train_fraction_seed)
        logger.info("data.train_fraction %g (seed %d): training on %d records", recipe.data.train_fraction,
                    recipe.data.train_fraction_seed, len(split_ids["train"]))
    for s, ids in split_ids.items():
        if not ids:
            raise ValueError(f"The {s} split of {source.name}/{recipe.task.name} is empty")
    return source, task, split_ids, label_sets


def embed_recipe(recipe: Recipe, progress: bool = True) -> tuple[Any, bool]:
    """Build (or open) the embedding cache a ``linear_probe`` run of ``recipe`` trains on: the window cache of
    all its splits, encoded once by its backbone with its ``model.pooling``. Returns the cache and whether it was
    built now (``False``: it existed). Used by ``ecg-adapt embed``."""
    backbone_id = recipe.model.model_name_or_path
    if not backbone_id:
        raise RecipeError("model.model_name_or_path is required to embed")
    backbone = load_backbone(backbone_id, revision=recipe.model.revision)
    processor = _configure_processor(load_processor(backbone_id, config=backbone.config, revision=recipe.model.revision), recipe)
    processor.check_compatible(backbone.config.signal_contract)
    source, task, split_ids, _ = _select_records(recipe)
    all_ids = [i for s in ("train", "validation", "test") for i in split_ids[s]]
    cache = build_cache(source, processor, all_ids, cache_dir=recipe.data.cache_dir, on_error=recipe.data.on_error,
                        progress=progress, quality=recipe.data.quality)
    model = ECGClassifier.from_backbone(backbone, task.labels, problem_type=task.problem_type, pooling=recipe.model.pooling)
    embeddings = build_embedding_cache(model, cache, processor.contract.input_shape,
                                       batch_size=recipe.training.per_device_eval_batch_size, progress=progress)
    return embeddings, bool(embeddings.built_now)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader: torch.utils.data.DataLoader,
    dataset: WindowDataset,
    task: Task,
    accelerator: Accelerator,
    aggregation: str = "mean",
) -> tuple[np.ndarray, np.ndarray, float, list[Any]]:
    """Record-level probabilities (regression: predicted values), labels, mean loss and record ids of a split,
    gathered across ranks (identical on every rank). Records without a cached window (skipped) are left out."""
    model.eval()
    probs, owners, losses = [], [], []
    for batch in loader:
        out = model(**model_inputs(batch))
        if task.problem_type == "regression":
            p = out.logits.float()  # already in the target's unit (the model un-standardises)
        else:
            p = torch.sigmoid(out.logits.float()) if task.multi_label else torch.softmax(out.logits.float(), dim=-1)
        p, owner, loss = accelerator.gather_for_metrics((p, batch["record_index"], out.loss.detach().float().reshape(1)))
        probs.append(p.cpu())
        owners.append(owner.cpu())
        losses.append(loss.cpu())
    window_probs = torch.cat(probs).numpy()
    owner = torch.cat(owners).numpy()
    record_probs = aggregate_windows(window_probs, owner, method=aggregation, n_records=dataset.n_records)
    present = np.unique(owner)
    labels = dataset.labels[present]
    return record_probs[present], labels, float(torch.cat(losses).mean()), [dataset.record_ids[i] for i in present]


def _subjects_of(source: Any, task: Task, unit_ids: list[Any]) -> list[str] | None:
    """The subject of every unit (``source.subject_of``), or its recording where the source knows no subjects;
    ``None`` for a task that is not scored per subject (:attr:`~ecg_adapt.tasks.task.ClassificationTask.scored_per_subject`)."""
    if not task.scored_per_subject:
        return None
    if hasattr(source, "subject_of"):
        return [str(source.subject_of(str(u))) for u in unit_ids]
    return record_groups(unit_ids)


def _windows_per_unit(cache: Any) -> int:
    """The most windows the processor cut from one unit (3 for a 30 s epoch and 10 s windows)."""
    window = np.asarray(cache.row_windows, dtype=np.int64)  # the window cache and the recording store both say
    return int(window.max()) + 1 if len(window) else 1


def _context_datasets(recipe: Recipe, cache: Any, split_ids: dict[str, list[Any]], task: Task,
                      label_sets: Any, input_shape: tuple[int, ...]) -> tuple[dict[str, ContextWindowDataset], int]:
    """Each split's windows with ``model.context_epochs`` epochs of neighbours on each side, and that context in
    windows (``context_epochs * W``, ``W`` windows per epoch)."""
    epochs = 2 if recipe.model.context_epochs is None else recipe.model.context_epochs
    if recipe.model.sequence_model == "none":  # the baseline looks at the centre window only: read nothing else
        if epochs:
            logger.info("model.sequence_model none reads the centre window only: model.context_epochs %d not used", epochs)
        epochs = 0
    per_unit = _windows_per_unit(cache)
    context = epochs * per_unit
    try:
        datasets = {s: ContextWindowDataset(cache, ids, task.encode([label_sets[i] for i in ids]), input_shape, context)
                    for s, ids in split_ids.items()}
    except ValueError as e:  # units that are not "<record>/<index>": not a source of long recordings
        raise RecipeError(f"model.sequence_model needs a source of long recordings whose units are "
                          f"'<record>/<index>' (e.g. slpdb, shhs, mesa, apnea_ecg): {e}") from e
    logger.info("sequence model %s: %d epoch(s) of context on each side, %d window(s) per epoch: %d windows per input",
                recipe.model.sequence_model, epochs, per_unit, 2 * context + 1)
    return datasets, context


def _sequence_model(recipe: Recipe, window: ECGClassifier, context: int, source: Any,
                    windows_per_epoch: int) -> ECGSequenceClassifier:
    """The window classifier inside an :class:`ECGSequenceClassifier`, recording how a PSG file feeds it: the
    source's ECG channel labels (in its order of preference), the contract lead they were fed as, the epoch."""
    m = recipe.model
    channels = getattr(source, "ecg_channels", None)
    return ECGSequenceClassifier.from_classifier(
        window, context=context, sequence_model=m.sequence_model, sequence_hidden_size=m.sequence_hidden_size,
        sequence_num_layers=m.sequence_num_layers, sequence_num_heads=m.sequence_num_heads,
        sequence_dropout=m.sequence_dropout,
        epoch_seconds=float(getattr(source, "epoch_seconds", None) or 30.0),
        ecg_channels=[str(c) for c in channels] if channels else None,
        ecg_lead=getattr(source, "lead_name", None), windows_per_epoch=windows_per_epoch,
    )


def _selection_summary(tr: Any, tracker: BestTracker, progress: TrainProgress, early_stopped: bool) -> dict[str, Any]:
    """What ``metrics.json`` says about which model the test numbers come from."""
    out: dict[str, Any] = {
        "metric_for_best_model": tracker.metric, "greater_is_better": tracker.greater_is_better,
        "best_value": tracker.best_value, "best_step": tracker.best_step, "best_epoch": tracker.best_epoch,
        "last_step": progress.global_step, "evaluations": len(progress.history), "early_stopped": early_stopped,
    }
    if tr.eval_strategy == "no":
        out.update(selected="last", reason="eval_strategy is 'no': the last step's model, not a selected one")
    elif not tr.load_best_model_at_end:
        out.update(selected="last", reason="load_best_model_at_end is false: the last step's model")
    elif tracker.best_step is None:
        out.update(selected="last", reason="no validation evaluation was defined (the metric was never finite)")
    else:
        out.update(selected="best", reason=f"the best validation {tracker.metric} (step {tracker.best_step})")
    return out


def _unwrap(accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """The model to save or load weights into: the classifier behind a :class:`HeadOnly` (embedding cache)."""
    m = accelerator.unwrap_model(model)
    return m.classifier_model if isinstance(m, HeadOnly) else m


def _nan(value: float | None) -> float:
    """A metric for %-formatting: ``None`` (undefined) as nan, and 0.0 kept as 0.0."""
    return float("nan") if value is None else float(value)


def train(recipe: Recipe, run_info: dict[str, str] | None = None, keep_process_group: bool = False) -> dict[str, Any]:
    """Run a recipe end to end and return the metrics written to ``metrics.json``.

    ``run_info``: facts about the run that the recipe does not show, from whoever prepared it (e.g. the demo's
    "synthetic data"); logged at the start of ``train.log`` and kept in ``metrics.json`` under ``run_info``.

    With ``hub.push_to_hub`` the finished run is pushed at the end (main process); the run is complete on
    disk before the push, so a failed push loses nothing and can be retried with ``ecg-adapt push``.

    ``keep_process_group``: leave the distributed process group up at the end (``ecg-adapt sweep`` runs its next
    cell in the same launched processes); the caller destroys it.
    """
    recipe.validate()  # a recipe built in code, not through from_dict, is checked too: before anything starts
    if not recipe.model.model_name_or_path:
        raise RecipeError("model.model_name_or_path is required (a null backbone is filled in by ecg_adapt.demo.prepare, "
                          "which `ecg-adapt demo` and `ecg-adapt train` call: the demo's random-weight backbone)")
    output_dir = Path(recipe.output.output_dir)
    if recipe.hub.push_to_hub:
        from ..hub import preflight_push

        # Fail in seconds, not after training: token, repo id and a resolvable backbone id.
        preflight_push(recipe.hub.hub_model_id, recipe.model.model_name_or_path, recipe.hub.base_model)
    handlers: list[logging.Handler] = []
    try:
        metrics = _train(recipe, handlers, dict(run_info or {}), keep_process_group)
    finally:
        for h in handlers:
            logging.getLogger("ecg_adapt").removeHandler(h)
            h.close()
    if recipe.hub.push_to_hub and metrics.get("_is_main_process"):
        from ..hub import push_to_hub

        h = recipe.hub
        url = push_to_hub(output_dir, h.hub_model_id, base_model=h.base_model, private=h.hub_private_repo,
                          revision=h.hub_revision, merged=h.merged, license=h.license)
        logger.info("pushed %s to %s", output_dir, url)
    metrics.pop("_is_main_process", None)
    return metrics


def _train(recipe: Recipe, handlers: list[logging.Handler], run_info: dict[str, str],
           keep_process_group: bool = False) -> dict[str, Any]:
    t_start = time.time()
    tr = recipe.training
    output_dir = Path(recipe.output.output_dir)
    ddp = DistributedDataParallelKwargs(find_unused_parameters=recipe.model.layerdrop > 0)
    accelerator = Accelerator(
        gradient_accumulation_steps=tr.gradient_accumulation_steps,
        mixed_precision="bf16" if tr.bf16 else None,
        log_with=tr.report_to or None,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir),
            logging_dir=str(output_dir / "logs"),
            # Naming, rotation and completion markers are CheckpointManager's (accelerate deletes before saving).
            automatic_checkpoint_naming=False,
        ),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=[ddp],
    )
    resume = tr.resume_from_checkpoint
    ckpts = CheckpointManager(output_dir, tr.save_total_limit, recipe.to_dict())
    if accelerator.is_main_process:
        prepare_output_dir(output_dir, ckpts, resume=resume, overwrite=recipe.output.overwrite_output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    quiet_library_bars()  # off a terminal, transformers' own save/download bars would be carriage-return noise
    fh = _setup_logging(accelerator, output_dir)
    if fh is not None:
        handlers.append(fh)
    set_seed(tr.seed)
    for key, note in run_info.items():
        logger.warning("run info: %s: %s", key, note)
    logger.info("distributed: %s, %d process(es), device %s, mixed precision %s", accelerator.distributed_type,
                accelerator.num_processes, accelerator.device, accelerator.mixed_precision)

    # 1. backbone and processor
    backbone_id = recipe.model.model_name_or_path
    backbone = load_backbone(backbone_id, revision=recipe.model.revision)
    processor = _configure_processor(load_processor(backbone_id, config=backbone.config, revision=recipe.model.revision), recipe)
    processor.check_compatible(backbone.config.signal_contract)
    contract = processor.contract
    try:  # a bad augmentation config fails here, before any data work
        augmenter = Augmenter.from_config(recipe.data.augmentations, contract)
    except (ValueError, TypeError) as e:
        raise RecipeError(f"data.augmentations: {e}") from e
    if augmenter.steps:
        logger.info("training augmentations: %s", augmenter.config())
    logger.info("backbone %s (%s); input contract: %s", backbone_id, backbone.config.model_type, contract.describe())

    # 2. data, task, cache
    source, task, split_ids, label_sets = _select_records(recipe)
    all_ids = [i for s in ("train", "validation", "test") for i in split_ids[s]]
    with accelerator.main_process_first():
        cache = build_cache(source, processor, all_ids, cache_dir=recipe.data.cache_dir, on_error=recipe.data.on_error,
                            progress=accelerator.is_local_main_process, quality=recipe.data.quality)
    context = None
    if recipe.model.sequence_model is not None:  # the model sees each window with its neighbours
        datasets, context = _context_datasets(recipe, cache, split_ids, task, label_sets, contract.input_shape)
    else:
        datasets = {
            s: WindowDataset(cache, ids, task.encode([label_sets[i] for i in ids]), contract.input_shape)
            for s, ids in split_ids.items()
        }
    source_report = getattr(source, "report", None)  # labels/annotations problems found by the source
    if source_report is not None:
        source_report.log()
    for s, ds in datasets.items():
        logger.info("%s: %d records, %d windows%s", s, ds.n_records - len(ds.missing_records), len(ds),
                    f" ({len(ds.missing_records)} skipped, see cache report)" if ds.missing_records else "")
    train_loader = make_loader(datasets["train"], tr.per_device_train_batch_size, shuffle=True, seed=tr.seed,
                               num_workers=tr.dataloader_num_workers)
    eval_loaders = {s: make_loader(datasets[s], tr.per_device_eval_batch_size, shuffle=False,
                                   num_workers=tr.dataloader_num_workers) for s in ("validation", "test")}

    # 3. model and adaptation
    # Building a cache may draw random numbers (reusing one does not): seed again, so the head's initialisation
    # and every draw after it are the same whether or not the cache already existed.
    set_seed(tr.seed)
    model = ECGClassifier.from_backbone(
        backbone, task.labels, problem_type=task.problem_type,
        classifier_dropout=recipe.model.classifier_dropout, backbone_layerdrop=recipe.model.layerdrop,
        pooling=recipe.model.pooling, **task.head_config(datasets["train"].labels),
    )
    if tr.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if context is not None:
        model = _sequence_model(recipe, model, context, source, _windows_per_unit(cache))
    model = adapt(model, recipe.adaptation)
    params = count_parameters(model)

    # Parameter groups: the fresh head at its own rate, layer-wise decay below the top block, weight decay only
    # on weight matrices (see ecg_adapt.adaptation.optim).
    optimizer = torch.optim.AdamW(
        parameter_groups(model, learning_rate=tr.learning_rate, head_learning_rate=tr.head_learning_rate,
                         weight_decay=tr.weight_decay, layerwise_lr_decay=recipe.adaptation.layerwise_lr_decay),
        lr=tr.learning_rate,
    )
    for g in optimizer.param_groups:
        logger.debug("param group %s: %d tensors, lr %.3g, weight decay %g", g["name"], len(g["params"]), g["lr"],
                     g["weight_decay"])
    steps_per_epoch = math.ceil(math.ceil(len(datasets["train"]) / (tr.per_device_train_batch_size * accelerator.num_processes))
                                / tr.gradient_accumulation_steps)
    total_steps = tr.max_steps if tr.max_steps > 0 else math.ceil(tr.num_train_epochs * steps_per_epoch)
    num_epochs = math.ceil(total_steps / max(steps_per_epoch, 1))
    scheduler = get_scheduler(tr.lr_scheduler_type, optimizer, num_warmup_steps=int(tr.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    # Frozen backbone, head only, no augmentation: encode each window once and train the head on the features.
    if tr.embedding_cache and recipe.adaptation.method == "linear_probe" and not augmenter.steps and context is None:
        with accelerator.main_process_first():
            embeddings = build_embedding_cache(model, cache, contract.input_shape, batch_size=tr.per_device_eval_batch_size,
                                               device=accelerator.device, progress=accelerator.is_local_main_process)
        logger.info("training.embedding_cache: the head trains on cached %s-pooled features (%s)",
                    model.config.pooling, embeddings.path)
        emb_sets = {s: EmbeddingDataset(embeddings, ds) for s, ds in datasets.items()}
        train_loader = make_loader(emb_sets["train"], tr.per_device_train_batch_size, shuffle=True, seed=tr.seed,
                                   num_workers=tr.dataloader_num_workers)
        eval_loaders = {s: make_loader(emb_sets[s], tr.per_device_eval_batch_size, shuffle=False,
                                       num_workers=tr.dataloader_num_workers) for s in ("validation", "test")}
        model = HeadOnly(model)
    model, optimizer, train_loader, scheduler, val_loader, test_loader = accelerator.prepare(
        model, optimizer, train_loader, scheduler, eval_loaders["validation"], eval_loaders["test"]
    )
    # Not register_for_checkpointing: accelerate would pickle it; CheckpointManager stores it as JSON.
    progress = TrainProgress()
    if tr.report_to:
        accelerator.init_trackers("ecg_adapt", config={k: str(v) for k, v in flatten_dict(recipe.to_dict()).items()})

    # 4. resume
    if resume:
        ckpt = ckpts.resolve(resume)
        ckpts.load(accelerator, ckpt, progress)
        logger.info("resumed from %s at epoch %d, step %d", ckpt, progress.epoch, progress.global_step)

    # 5. loop
    # A bar on a terminal; plain lines (also in train.log) every logging_steps or 30 s when piped or redirected.
    bar = Progress(total_steps, "training", "step", initial=progress.global_step, every_n=tr.logging_steps,
                   logger=logger, disable=not accelerator.is_local_main_process)
    t_loop, samples_at_start = time.time(), progress.samples_seen
    running, n_running = 0.0, 0
    done = progress.global_step >= total_steps
    metric_name = (tr.metric_for_best_model or task.primary_metric).removeprefix("eval_")
    tracker = (BestTracker.from_dict(progress.best) if progress.best else
               BestTracker(metric_name, tr.greater_is_better, tr.early_stopping_patience, tr.early_stopping_threshold))

    def validate(epoch: int) -> bool:
        """Evaluate on validation, track the best evaluation (saving its weights), and say whether to stop."""
        probs, labels, vloss, ids = evaluate(model, val_loader, datasets["validation"], task, accelerator,
                                             tr.eval_aggregation)
        # staging: subject_kappa_mean etc. can select the model too
        m = {"loss": vloss, **task.split_metrics(labels, probs, subjects=_subjects_of(source, task, ids))}
        value = selection_value(m, metric_name, task.name)
        improved = tracker.update(value, progress.global_step, epoch)
        progress.best = tracker.to_dict()
        progress.history.append({"epoch": epoch, "step": progress.global_step, "val_loss": vloss,
                                 "val_" + task.primary_metric: m[task.primary_metric],
                                 **({} if metric_name in ("loss", task.primary_metric) else {"val_" + metric_name: value})})
        accelerator.log({"val/loss": vloss, f"val/{task.primary_metric}": m[task.primary_metric]}, step=progress.global_step)
        logger.info("epoch %d step %d: val loss %.4f, val %s %.4f%s", epoch, progress.global_step, vloss,
                    metric_name, _nan(value), " (best so far)" if improved else "")
        if improved and tr.load_best_model_at_end:
            if accelerator.is_main_process:
                save_best(_unwrap(accelerator, model), output_dir, tracker)
            accelerator.wait_for_everyone()
        model.train()
        if tracker.should_stop:
            logger.warning("early stopping at step %d: %s did not improve by more than %g in %d evaluations (best %.4f "
                           "at step %d)", progress.global_step, metric_name, tr.early_stopping_threshold,
                           tracker.evaluations_without_improvement, _nan(tracker.best_value), tracker.best_step or 0)
        return tracker.should_stop

    logistic = None
    if tr.probe == "logistic_regression":  # no loop: scikit-learn fits on the cached features, C on validation
        if task.problem_type == "regression":
            raise RecipeError("training.probe: logistic_regression is for classification; use probe: head for "
                              f"the regression task {task.name!r}")
        logistic = fit_logistic_probe(emb_sets["train"], emb_sets["validation"], task, metric_name,
                                      bool(tracker.greater_is_better), tr.logistic_regression_c, tr.eval_aggregation, tr.seed)
        head = _unwrap(accelerator, model).classifier
        with torch.no_grad():
            head.weight.copy_(torch.as_tensor(logistic["weight"], dtype=head.weight.dtype))
            head.bias.copy_(torch.as_tensor(logistic["bias"], dtype=head.bias.dtype))
        progress.history = logistic["history"]
        logger.info("logistic regression probe: C %g chosen on validation (%s %s); grid %s", logistic["C"], metric_name,
                    logistic["best_value"], tr.logistic_regression_c)
        done = True

    early_stopped = False
    for epoch in range(progress.epoch, num_epochs):
        if done:
            break
        model.train()
        train_loader.set_epoch(epoch)
        loader = train_loader
        if progress.step_in_epoch:
            loader = accelerator.skip_first_batches(train_loader, progress.step_in_epoch)
        for batch in loader:
            if augmenter.steps:
                # Seeded by position (seed, epoch, batch, rank): a resumed run draws the same augmentations.
                batch = augmenter(batch, batch_generator(tr.seed, epoch, progress.step_in_epoch, accelerator.process_index,
                                                         device=batch["input_values"].device))
            with accelerator.accumulate(model):
                out = model(**model_inputs(batch))
                check_finite_loss(out.loss, accelerator, progress.global_step + 1, ckpts)
                accelerator.backward(out.loss)
                if accelerator.sync_gradients and tr.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), tr.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            progress.step_in_epoch += 1
            progress.samples_seen += batch["labels"].shape[0]
            running += float(out.loss.detach())
            n_running += 1
            if not accelerator.sync_gradients:
                continue
            progress.global_step += 1
            rate = (progress.samples_seen - samples_at_start) * accelerator.num_processes / max(time.time() - t_loop, 1e-9)
            bar.set_postfix(epoch=epoch, loss=f"{running / n_running:.4f}", samples_s=f"{rate:.0f}")
            bar.update(1)
            if progress.global_step % tr.logging_steps == 0:
                accelerator.log({"train/loss": running / n_running, "train/lr": scheduler.get_last_lr()[0],
                                 "train/samples_per_s": rate}, step=progress.global_step)
                running, n_running = 0.0, 0
            if tr.eval_strategy == "steps" and progress.global_step % tr.eval_steps == 0:
                early_stopped = validate(epoch)
            if tr.save_strategy == "steps" and progress.global_step % tr.save_steps == 0:
                ckpts.save(accelerator, progress)
            if progress.global_step >= total_steps or early_stopped:
                done = True
                break
        if not done or progress.step_in_epoch >= len(train_loader):
            progress.epoch, progress.step_in_epoch = epoch + 1, 0
        if tr.eval_strategy == "epoch" and not early_stopped:
            early_stopped = validate(epoch)
        if tr.save_strategy == "epoch":
            ckpts.save(accelerator, progress)
        if early_stopped:
            break
    bar.close()
    train_seconds = time.time() - t_loop

    # 6. model selection: the best validation evaluation's weights replace the last step's
    selection = _selection_summary(tr, tracker, progress, early_stopped)
    if logistic is not None:
        selection = {"selected": "logistic_regression", "metric_for_best_model": metric_name,
                     "greater_is_better": tracker.greater_is_better, "C": logistic["C"], "best_value": logistic["best_value"],
                     "c_grid": list(tr.logistic_regression_c),
                     "reason": f"scikit-learn LogisticRegression, C with the best validation {metric_name}"}
    if selection["selected"] == "best":
        accelerator.wait_for_everyone()
        load_best(_unwrap(accelerator, model), output_dir)
        logger.info("selected the model of step %d (val %s %.4f)", tracker.best_step, metric_name, tracker.best_value)

    # 7. final evaluation: thresholds from validation, applied to test; test intervals by record-level bootstrap
    val_probs, val_labels, val_loss, val_ids = evaluate(model, val_loader, datasets["validation"], task, accelerator,
                                                        tr.eval_aggregation)
    thresholds = task.tune_thresholds(val_labels, val_probs)
    test_probs, test_labels, test_loss, test_ids = evaluate(model, test_loader, datasets["test"], task, accelerator,
                                                            tr.eval_aggregation)
    # staging adds the confusion matrix and per-subject kappa (mean, SD, min, max), as staging papers report
    test_subjects = _subjects_of(source, task, test_ids)
    test_metrics = {"loss": test_loss, **task.split_metrics(test_labels, test_probs, thresholds, test_subjects)}
    if tr.bootstrap_resamples and accelerator.is_main_process:  # over records (staging: subjects)
        cis, ci_info = task.split_intervals(test_labels, test_probs, thresholds, test_ids, test_subjects,
                                            n_resamples=tr.bootstrap_resamples, level=tr.confidence_level, seed=tr.seed)
        test_metrics["ci"] = {k: {"low": v.low, "high": v.high} for k, v in cis.items() if v.low is not None}
        test_metrics["ci_info"] = ci_info
    if task.problem_type != "regression":  # one readable entry per class: its name beside its id, AUROC [CI], F1
        test_metrics["per_class"] = per_class_summary(test_metrics, task.labels, test_labels, task.label_names)
    warnings_ = task.support_warnings(test_labels)
    if warnings_:
        test_metrics["support_warnings"] = warnings_
        for w in warnings_:
            logger.warning("test set: %s", w)
    metrics: dict[str, Any] = {
        "task": task.name,
        "labels": task.labels,
        "label_names": getattr(task, "label_names", {}),  # SNOMED CT codes -> abbreviations (CinC); {} otherwise
        "validation": {"loss": val_loss, **task.split_metrics(val_labels, val_probs, thresholds,
                                                              _subjects_of(source, task, val_ids))},
        "test": test_metrics,
        "primary_metric": task.primary_metric,  # what a sweep table or `compare` reports by default
        "selection": selection,
        "adaptation": recipe.adaptation.method,
        "trainable_parameters": params.trainable,
        "total_parameters": params.total,
        "global_step": progress.global_step,
        "world_size": accelerator.num_processes,
        "train_seconds": round(train_seconds, 2),
        "history": progress.history,
        "run_info": run_info,
        "data": {"source": source.name, "cache": str(cache.path), "skipped_records": cache.report["skipped_by_reason"],
                 "source_problems": source_report.by_reason if source_report is not None else {},
                 "records": {s: ds.n_records - len(ds.missing_records) for s, ds in datasets.items()}},
    }
    if task.problem_type == "regression":  # records without a target value: kept, masked, and counted here
        metrics["data"]["records_without_target"] = {s: {t: int(np.isnan(ds.labels[:, c]).sum()) for c, t in enumerate(task.labels)}
                                                     for s, ds in datasets.items()}
        logger.info("records without a target value (masked): %s", metrics["data"]["records_without_target"])
    if hasattr(source, "target_report") and source.target_report(recipe.task.name):
        metrics["data"]["target"] = source.target_report(recipe.task.name)
    metrics["data"]["train_subset"] = {"fraction": recipe.data.train_fraction, "seed": recipe.data.train_fraction_seed,
                                       "records": len(split_ids["train"])}
    # Every rank records what it did, so a multi-process run can be checked to have trained on all ranks.
    rank_dir = output_dir / "ranks"
    if accelerator.is_main_process:
        rank_dir.mkdir(exist_ok=True)
    accelerator.wait_for_everyone()
    (rank_dir / f"rank{accelerator.process_index}.json").write_text(json.dumps({
        "rank": accelerator.process_index, "world_size": accelerator.num_processes,
        "global_step": progress.global_step, "samples_seen": progress.samples_seen,
        "test_primary_metric": metrics["test"][task.primary_metric],
    }) + "\n")

    if accelerator.is_main_process:
        unwrapped = _unwrap(accelerator, model)
        task_file = {"task": task.to_dict(), "thresholds": None if thresholds is None else dict(zip(task.labels, map(float, thresholds)))}
        # task.json (labels, tuned thresholds) is part of the atomic folder write: never a model without it.
        save_adapted(unwrapped, output_dir / "model", processor,
                     extra_files={"task.json": json.dumps(task_file, indent=2) + "\n"})
        (output_dir / "recipe.yaml").write_text(
            f"# Resolved recipe of this run (ecg_adapt); rerun with: ecg-adapt train {output_dir / 'recipe.yaml'}\n" + recipe.to_yaml()
        )
        for split, ids, y, p in (("validation", val_ids, val_labels, val_probs), ("test", test_ids, test_labels, test_probs)):
            save_predictions(output_dir / PREDICTIONS_DIR / f"{split}.npz",
                             Predictions([str(i) for i in ids], y, p, task.labels, task.problem_type, thresholds))
        metrics["wall_seconds"] = round(time.time() - t_start, 2)
        atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        logger.info("test %s %.4f (val %.4f); model saved to %s", task.primary_metric, _nan(metrics["test"][task.primary_metric]),
                    _nan(metrics["validation"][task.primary_metric]), output_dir / "model")
    # Ranks must meet before end_training(): it tears the process group down (see shared reference, section 4).
    accelerator.wait_for_everyone()
    if keep_process_group:  # end_training() would destroy the process group the next sweep cell needs
        for tracker in accelerator.trackers:
            tracker.finish()
    else:
        accelerator.end_training()
    metrics["_is_main_process"] = accelerator.is_main_process
    return metrics

