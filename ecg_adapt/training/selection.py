"""Model selection: which evaluation was best, when to stop early, and the selected weights on disk.

The names follow transformers' ``TrainingArguments`` (``metric_for_best_model``, ``greater_is_better``,
``load_best_model_at_end``) and ``EarlyStoppingCallback`` (``early_stopping_patience``,
``early_stopping_threshold``), so a transformers user reads a recipe without a glossary. The tracker's state is
plain JSON, stored beside each checkpoint, so a resumed run keeps its best-so-far and its patience count.

The selected weights are the trainable tensors and every buffer (BatchNorm statistics included), written to
``best/model.safetensors`` with ``best/selection.json`` (which step, which value) *after* the weights, in a
temporary folder renamed into place: a kill at any moment leaves the previous best or the new one, complete.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..tasks.metrics import lower_is_better
from ..utils import atomic_folder, did_you_mean
from .recipe import RecipeError

BEST_DIR = "best"
_WEIGHTS = "model.safetensors"
_MARKER = "selection.json"


@dataclass
class BestTracker:
    """Tracks the best evaluation of ``metric`` and the early-stopping patience.

    Args:
        metric: the metric's name, e.g. ``"macro_auroc"`` or ``"loss"`` (read from the evaluation's metrics).
        greater_is_better: direction; ``None`` = from the metric: lower is better for losses and regression errors
            (``loss``, ``mae``, ``rmse``: :func:`~ecg_adapt.tasks.metrics.lower_is_better`), higher otherwise.
        patience: stop after this many evaluations without improvement (``None``: never stop early).
        threshold: the least change that counts as an improvement.

    Example:
        >>> t = BestTracker("macro_auroc", patience=2)
        >>> [t.update(v, step=s, epoch=s) for s, v in enumerate([0.7, 0.8, 0.79, 0.78])]
        [True, True, False, False]
        >>> t.best_step, t.should_stop
        (1, True)
    """

    metric: str
    greater_is_better: bool | None = None
    patience: int | None = None
    threshold: float = 0.0
    best_value: float | None = None
    best_step: int | None = None
    best_epoch: int | None = None
    evaluations_without_improvement: int = 0

    def __post_init__(self) -> None:
        if self.greater_is_better is None:
            self.greater_is_better = not lower_is_better(self.metric)
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"early_stopping_patience must be >= 1, got {self.patience}")
        if self.threshold < 0:
            raise ValueError(f"early_stopping_threshold must be >= 0, got {self.threshold}")

    def is_improvement(self, value: float | None) -> bool:
        if value is None or not math.isfinite(value):
            return False
        if self.best_value is None:
            return True
        delta = value - self.best_value if self.greater_is_better else self.best_value - value
        return delta > self.threshold

    def update(self, value: float | None, step: int, epoch: int) -> bool:
        """Record one evaluation; True when it is the new best (then save the weights)."""
        if self.is_improvement(value):
            self.best_value, self.best_step, self.best_epoch = float(value), int(step), int(epoch)  # type: ignore[arg-type]
            self.evaluations_without_improvement = 0
            return True
        self.evaluations_without_improvement += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.evaluations_without_improvement >= self.patience

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BestTracker":
        return cls(**d)


def selection_value(metrics: dict[str, Any], name: str, task_name: str) -> float | None:
    """The value of the validation metric a model (or a probe's ``C``) is selected on: ``metrics[name]``.

    Raises:
        RecipeError: ``name`` is not a scalar of ``metrics`` (``training.metric_for_best_model`` named, with the
            scalars there are), so a typo fails at the first evaluation instead of never selecting anything.
    """
    if name not in metrics or isinstance(metrics[name], (dict, list, str)):
        scalars = [k for k, v in metrics.items() if isinstance(v, (int, float)) or v is None]
        raise RecipeError(f"training.metric_for_best_model {name!r} is not a scalar validation metric of "
                          f"task {task_name!r}{did_you_mean(name, scalars)}; available: {sorted(scalars)}")
    return metrics[name]


def selection_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What selecting a checkpoint must restore: the trainable parameters and all buffers (CPU copies)."""
    state = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}
    state.update({n: b.detach().to("cpu", copy=True) for n, b in model.named_buffers()})
    return {k: v.contiguous() for k, v in state.items()}


def save_best(model: torch.nn.Module, output_dir: str | os.PathLike, tracker: BestTracker) -> Path:
    """Write the selected weights and ``selection.json`` to ``output_dir/best`` atomically (marker last)."""
    final = Path(output_dir) / BEST_DIR
    with atomic_folder(final) as tmp:  # a save killed midway leaves the previous best; its debris is cleared next time
        save_file(selection_state(model), str(tmp / _WEIGHTS))
        (tmp / _MARKER).write_text(json.dumps(tracker.to_dict(), indent=2) + "\n")
    return final


def read_best(output_dir: str | os.PathLike) -> BestTracker | None:
    """The tracker saved with the best weights, or None when no complete ``best/`` folder exists."""
    marker = Path(output_dir) / BEST_DIR / _MARKER
    if not marker.is_file() or not (marker.parent / _WEIGHTS).is_file():
        return None
    return BestTracker.from_dict(json.loads(marker.read_text()))


def load_best(model: torch.nn.Module, output_dir: str | os.PathLike) -> BestTracker:
    """Load the selected weights back into ``model`` (every saved tensor must match a parameter or buffer).

    Raises:
        FileNotFoundError: when no complete ``best/`` folder exists.
        ValueError: when the saved tensors do not match the model's names or shapes.
    """
    tracker = read_best(output_dir)
    if tracker is None:
        raise FileNotFoundError(f"{Path(output_dir) / BEST_DIR}: no complete best checkpoint (selection.json missing)")
    saved = load_file(str(Path(output_dir) / BEST_DIR / _WEIGHTS))
    own = dict(model.named_parameters())
    own.update(dict(model.named_buffers()))
    unknown = sorted(set(saved) - set(own))
    wrong = sorted(k for k in saved if k in own and own[k].shape != saved[k].shape)
    if unknown or wrong:
        raise ValueError(f"best checkpoint does not match the model: unknown tensors {unknown[:5]}, wrong shapes {wrong[:5]}")
    with torch.no_grad():
        for k, v in saved.items():
            own[k].copy_(v.to(own[k].device, own[k].dtype))
    return tracker
