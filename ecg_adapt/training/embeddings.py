"""The embedding cache: a frozen backbone encodes every window once, probes train on the stored features.

A linear probe (``adaptation.method: linear_probe``) never changes the backbone, so re-running it over every
window in every epoch recomputes the same numbers. :func:`build_embedding_cache` runs the frozen backbone once
over all windows of a window cache (:class:`~ecg_adapt.data.cache.ECGCache`; eval mode, no gradients, batched)
and stores, per window, the head's input:

* ``pooling: mean``: the pooled features (the backbone's ``pooler_output``, else the masked frame mean);
* ``pooling: attention``: the frames (``last_hidden_state``) and the frame mask, since the attention head
  attends over them.

The features are written with 🤗 ``datasets``' Arrow writer in the window cache's own layout (one row per
window, same row order, ``windows.arrow`` + ``report.json`` written last), in a folder next to the window
cache, so :class:`~ecg_adapt.data.cache.ECGCache` memory-maps it. Key: the window cache's key, a fingerprint
of the backbone (its config and a SHA-256 of every state-dict tensor's bytes: the weights the features came
from, not a file date that a copy would change) and the pooling. The folder is filled under a temporary name
and renamed (``atomic_folder``); the marker file is written last and checked on reuse, so a killed build is
never picked up.

:class:`EmbeddingDataset` serves the cached features with the window dataset's batch keys (``labels``,
``record_index``) plus ``embeddings`` (and ``frame_mask``), and :class:`HeadOnly` applies the classifier's head
to them; :func:`~ecg_adapt.training.trainer.train` uses both automatically (``training.embedding_cache``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from datasets import Array2D, Features, Value
from datasets.arrow_writer import ArrowWriter
from torch import nn

from ..data.cache import DATA_FILE, REPORT_FILE, ECGCache, WindowDataset
from ..models.classifier import ECGClassifier, ECGClassifierOutput, head_loss_and_logits
from ..progress import Progress
from ..utils import atomic_folder
from .selection import selection_value

logger = logging.getLogger(__name__)

EMBEDDING_FORMAT_VERSION = 1
_POOLINGS = ("mean", "attention")


def backbone_fingerprint(backbone: nn.Module) -> str:
    """SHA-256 of the backbone's config and of every state-dict tensor (name, dtype, shape, bytes).

    Hashing the bytes costs about a second per 100 M parameters on a CPU; a date or size of the backbone's files
    would miss weights changed in memory and see a copied folder as new.
    """
    h = hashlib.sha256()
    config = getattr(backbone, "config", None)
    if config is not None:
        h.update(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    for name, t in sorted(backbone.state_dict().items()):
        t = t.detach().cpu().contiguous()  # 0-dim (BatchNorm counters) and bf16 tensors hash as bytes too
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def embedding_cache_key(window_cache: ECGCache, backbone: nn.Module, pooling: str) -> str:
    """The key of the embedding cache of ``window_cache`` under ``backbone`` with ``pooling``."""
    payload = {"version": EMBEDDING_FORMAT_VERSION, "windows": window_cache.report.get("cache_key", str(window_cache.path)),
               "backbone": backbone_fingerprint(backbone), "pooling": pooling}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _classifier_of(model: nn.Module) -> ECGClassifier:
    get_base = getattr(model, "get_base_model", None)
    clf = get_base() if callable(get_base) else model
    if not isinstance(clf, ECGClassifier):
        raise TypeError(f"an embedding cache needs an ECGClassifier (or a wrapper of one), got {type(model).__name__}")
    return clf


@torch.no_grad()
def _encode(clf: ECGClassifier, x: torch.Tensor, m: torch.Tensor, pooling: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Features of one batch: pooled (mean), or frames plus frame mask (attention), as the classifier computes
    them in ``forward`` (the same ``_frames``/``_pool`` calls, so the head sees the same numbers)."""
    out, hidden, frame_mask = clf._frames(x, m)
    if pooling == "attention":
        if frame_mask is None:
            frame_mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        return hidden.float().cpu().numpy(), frame_mask.to(torch.int8).cpu().numpy()
    return clf._pool(out, hidden, frame_mask).float().cpu().numpy(), None


