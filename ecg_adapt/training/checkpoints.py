"""Training checkpoints that an interrupted run never loses, and that hold no pickled Python objects.

accelerate's ``save_state`` with ``automatic_checkpoint_naming`` deletes the oldest checkpoint *before* writing
the new one, writes in place (a kill leaves a half-written folder that ``load_state`` picks up), and pickles
objects registered with ``register_for_checkpointing`` into ``custom_checkpoint_N.pkl``, which ``load_state``
unpickles with ``weights_only=False``. accelerate has no option for the order of these steps, so this module
drives ``save_state``/``load_state`` with an explicit folder and does the naming, rotation and bookkeeping:

1. ``save_state`` writes into ``checkpoints/.tmp-checkpoint_N`` (model as safetensors, optimiser, scheduler,
   sampler and RNG states are read back by accelerate with ``torch.load(weights_only=True)``);
2. the loop position and the recipe that produced the checkpoint go to ``trainer_state.json`` (JSON, not pickle);
3. the folder is renamed to ``checkpoint_N`` and the marker ``checkpoint_complete.json`` is written last;
4. only then are older complete checkpoints beyond ``save_total_limit`` (and leftovers of killed saves) removed.

``resume_from_checkpoint: latest`` picks the newest folder holding the marker. Resuming with a recipe that
differs from the checkpoint's in anything but :data:`RESUME_SAFE_KEYS` is refused with the list of changed keys,
so ``recipe.yaml`` of a resumed run always describes what was trained.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..utils import flatten_dict
from .recipe import RecipeError

if TYPE_CHECKING:
    from accelerate import Accelerator

logger = logging.getLogger("ecg_adapt.train")

COMPLETE_MARKER = "checkpoint_complete.json"
STATE_FILE = "trainer_state.json"
_TMP_PREFIX = ".tmp-checkpoint_"
_NAME = re.compile(r"^checkpoint_(\d+)$")

# Recipe keys that may differ between a checkpoint and the run resuming from it: they change where things are
# written, how often the loop logs or saves, or how the run is published, never what is trained.
RESUME_SAFE_KEYS: frozenset[str] = frozenset({
    "training.resume_from_checkpoint",
    "training.logging_steps",
    "training.report_to",
    "training.save_strategy",
    "training.save_steps",
    "training.save_total_limit",
    "training.per_device_eval_batch_size",
    "training.dataloader_num_workers",
    "output.overwrite_output_dir",
    "output.output_dir",  # a run folder moved before resuming
    "data.cache_dir",
    "training.bootstrap_resamples",  # only the final report's intervals
    "training.confidence_level",
})
_SAFE_PREFIXES = ("hub.",)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from; the message names the folder and what is wrong."""


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite; the run stops before the bad update is applied or saved."""


class _Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _index(path: Path) -> int | None:
    m = _NAME.match(path.name)
    return int(m.group(1)) if m else None


def is_complete(path: Path) -> bool:
    """Whether ``path`` is a checkpoint whose save finished (its marker, written last, exists)."""
    return (Path(path) / COMPLETE_MARKER).is_file()


class CheckpointManager:
    """Numbered, atomically written checkpoints under ``<output_dir>/checkpoints``.

    Args:
        output_dir: the run folder.
        total_limit: complete checkpoints to keep (``None``: all); the newest complete one is never removed.
        recipe: the resolved recipe (``Recipe.to_dict()``), stored with every checkpoint and compared on resume.
    """

    def __init__(self, output_dir: str | os.PathLike, total_limit: int | None, recipe: dict[str, Any]) -> None:
        self.root = Path(output_dir) / "checkpoints"
        self.total_limit = total_limit
        # JSON round trip: the saved copy is compared with this one on resume (tuples become lists there too).
        self.recipe = json.loads(json.dumps(recipe, default=str))

    # ------------------------------------------------------------------ listing
    def all_folders(self) -> list[Path]:
        """Every ``checkpoint_N`` folder, complete or not, oldest first."""
        if not self.root.is_dir():
            return []
        found = [(i, p) for p in self.root.iterdir() if p.is_dir() and (i := _index(p)) is not None]
        return [p for _, p in sorted(found)]

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        return [p for p in self.all_folders() if is_complete(p)]

    def latest(self) -> Path | None:
        """The newest complete checkpoint (``resume_from_checkpoint: latest``), or ``None``."""
        done = self.complete()
        return done[-1] if done else None

    def has_any(self) -> bool:
        """Whether the folder holds anything a previous run left in ``checkpoints/`` (complete or not)."""
        return self.root.is_dir() and any(self.root.iterdir())

    def _next_index(self) -> int:
        used = [_index(p) for p in self.all_folders()]
        if self.root.is_dir():  # leftovers of killed saves keep their number reserved
            used += [int(p.name[len(_TMP_PREFIX):]) for p in self.root.glob(_TMP_PREFIX + "*")
                     if p.name[len(_TMP_PREFIX):].isdigit()]
        return max((i for i in used if i is not None), default=-1) + 1

    # ------------------------------------------------------------------ saving
    def save(self, accelerator: "Accelerator", progress: _Stateful) -> Path:
        """Write a checkpoint of the current state on every rank; returns its final folder.

        Collective: every rank must call it at the same point of the loop.
        """
        index = self._next_index()
        accelerator.wait_for_everyone()  # every rank computed the same index before anyone creates a folder
        tmp = self.root / f"{_TMP_PREFIX}{index}"
        final = self.root / f"checkpoint_{index}"
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _write_json(tmp / STATE_FILE, {"progress": progress.state_dict(), "recipe": self.recipe})
            os.replace(tmp, final)
            _write_json(final / COMPLETE_MARKER, {"checkpoint": final.name, "progress": progress.state_dict()})
            self._rotate(keep=final)
            logger.info("checkpoint %s written", final)
        accelerator.wait_for_everyone()
        return final

    def _rotate(self, keep: Path) -> None:
        # Leftovers of killed saves (no marker) are useless now that a complete checkpoint exists.
        for p in self.root.glob(_TMP_PREFIX + "*"):
            shutil.rmtree(p, ignore_errors=True)
        for p in self.all_folders():
            if p != keep and not is_complete(p):
                shutil.rmtree(p, ignore_errors=True)
        if self.total_limit is None or self.total_limit <= 0:
            return
        done = self.complete()
        for p in done[: max(len(done) - self.total_limit, 0)]:
            if p != keep:
                shutil.rmtree(p)

    # ------------------------------------------------------------------ loading
    def resolve(self, resume: str) -> Path:
        """The checkpoint folder named by ``training.resume_from_checkpoint`` (``latest`` or a path)."""
        if resume == "latest":
            ckpt = self.latest()
            if ckpt is None:
                partial = [p.name for p in self.all_folders()] + [p.name for p in self.root.glob(_TMP_PREFIX + "*")]
                extra = f" (only incomplete saves: {partial})" if partial else ""
                raise CheckpointError(f"No complete checkpoint to resume from in {self.root}{extra}; "
                                      "drop training.resume_from_checkpoint to start a new run")
            return ckpt
        ckpt = Path(resume)
        if not ckpt.is_dir():
            raise CheckpointError(f"training.resume_from_checkpoint: {ckpt} is not a folder")
        if not is_complete(ckpt):
            raise CheckpointError(f"training.resume_from_checkpoint: {ckpt} is incomplete (no {COMPLETE_MARKER}: "
                                  "its save was interrupted); use 'latest' for the newest complete checkpoint")
        return ckpt

    def load(self, accelerator: "Accelerator", ckpt: Path, progress: _Stateful) -> None:
        """Restore model, optimiser, scheduler, sampler and RNG states and the loop position from ``ckpt``.

        Raises:
            CheckpointError: the folder lacks ``trainer_state.json`` or holds pickled custom objects.
            RecipeError: the current recipe differs from the checkpoint's in a key outside :data:`RESUME_SAFE_KEYS`.
        """
        pickled = sorted(p.name for p in ckpt.glob("custom_checkpoint_*.pkl"))
        if pickled:
            raise CheckpointError(
                f"{ckpt} holds {pickled}: pickled objects (accelerate's register_for_checkpointing), which "
                "ecg_adapt never unpickles because unpickling can run code stored in the file. Resume from a "
                f"checkpoint written by this version (loop state in {STATE_FILE})."
            )
        state_file = ckpt / STATE_FILE
        if not state_file.is_file():
            raise CheckpointError(f"{ckpt} has no {STATE_FILE}: not a checkpoint written by ecg_adapt's trainer")
        state = json.loads(state_file.read_text())
        check_resume_recipe(state.get("recipe") or {}, self.recipe, ckpt)
        accelerator.load_state(str(ckpt))
        progress.load_state_dict(state["progress"])


def prepare_output_dir(output_dir: str | os.PathLike, ckpts: CheckpointManager, resume: str | None,
                       overwrite: bool) -> None:
    """Decide, before anything is written, what to do with what a previous run left in ``output_dir``.

    A finished run (``metrics.json``) or an unfinished one (checkpoints) is never deleted unless ``overwrite``
    (``output.overwrite_output_dir``) says so; then the previous run's outputs are removed before training.

    Raises:
        FileExistsError: the folder holds a run and neither ``resume`` nor ``overwrite`` says what to do with it.
    """
    output_dir = Path(output_dir)
    finished = (output_dir / "metrics.json").exists()
    if resume:
        return
    if overwrite:
        if finished or ckpts.has_any() or (output_dir / "model").exists():
            logger.info("output.overwrite_output_dir: removing the previous run's outputs in %s", output_dir)
        for name in ("checkpoints", "model", "best", "predictions", "ranks", "metrics.json", "recipe.yaml"):
            p = output_dir / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        return
    if finished:
        raise FileExistsError(
            f"{output_dir} already holds a finished run; set output.overwrite_output_dir=true, "
            "training.resume_from_checkpoint=latest, or another output.output_dir"
        )
    if ckpts.has_any():
        latest = ckpts.latest()
        what = f"its newest complete checkpoint is {latest.name}" if latest else "none of its checkpoints is complete"
        raise FileExistsError(
            f"{output_dir} holds checkpoints of an unfinished run ({what}); nothing was changed. Set "
            "training.resume_from_checkpoint=latest to continue it, output.overwrite_output_dir=true to start "
            "over (deletes them), or another output.output_dir"
        )


def check_finite_loss(loss: Any, accelerator: "Accelerator", step: int, ckpts: CheckpointManager) -> None:
    """Stop before a NaN/inf loss reaches the weights or a checkpoint; every rank stops at the same step.

    Raises:
        TrainingDivergedError: naming the step and the last good checkpoint.
    """
    import torch

    value = loss.detach().float().reshape(1)
    if accelerator.num_processes > 1:
        value = accelerator.gather(value)
    if bool(torch.isfinite(value).all()):
        return
    bad = value[~torch.isfinite(value)][0].item()
    latest = ckpts.latest()
    kept = f"the last good checkpoint is {latest} (resume_from_checkpoint=latest)" if latest else "no checkpoint was saved yet"
    raise TrainingDivergedError(
        f"loss became {'NaN' if math.isnan(bad) else bad} at step {step}; training stopped before that update, "
        f"{kept}. Lower training.learning_rate, raise training.warmup_ratio, or check the data."
    )


def changed_keys(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Flattened recipe keys whose value differs (``key -> (checkpoint value, current value)``), safe keys excluded."""
    a, b = flatten_dict(saved), flatten_dict(current)
    out = {}
    for key in sorted(set(a) | set(b)):
        if key in RESUME_SAFE_KEYS or key.startswith(_SAFE_PREFIXES):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            out[key] = (a.get(key, "<absent>"), b.get(key, "<absent>"))
    return out


def check_resume_recipe(saved: dict[str, Any], current: dict[str, Any], ckpt: Path) -> None:
    """Refuse to resume when the recipe changed: the optimiser, schedule and data order of the checkpoint belong
    to the saved values, and ``recipe.yaml`` would record values that were not used."""
    diff = changed_keys(saved, current)
    if diff:
        lines = "\n".join(f"  {k}: {old!r} in the checkpoint, {new!r} now" for k, (old, new) in diff.items())
        raise RecipeError(
            f"Cannot resume from {ckpt}: the recipe differs from the one that wrote it in {len(diff)} key(s):\n{lines}\n"
            "Restore those values to resume, or start a new run (another output.output_dir, or "
            "output.overwrite_output_dir=true). Keys that may change on resume: " + ", ".join(sorted(RESUME_SAFE_KEYS))
        )


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(obj, indent=2, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
