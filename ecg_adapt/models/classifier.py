"""A classification head over any registered backbone.

``ECGClassifier`` = backbone → pooling → head. Two heads: ``pooling="mean"`` (the backbone's own pooled
features, else the masked mean over frames → dropout → linear: the linear probe) and ``pooling="attention"``
(a learnable-query attention-pooling head over the frames: the benchmark's attention probe). The loss follows
``config.problem_type`` (transformers' names): ``"multi_label_classification"`` uses BCE-with-logits,
``"single_label_classification"`` uses cross-entropy, ``"regression"`` (continuous targets, e.g. age) MSE or L1
(``config.regression_loss``) over the targets that are not NaN, on standardised targets when the config holds
the training targets' ``target_mean``/``target_std``; the model then outputs values in the target's unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from .heads import AttentionPoolingHead

_PROBLEM_TYPES = ("multi_label_classification", "single_label_classification", "regression")
_REGRESSION_LOSSES = ("mse", "l1")
_POOLINGS = ("mean", "attention")


@strict
class ECGClassifierConfig(PreTrainedConfig):
    r"""Configuration of :class:`ECGClassifier`.

    backbone_config (`dict`): the backbone's config (``config.to_dict()``); the backbone is rebuilt from it.
    backbone_name_or_path (`str`): where the pretrained backbone came from (a hub id or a local folder);
        adapter-only saves reload the backbone from here.
    pooling (`str`): ``"mean"`` — the backbone's pooled features (mean over frames whose attention mask is set
        when it has none) into a linear head; ``"attention"`` — a learnable query attends over the frames
        (:class:`~ecg_adapt.models.heads.AttentionPoolingHead`, the ICLR 2026 ECG FM benchmark's attention probe).
    attention_heads (`int`, *optional*): heads of the attention-pooling head (default: the largest of 16 or
        fewer that divides the backbone width, 16 in the benchmark).
    classifier_dropout (`float`): dropout before the linear head.
    backbone_layerdrop (`float`): LayerDrop used while fine-tuning (0 keeps every layer, which DDP needs).
    initializer_range (`float`): std of the head's initial weights.
    regression_loss (`str`): ``"mse"`` or ``"l1"`` (``problem_type="regression"`` only).
    target_mean, target_std (`list[float]`, *optional*): per target, the training targets' mean and standard
        deviation (regression): the head is trained on standardised targets and its outputs are mapped back, so
        ``logits`` are in the target's unit (years for age). ``None``: no standardisation.
    """

    model_type = "ecg_classifier"

    backbone_config: dict[str, Any] | None = None
    backbone_name_or_path: str | None = None
    pooling: str = "mean"
    attention_heads: int | None = None
    classifier_dropout: float | int = 0.1
    backbone_layerdrop: float | int = 0.0
    initializer_range: float = 0.02
    regression_loss: str = "mse"
    target_mean: list[float] | None = None
    target_std: list[float] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.pooling not in _POOLINGS:
            raise ValueError(f"Unknown pooling {self.pooling!r}; supported: {list(_POOLINGS)}")
        if self.problem_type is not None and self.problem_type not in _PROBLEM_TYPES:
            raise ValueError(f"problem_type must be one of {_PROBLEM_TYPES}, got {self.problem_type!r}")
        if self.regression_loss not in _REGRESSION_LOSSES:
            raise ValueError(f"regression_loss must be one of {_REGRESSION_LOSSES}, got {self.regression_loss!r}")
        if (self.target_mean is None) != (self.target_std is None):
            raise ValueError("target_mean and target_std are given together (or neither)")
        if self.target_std is not None and any(float(s) <= 0 for s in self.target_std):
            raise ValueError(f"target_std must be positive, got {self.target_std}")


@dataclass
class ECGClassifierOutput(ModelOutput):
    """Output of :class:`ECGClassifier`: ``loss`` (when labels are given), ``logits``, ``pooled`` features."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None


def masked_mean(hidden: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the frame axis of ``(batch, frames, hidden)``, counting only frames where the mask is set."""
    if frame_mask is None:
        return hidden.mean(dim=1)
    m = frame_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


class ECGClassifier(PreTrainedModel):
    """Multi-label or multi-class classifier over an ECG backbone.

    Pooling: a backbone that returns ``pooler_output`` (its original feature vector, computed with the
    attention mask) is used as is; otherwise frames of ``last_hidden_state`` are averaged where the
    backbone's ``frame_mask(attention_mask, n_frames)`` is set.

    Build one on a loaded backbone with :meth:`from_backbone`; reload a fully fine-tuned one with
    ``ECGClassifier.from_pretrained(dir)``, or any adapted one with :func:`ecg_adapt.load_adapted`.

    Example:
        >>> from ecg_adapt import load_backbone, ECGClassifier
        >>> backbone = load_backbone("path/to/hubert-ecg")                                  # doctest: +SKIP
        >>> model = ECGClassifier.from_backbone(backbone, ["NORM", "MI", "STTC", "CD", "HYP"],
        ...                                     problem_type="multi_label_classification")  # doctest: +SKIP
    """

    config_class = ECGClassifierConfig
    config: ECGClassifierConfig
    base_model_prefix = "backbone"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: ECGClassifierConfig, backbone: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        if backbone is None:
            if not config.backbone_config:
                raise ValueError("ECGClassifierConfig.backbone_config is empty: pass a backbone or its config")
            backbone_config = AutoConfig.for_model(**config.backbone_config)
            backbone = AutoModel.from_config(backbone_config)
        self.backbone = backbone
        if hasattr(self.backbone, "prepare_for_finetuning"):
            self.backbone.prepare_for_finetuning(layerdrop=float(config.backbone_layerdrop))
        self.config.backbone_config = self.backbone.config.to_dict()
        hidden = self.backbone.config.hidden_size
        self.dropout = nn.Dropout(float(config.classifier_dropout))
        # The head is called ``classifier`` whatever its kind, so every adaptation method (linear_probe trains
        # only it; peft keeps it trainable through modules_to_save) treats both heads alike.
        if config.pooling == "attention":
            self.classifier = AttentionPoolingHead(hidden, config.num_labels, config.attention_heads)
        else:
            self.classifier = nn.Linear(hidden, config.num_labels)
            nn.init.normal_(self.classifier.weight, std=config.initializer_range)
            nn.init.zeros_(self.classifier.bias)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # Only the head is ours; backbone modules keep their own init (or loaded weights).
        if module is getattr(self, "classifier", None) and isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
            nn.init.zeros_(module.bias)

    # Set by ecg_adapt.adapt(method="linear_probe"): a frozen backbone stays in eval mode while training.
    freeze_backbone_in_train: bool = False
    # Frozen submodules that compute fixed features (set by adaptation methods): kept in eval mode in training,
    # so their dropout is off and their BatchNorm statistics stay as pretrained.
    eval_in_train: tuple[nn.Module, ...] = ()

    def train(self, mode: bool = True) -> "ECGClassifier":
        super().train(mode)
        if mode and self.freeze_backbone_in_train:
            self.backbone.eval()
        if mode:
            for module in self.eval_in_train:
                module.eval()
        return self

    @classmethod
    def from_backbone(
        cls,
        backbone: PreTrainedModel,
        labels: list[str],
        problem_type: str = "multi_label_classification",
        **config_kwargs: Any,
    ) -> "ECGClassifier":
        """Put a fresh head for ``labels`` on a loaded backbone."""
        if not labels:
            raise ValueError("labels must name at least one class")
        if problem_type not in _PROBLEM_TYPES:
            raise ValueError(f"problem_type must be one of {_PROBLEM_TYPES}, got {problem_type!r}")
        if problem_type == "single_label_classification" and len(labels) < 2:
            raise ValueError("single-label classification needs at least two classes")
        config = ECGClassifierConfig(
            backbone_config=backbone.config.to_dict(),
            backbone_name_or_path=getattr(backbone, "name_or_path", None) or None,
            id2label={i: name for i, name in enumerate(labels)},
            label2id={name: i for i, name in enumerate(labels)},
            problem_type=problem_type,
            **config_kwargs,
        )
        return cls(config, backbone=backbone)

    @property
    def labels(self) -> list[str]:
        return [self.config.id2label[i] for i in range(self.config.num_labels)]

    @property
    def signal_contract(self) -> dict[str, Any]:
        return self.backbone.config.signal_contract

    def _frames(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[Any, torch.Tensor, torch.Tensor | None]:
        """The backbone's output, its frames and which frames hold signal (``None``: all of them)."""
        # An all-ones mask changes nothing but costs a dense attention bias: drop it.
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        out = self.backbone(input_values, attention_mask=attention_mask)
        hidden = out.last_hidden_state
        frame_mask = None
        if attention_mask is not None and hasattr(self.backbone, "frame_mask"):
            frame_mask = self.backbone.frame_mask(attention_mask, hidden.shape[1])
        return out, hidden, frame_mask

    def _pool(self, out: Any, hidden: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
        """Mean pooling: the backbone's own ``pooler_output`` (computed with the mask, as the original does),
        else the mean over the frames the mask keeps (HuBERT-ECG has no pooling of its own)."""
        pooled = getattr(out, "pooler_output", None)
        return masked_mean(hidden, frame_mask) if pooled is None else pooled

    def embed(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The pooled features (the head's input, before dropout) and the backbone's ``last_hidden_state``.

        Mean pooling: see :meth:`_pool`. Attention pooling: the attention head's output before its class
        projection.
        """
        out, hidden, frame_mask = self._frames(input_values, attention_mask)
        if self.config.pooling == "attention":
            return self.classifier(hidden, frame_mask)[1], hidden
        return self._pool(out, hidden, frame_mask), hidden

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> ECGClassifierOutput:
        out, hidden, frame_mask = self._frames(input_values, attention_mask)
        if self.config.pooling == "attention":
            # No dropout before this head: the benchmark's attention probe has none.
            logits, pooled = self.classifier(hidden, frame_mask)
        else:
            pooled = self._pool(out, hidden, frame_mask)
            logits = self.classifier(self.dropout(pooled))
        loss, logits = head_loss_and_logits(logits, labels, self.config)
        return ECGClassifierOutput(loss=loss, logits=logits, pooled=pooled, last_hidden_state=hidden)


def regression_loss(outputs: torch.Tensor, targets: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """MSE or L1 over the targets that are not NaN (records without a value are masked, not zero-filled); 0 (with a
    gradient path) when a batch holds no value at all."""
    targets = targets.to(outputs.dtype).reshape(outputs.shape)
    keep = torch.isfinite(targets)
    err = torch.where(keep, outputs - torch.nan_to_num(targets), torch.zeros_like(outputs))
    per = err.pow(2) if kind == "mse" else err.abs()
    return per.sum() / keep.sum().clamp_min(1)


def head_loss_and_logits(
    raw: torch.Tensor, labels: torch.Tensor | None, config: "ECGClassifierConfig"
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The loss of the head's raw output and the logits the model returns.

    Classification: the loss from ``problem_type`` and the raw logits. Regression: the loss on standardised
    targets (when ``config.target_mean``/``target_std`` are set) and the outputs mapped back to the targets' unit.
    """
    if config.problem_type != "regression":
        return (None if labels is None else classification_loss(raw, labels, config.problem_type)), raw
    mean = std = None
    if config.target_mean is not None:
        mean = torch.tensor(config.target_mean, dtype=raw.dtype, device=raw.device)
        std = torch.tensor(config.target_std, dtype=raw.dtype, device=raw.device)
    loss = None
    if labels is not None:
        target = labels.to(raw.dtype).reshape(raw.shape)
        if mean is not None:
            target = (target - mean) / std
        loss = regression_loss(raw, target, config.regression_loss)
    return loss, raw if mean is None else raw * std + mean


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str) -> torch.Tensor:
    """Cross-entropy on class indices (``single_label_classification``), else BCE on multi-hot labels."""
    if problem_type == "single_label_classification":
        return nn.functional.cross_entropy(logits, labels.long())
    return nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


AutoConfig.register("ecg_classifier", ECGClassifierConfig, exist_ok=True)