def build_embedding_cache(
    model: nn.Module,
    window_cache: ECGCache,
    input_shape: tuple[int, ...],
    pooling: str | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> ECGCache:
    """Encode every window of ``window_cache`` once with the frozen backbone of ``model`` and store the features
    (or open them if this backbone and pooling already did).

    Args:
        model: an :class:`~ecg_adapt.ECGClassifier` (or a wrapper with ``get_base_model()``); only its backbone
            runs, in eval mode and without gradients; its training mode is restored afterwards.
        window_cache: the window cache to encode (all of its rows, in its row order).
        input_shape: the processor contract's input shape (windows are stored as ``(leads, samples)``).
        pooling: ``mean`` or ``attention`` (default: the classifier's ``config.pooling``).
        batch_size: windows per forward pass.
        device: where to run the backbone (default: where it is).
        progress: a bar on a terminal, plain lines otherwise.

    Returns:
        An :class:`ECGCache` whose rows match ``window_cache``'s: column ``embeddings`` of shape ``(1, hidden)``
        (mean) or ``(frames, hidden)`` (attention, with ``frame_mask`` of shape ``(1, frames)``); its
        ``built_now`` says whether it was encoded by this call (``False``: an existing cache was opened) and its
        ``report`` holds ``encode_seconds``.
    """
    clf = _classifier_of(model)
    pooling = pooling or clf.config.pooling
    if pooling not in _POOLINGS:
        raise ValueError(f"pooling must be one of {list(_POOLINGS)}, got {pooling!r}")
    key = embedding_cache_key(window_cache, clf.backbone, pooling)
    final = window_cache.path.parent / f"embeddings-{window_cache.path.name}-{key}"
    if (final / REPORT_FILE).exists() and (final / DATA_FILE).exists():
        cache = ECGCache(final)
        cache.built_now = False  # type: ignore[attr-defined]
        logger.info("using embedding cache %s: %d windows", final, len(cache))
        return cache
    was_training = clf.training
    clf.eval()
    if device is not None:
        clf.to(device)
    dev = next(clf.backbone.parameters()).device
    n = len(window_cache)
    t0 = time.time()
    try:
        with atomic_folder(final) as tmp:
            writer = None
            bar = Progress(n, "embedding windows", "win", disable=not progress)
            for start in range(0, n, batch_size):
                rows = np.arange(start, min(start + batch_size, n))
                x = torch.from_numpy(window_cache.take("input_values", rows).reshape((len(rows),) + tuple(input_shape)))
                m = torch.from_numpy(window_cache.take("attention_mask", rows).reshape((len(rows),) + tuple(input_shape))
                                     .astype(np.int64))
                feats, fmask = _encode(clf, x.to(dev), m.to(dev), pooling)
                if feats.ndim == 2:
                    feats = feats[:, None, :]
                if writer is None:  # the shapes are known after the first batch
                    cols: dict[str, Any] = {"record_id": Value("string"), "window": Value("int32"),
                                            "embeddings": Array2D(shape=feats.shape[1:], dtype="float32")}
                    if fmask is not None:
                        cols["frame_mask"] = Array2D(shape=(1, fmask.shape[1]), dtype="int8")
                    writer = ArrowWriter(features=Features(cols), path=str(tmp / DATA_FILE))
                ids = window_cache.row_record_ids[rows]
                for j in range(len(rows)):
                    row = {"record_id": str(ids[j]), "window": int(start + j), "embeddings": feats[j]}
                    if fmask is not None:
                        row["frame_mask"] = fmask[j][None, :]
                    writer.write(row)
                bar.update(len(rows))
            bar.close()
            if writer is None:
                raise ValueError(f"the window cache {window_cache.path} holds no window to encode")
            writer.finalize()
            writer.close()
            seconds = time.time() - t0
            report = {"cache_key": key, "window_cache": str(window_cache.path), "pooling": pooling,
                      "n_windows": n, "feature_shape": list(feats.shape[1:]), "encode_seconds": round(seconds, 3),
                      "backbone_fingerprint": backbone_fingerprint(clf.backbone)}
            # The marker, written last: a folder without it is never reused.
            (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    finally:
        clf.train(was_training)
    logger.info("built embedding cache %s: %d windows in %.1f s (%.0f windows/s)", final, n, seconds,
                n / max(seconds, 1e-9))
    cache = ECGCache(final)
    cache.built_now = True  # type: ignore[attr-defined]
    return cache


def embedding_cache_size(cache: ECGCache) -> int:
    """Bytes on disk of an embedding (or window) cache folder."""
    return sum(p.stat().st_size for p in Path(cache.path).iterdir() if p.is_file())


class EmbeddingDataset(torch.utils.data.Dataset):
    """The windows of a :class:`~ecg_adapt.data.cache.WindowDataset`, served as cached features.

    Items carry the window dataset's ``labels`` and ``record_index`` plus ``embeddings`` (``(hidden,)`` for mean
    pooling, ``(frames, hidden)`` for attention pooling, with ``frame_mask``). The features are read into memory
    once (they are small next to the windows), so a batch is one fancy index.
    """

    def __init__(self, embeddings: ECGCache, windows: WindowDataset) -> None:
        if len(embeddings) != len(windows.cache):
            raise ValueError(f"embedding cache {embeddings.path} has {len(embeddings)} rows, the window cache "
                             f"{windows.cache.path} {len(windows.cache)}: they were not built from each other")
        self.rows = windows.rows
        self.row_record = windows.row_record
        self.labels = windows.labels
        self.record_ids = windows.record_ids
        self.missing_records = windows.missing_records
        self.n_records = windows.n_records
        emb = embeddings.take("embeddings", self.rows)
        self.embeddings = torch.from_numpy(emb[:, 0, :] if emb.shape[1] == 1 and "frame_mask" not in
                                           embeddings.dataset.features else emb)
        self.frame_mask = None
        if "frame_mask" in embeddings.dataset.features:
            self.frame_mask = torch.from_numpy(embeddings.take("frame_mask", self.rows)[:, 0, :].astype(bool))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        rec = self.row_record[np.asarray(indices)]
        out = {"embeddings": self.embeddings[idx], "labels": torch.from_numpy(self.labels[rec]),
               "record_index": torch.from_numpy(rec.astype(np.int64))}
        if self.frame_mask is not None:
            out["frame_mask"] = self.frame_mask[idx]
        return out

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


class HeadOnly(nn.Module):
    """The classifier's head (and, for mean pooling, its dropout) applied to cached features.

    It registers the classifier's own submodules under the classifier's names (``backbone``, ``dropout``,
    ``classifier``), so its parameters are the classifier's (the optimizer, ``save_best``/``load_best`` and
    checkpoints see the same names and tensors); the backbone is held, frozen, but never called.
    ``forward(embeddings, frame_mask, labels)`` returns the classifier's output type.
    """

    def __init__(self, model: ECGClassifier) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.dropout = model.dropout
        self.classifier = model.classifier
        self.pooling = model.config.pooling
        self.config = model.config  # problem type, and a regression head's loss and target scaling
        object.__setattr__(self, "classifier_model", model)  # not a submodule: no duplicate parameter names

    def train(self, mode: bool = True) -> "HeadOnly":
        super().train(mode)
        self.backbone.eval()  # frozen and unused: keep it as the probe's classifier does
        return self

    def forward(self, embeddings: torch.Tensor, frame_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs: Any) -> ECGClassifierOutput:
        if self.pooling == "attention":
            # As ECGClassifier._frames: a batch with every frame kept runs unmasked.
            mask = None if frame_mask is None or bool(frame_mask.all()) else frame_mask
            logits, pooled = self.classifier(embeddings, mask)
        else:
            pooled = embeddings
            logits = self.classifier(self.dropout(pooled))
        loss, logits = head_loss_and_logits(logits, labels, self.config)
        return ECGClassifierOutput(loss=loss, logits=logits, pooled=pooled)


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keyword arguments for the model from a loader batch: windows, or cached features."""
    if "embeddings" in batch:
        keys = ("embeddings", "frame_mask", "labels")
    else:
        keys = ("input_values", "attention_mask", "labels")
    return {k: batch[k] for k in keys if k in batch}


__all__ = ["DEFAULT_C_GRID", "EmbeddingDataset", "HeadOnly", "backbone_fingerprint", "build_embedding_cache",
           "embedding_cache_key", "embedding_cache_size", "fit_logistic_probe", "logistic_head_weights", "model_inputs"]


# ---------------------------------------------------------------------------------------------- logistic regression
DEFAULT_C_GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
# A class constant in the training windows gets this logit (scikit-learn's one-vs-rest predicts exactly 0 or 1 for
# it; sigmoid(-30) = 9e-14): the folded linear head then reproduces its probabilities to float precision.
_CONSTANT_LOGIT = 30.0


def _fit_logistic(x: np.ndarray, y: np.ndarray, multi_label: bool, c: float, seed: int, max_iter: int) -> Any:
    """scikit-learn's pipeline for one ``C``: standardised features, then a one-vs-rest logistic regression per class
    (multi-label) or one multinomial logistic regression (multi-class)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    lr = LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    return make_pipeline(StandardScaler(), OneVsRestClassifier(lr) if multi_label else lr).fit(x, y)


def logistic_head_weights(pipeline: Any, num_labels: int, multi_label: bool) -> tuple[np.ndarray, np.ndarray]:
    """The fitted pipeline as one linear layer on the raw features: ``(weight (labels, features), bias (labels,))``
    whose sigmoid (multi-label) or softmax (multi-class) equals the pipeline's ``predict_proba``.

    The scaler is folded in (``w / scale``, ``b - w . mean / scale``), so the saved classifier is an ordinary linear
    head that ``Predictor`` and ``load_adapted`` use as is. A multi-label class constant in training gets a zero
    weight and a bias of +-30; a multi-class class absent from training gets -30 (probability ~0).
    """
    scaler, clf = pipeline[0], pipeline[-1]
    mean = scaler.mean_ if scaler.with_mean else 0.0
    scale = scaler.scale_ if scaler.with_std else 1.0
    d = len(scaler.mean_)
    w = np.zeros((num_labels, d))
    b = np.zeros(num_labels)
    if multi_label:
        for c, est in enumerate(clf.estimators_):
            if hasattr(est, "coef_"):
                w[c], b[c] = est.coef_[0], est.intercept_[0]
            else:  # sklearn's _ConstantPredictor: the class was all positive or all negative in training
                b[c] = _CONSTANT_LOGIT if float(np.ravel(est.y_)[0]) > 0.5 else -_CONSTANT_LOGIT
    else:
        classes = [int(k) for k in clf.classes_]
        b[:] = -_CONSTANT_LOGIT
        if len(classes) == 2:  # binary: p(second) = sigmoid(w x + b) = softmax([0, w x + b])[1]
            b[classes[0]], w[classes[1]], b[classes[1]] = 0.0, clf.coef_[0], clf.intercept_[0]
        else:
            for row, k in enumerate(classes):
                w[k], b[k] = clf.coef_[row], clf.intercept_[row]
    w_raw = w / scale
    return w_raw, b - (w_raw * mean).sum(axis=1)


def fit_logistic_probe(
    train: EmbeddingDataset,
    validation: EmbeddingDataset,
    task: Any,
    metric: str,
    greater_is_better: bool,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    aggregation: str = "mean",
    seed: int = 0,
    max_iter: int = 1000,
) -> dict[str, Any]:
    """Logistic regression on cached pooled embeddings, ``C`` chosen on validation.

    Each training window is a sample with its record's labels (as the head probe trains). For every ``C`` of
    ``c_grid`` the pipeline is fitted and scored on the validation records (window probabilities averaged per
    record, as the trainer evaluates); the best ``metric`` wins (ties: the smaller ``C``, the stronger penalty).

    Returns:
        ``{"C", "weight", "bias", "history", "pipeline"}``: the chosen ``C``, the pipeline folded into one linear
        layer (:func:`logistic_head_weights`), one ``{"C", "val_<metric>", ...}`` entry per ``C``, and the fitted
        scikit-learn pipeline.

    Raises:
        ValueError: regression tasks, attention-pooled (frame) embeddings, or an empty grid; a ``metric`` the
            task does not report (a :class:`~ecg_adapt.training.recipe.RecipeError` naming
            ``training.metric_for_best_model``).
    """
    from ..tasks.windows import aggregate_windows

    if task.problem_type == "regression":
        raise ValueError("a logistic-regression probe is for classification tasks; train a regression target with the "
                         "head probe (training.probe: head)")
    if train.embeddings.ndim != 2:
        raise ValueError("a logistic-regression probe needs pooled embeddings (model.pooling: mean), not frames")
    if not c_grid:
        raise ValueError("the C grid of the logistic-regression probe is empty")
    x_train = train.embeddings.numpy().astype(np.float64)
    y_train = train.labels[train.row_record]
    if task.multi_label:
        y_train = y_train.astype(int)
    x_val = validation.embeddings.numpy().astype(np.float64)
    present = np.unique(validation.row_record)
    y_val = validation.labels[present]
    history: list[dict[str, Any]] = []
    best: tuple[float, Any] | None = None
    best_value: float | None = None
    for c in c_grid:
        pipe = _fit_logistic(x_train, y_train, task.multi_label, float(c), seed, max_iter)
        window_probs = pipe.predict_proba(x_val)
        if not task.multi_label and window_probs.shape[1] != task.num_labels:  # classes absent from training
            full = np.zeros((len(window_probs), task.num_labels))
            full[:, [int(k) for k in pipe[-1].classes_]] = window_probs
            window_probs = full
        probs = aggregate_windows(window_probs, validation.row_record, method=aggregation,
                                  n_records=validation.n_records)[present]
        m = task.metrics(y_val, probs)
        value = selection_value(m, metric, task.name)  # an unknown metric is an error, not "C[0] by default"
        history.append({"C": float(c), f"val_{metric}": value, "val_" + task.primary_metric: m.get(task.primary_metric)})
        if value is None or not np.isfinite(value):
            continue
        if best_value is None or (value > best_value if greater_is_better else value < best_value):
            best, best_value = (float(c), pipe), float(value)
    if best is None:  # the metric was undefined for every C (e.g. a validation split without both outcomes)
        best = (float(c_grid[0]), _fit_logistic(x_train, y_train, task.multi_label, float(c_grid[0]), seed, max_iter))
    weight, bias = logistic_head_weights(best[1], task.num_labels, task.multi_label)
    return {"C": best[0], "weight": weight, "bias": bias, "history": history, "pipeline": best[1],
            "best_value": best_value}
