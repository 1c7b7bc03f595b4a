"""A classifier that sees the neighbouring windows: backbone per window, a light sequence model across them.

Sleep stages and apnea minutes are scored by looking at the epochs around the one being scored.
``ECGSequenceClassifier`` encodes each of ``K = 2 * context + 1`` consecutive windows with an
:class:`~ecg_adapt.models.classifier.ECGClassifier`'s backbone and pooling (composition: the window classifier
is a submodule, its pooling is not re-implemented), runs a small bidirectional GRU or a one-layer transformer
over the K pooled embeddings, and predicts the centre window's label with the window classifier's own head::

    pooled_k      = window_classifier(window_k).pooled                      k = 0 .. K-1
    centre        = pooled_c + out_proj(sequence_model(in_proj(pooled_0 .. pooled_{K-1}))[c])
    logits        = window_classifier.classifier(dropout(centre))

Adaptation: :func:`ecg_adapt.adaptation.adapt` applies any method (LoRA and the other peft methods, bottleneck
adapters, prompts, probes, full fine-tuning) to the window classifier inside; the sequence model always trains
beside it, and :func:`~ecg_adapt.adaptation.save_adapted` / :func:`~ecg_adapt.adaptation.load_adapted` save and
reload both. For prediction on whole recordings the config records the epoch, the channel labels that carry the
ECG in a polysomnography file, the contract lead they were fed as and the windows per epoch.

``out_proj`` starts at zero, so a fresh sequence classifier computes exactly what its window classifier
computes: :meth:`ECGSequenceClassifier.from_classifier` turns a trained window classifier into a context model
that starts from the window model's predictions and learns what the neighbours add. ``sequence_model="none"``
encodes only the centre window (a window classifier with the sequence model's input format, as a baseline).

Neighbour windows that do not exist (the ends of a recording; their ``attention_mask`` is all zero, as
:class:`~ecg_adapt.data.context.ContextWindowDataset` gives them) are not run through the backbone: they get a
learned "missing window" embedding, and the transformer also excludes them from attention.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, PreTrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from .classifier import _PROBLEM_TYPES, ECGClassifier, ECGClassifierConfig, classification_loss

SEQUENCE_MODELS = ("gru", "transformer", "none")


@strict
class ECGSequenceClassifierConfig(PreTrainedConfig):
    r"""Configuration of :class:`ECGSequenceClassifier`.

    The window fields are those of :class:`~ecg_adapt.models.classifier.ECGClassifierConfig` (the window
    classifier is rebuilt from them):

    backbone_config (`dict`): the backbone's config (``config.to_dict()``).
    backbone_name_or_path (`str`): where the pretrained backbone came from (hub id or folder).
    pooling (`str`): pooling of each window's frames (``"mean"``, see ``ECGClassifierConfig``).
    classifier_dropout (`float`): dropout before the linear head.
    backbone_layerdrop (`float`): LayerDrop of the backbone while fine-tuning.
    initializer_range (`float`): std of the head's and the position embedding's initial weights.

    The sequence fields:

    context (`int`): windows on each side of the centre; the input holds ``K = 2 * context + 1`` windows.
    sequence_model (`str`): ``"gru"`` (bidirectional GRU), ``"transformer"`` (pre-norm encoder layers with a
        learned position embedding, missing windows masked out of attention) or ``"none"`` (centre window only).
    sequence_hidden_size (`int`): width of the sequence model (GRU hidden size per direction; transformer
        ``d_model``, with a feed-forward of ``4 * sequence_hidden_size``).
    sequence_num_layers (`int`): GRU or transformer layers.
    sequence_num_heads (`int`): transformer attention heads (must divide ``sequence_hidden_size``).
    sequence_dropout (`float`): dropout inside the sequence model.

    The recording fields (what :func:`ecg_adapt.inference` needs to cut a whole polysomnography file into the
    model's inputs; ``None`` where the model was not trained on recordings):

    epoch_seconds (`float`): the scoring epoch the centre window stands for (30 s for sleep stages, 60 s for
        Apnea-ECG minutes).
    ecg_channels (`list[str]`): labels of the channels of a PSG / long-recording file that carry the ECG, in order
        of preference (the first one a file has is read), matched case-insensitively, e.g. ``["ECG", "EKG"]``;
        filled from the data source's ``ecg_channel`` when training.
    ecg_lead (`str`): the lead of the backbone's signal contract that this channel is fed as, e.g. ``"I"`` for the
        1-lead ECGFounder. A PSG ECG is one bipolar chest/arm lead closest to lead II or I depending on the
        montage; the recipes name it after the backbone's single lead (``data.source_options.lead_name``), and
        ``None`` means the channel was fed under its own label.
    windows_per_epoch (`int`): the backbone windows the processor cuts from one epoch (3 for 30 s and 10 s
        windows). ``context`` counts windows: window ``w`` of epoch ``i`` sits at position ``i * windows_per_epoch
        + w`` of the recording and its neighbours are the adjacent positions (absent ones: zeros, mask 0); an
        epoch's probabilities are the mean of its windows' (see :mod:`ecg_adapt.data.context`).
    """

    model_type = "ecg_sequence_classifier"

    backbone_config: dict[str, Any] | None = None
    backbone_name_or_path: str | None = None
    pooling: str = "mean"
    classifier_dropout: float | int = 0.1
    backbone_layerdrop: float | int = 0.0
    initializer_range: float = 0.02
    context: int = 2
    sequence_model: str = "gru"
    sequence_hidden_size: int = 128
    sequence_num_layers: int = 1
    sequence_num_heads: int = 4
    sequence_dropout: float | int = 0.1
    epoch_seconds: float | int = 30.0
    ecg_channels: list[str] | None = None
    ecg_lead: str | None = None
    windows_per_epoch: int | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        # Regression is a window-classifier problem type only: the sequence model's loss and per-epoch
        # probability averaging are classification's.
        allowed = tuple(t for t in _PROBLEM_TYPES if t != "regression")
        if self.problem_type is not None and self.problem_type not in allowed:
            raise ValueError(f"problem_type of a sequence model must be one of {allowed}, got {self.problem_type!r}")
        if self.sequence_model not in SEQUENCE_MODELS:
            raise ValueError(f"sequence_model must be one of {SEQUENCE_MODELS}, got {self.sequence_model!r}")
        if self.context < 0:
            raise ValueError(f"context must be >= 0, got {self.context}")
        if self.sequence_hidden_size < 1 or self.sequence_num_layers < 1:
            raise ValueError("sequence_hidden_size and sequence_num_layers must be positive")
        if self.windows_per_epoch is not None and self.windows_per_epoch < 1:
            raise ValueError(f"windows_per_epoch must be >= 1, got {self.windows_per_epoch}")
        if self.epoch_seconds <= 0:
            raise ValueError(f"epoch_seconds must be positive, got {self.epoch_seconds}")
        if self.ecg_channels is not None and (not self.ecg_channels or not all(isinstance(c, str) and c for c in self.ecg_channels)):
            raise ValueError(f"ecg_channels must be a non-empty list of channel labels (or None), got {self.ecg_channels!r}")
        if self.sequence_model == "transformer" and self.sequence_hidden_size % self.sequence_num_heads:
            raise ValueError(f"sequence_num_heads {self.sequence_num_heads} must divide sequence_hidden_size "
                             f"{self.sequence_hidden_size}")

    @property
    def window_count(self) -> int:
        """Windows per input, ``K = 2 * context + 1``."""
        return 2 * self.context + 1

    def window_classifier_config(self) -> ECGClassifierConfig:
        """The :class:`ECGClassifierConfig` of the window classifier (same backbone, pooling, head and labels)."""
        return ECGClassifierConfig(
            backbone_config=self.backbone_config,
            backbone_name_or_path=self.backbone_name_or_path,
            pooling=self.pooling,
            classifier_dropout=self.classifier_dropout,
            backbone_layerdrop=self.backbone_layerdrop,
            initializer_range=self.initializer_range,
            id2label=dict(self.id2label),
            label2id=dict(self.label2id),
            problem_type=self.problem_type,
        )


@dataclass
class ECGSequenceClassifierOutput(ModelOutput):
    """Output of :class:`ECGSequenceClassifier`.

    ``loss`` (when labels are given), ``logits`` of the centre window, ``pooled`` the centre's features after the
    sequence model (the head's input before dropout) and ``window_embeddings`` ``(B, K, hidden)`` (missing
    windows hold the learned missing-window embedding; ``None`` for ``sequence_model="none"``).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    window_embeddings: torch.Tensor | None = None


class ContextEncoder(nn.Module):
    """The sequence model over the K window embeddings: returns the centre's correction ``(B, hidden)``."""

    def __init__(self, config: ECGSequenceClassifierConfig, hidden_size: int) -> None:
        super().__init__()
        d, k = config.sequence_hidden_size, config.window_count
        self.kind = config.sequence_model
        self.centre = config.context
        self.missing_window = nn.Parameter(torch.zeros(hidden_size))
        self.in_proj = nn.Linear(hidden_size, d)
        self.dropout = nn.Dropout(float(config.sequence_dropout))
        if self.kind == "gru":
            self.gru = nn.GRU(d, d, num_layers=config.sequence_num_layers, batch_first=True, bidirectional=True,
                              dropout=float(config.sequence_dropout) if config.sequence_num_layers > 1 else 0.0)
            out = 2 * d
        else:
            self.position = nn.Parameter(torch.zeros(k, d))
            layer = nn.TransformerEncoderLayer(d, config.sequence_num_heads, 4 * d, float(config.sequence_dropout),
                                               activation="gelu", batch_first=True, norm_first=True)
            self.layers = nn.ModuleList([layer] + [copy.deepcopy(layer) for _ in range(config.sequence_num_layers - 1)])
            self.norm = nn.LayerNorm(d)
            out = d
        self.out_proj = nn.Linear(out, hidden_size)

    def forward(self, embeddings: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """``embeddings`` ``(B, K, hidden)``, ``present`` ``(B, K)`` bool -> correction of the centre ``(B, hidden)``."""
        h = self.dropout(self.in_proj(embeddings))
        if self.kind == "gru":
            h, _ = self.gru(h)
        else:
            h = h + self.position
            for layer in self.layers:
                h = layer(h, src_key_padding_mask=~present)
            h = self.norm(h)
        return self.out_proj(h[:, self.centre])


class ECGSequenceClassifier(PreTrainedModel):
    """Predict the centre window's labels from ``K = 2*context+1`` consecutive windows (see the module doc).

    Input ``input_values`` ``(B, K, *input_shape)`` and ``attention_mask`` (same shape; a window whose mask is
    all zero is a missing neighbour), ``labels`` of the centre window. Saved and reloaded with
    ``save_pretrained`` / ``from_pretrained`` (``config.json`` + weights) like :class:`ECGClassifier`.

    Example:
        >>> from ecg_adapt import load_backbone                                           # doctest: +SKIP
        >>> backbone = load_backbone("path/to/hubert-ecg")                                 # doctest: +SKIP
        >>> model = ECGSequenceClassifier.from_backbone(backbone, ["W", "N1", "N2", "N3", "REM"], context=2,
        ...     problem_type="single_label_classification", sequence_model="gru")         # doctest: +SKIP
        >>> model(input_values=batch["input_values"], attention_mask=batch["attention_mask"]).logits.shape  # doctest: +SKIP
        torch.Size([8, 5])
    """

    config_class = ECGSequenceClassifierConfig
    config: ECGSequenceClassifierConfig
    base_model_prefix = "window_classifier"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True

    def __init__(self, config: ECGSequenceClassifierConfig, window_classifier: ECGClassifier | None = None) -> None:
        super().__init__(config)
        if window_classifier is None:
            if not config.backbone_config:
                raise ValueError("ECGSequenceClassifierConfig.backbone_config is empty: pass a window classifier or its config")
            window_classifier = ECGClassifier(config.window_classifier_config())
        elif window_classifier.config.num_labels != config.num_labels:
            raise ValueError(f"the window classifier has {window_classifier.config.num_labels} labels, the config "
                             f"{config.num_labels}")
        self.window_classifier = window_classifier
        self.config.backbone_config = window_classifier.backbone.config.to_dict()
        hidden = window_classifier.backbone.config.hidden_size  # the width ECGClassifier sizes its head with
        self.context_encoder = ContextEncoder(config, hidden) if config.sequence_model != "none" else None
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # The window classifier (a PreTrainedModel) initialises itself; ours are the sequence model's extras.
        # out_proj starts at zero: a fresh model computes exactly what its window classifier computes.
        enc = getattr(self, "context_encoder", None)
        if enc is None:
            return
        if module is enc.out_proj:
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)
        elif module is enc:
            nn.init.zeros_(module.missing_window)
            if hasattr(module, "position"):
                nn.init.normal_(module.position, std=self.config.initializer_range)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_backbone(
        cls,
        backbone: PreTrainedModel,
        labels: list[str],
        context: int = 2,
        problem_type: str = "multi_label_classification",
        **config_kwargs: Any,
    ) -> ECGSequenceClassifier:
        """A fresh window classifier (:meth:`ECGClassifier.from_backbone`) on ``backbone`` plus a sequence model.

        ``config_kwargs`` may hold the window fields of :class:`ECGClassifierConfig` (``classifier_dropout``, ...)
        and the sequence fields of :class:`ECGSequenceClassifierConfig` (``sequence_model``, ...).
        """
        window_fields = {"pooling", "classifier_dropout", "backbone_layerdrop", "initializer_range"}
        window_kwargs = {k: v for k, v in config_kwargs.items() if k in window_fields}
        window = ECGClassifier.from_backbone(backbone, labels, problem_type=problem_type, **window_kwargs)
        return cls.from_classifier(window, context=context, **{k: v for k, v in config_kwargs.items() if k not in window_fields})

    @classmethod
    def from_classifier(cls, classifier: ECGClassifier, context: int = 2, **sequence_kwargs: Any) -> ECGSequenceClassifier:
        """Wrap a (possibly trained) :class:`ECGClassifier`: same backbone, pooling, head and labels.

        The module is shared, not copied. Because ``out_proj`` starts at zero, the new model's logits equal
        the window classifier's logits on the centre window until it is trained.
        """
        c = classifier.config
        config = ECGSequenceClassifierConfig(
            backbone_config=c.backbone_config,
            backbone_name_or_path=c.backbone_name_or_path,
            pooling=c.pooling,
            classifier_dropout=c.classifier_dropout,
            backbone_layerdrop=c.backbone_layerdrop,
            initializer_range=c.initializer_range,
            id2label=dict(c.id2label),
            label2id=dict(c.label2id),
            problem_type=c.problem_type,
            context=context,
            **sequence_kwargs,
        )
        return cls(config, window_classifier=classifier)

    # ------------------------------------------------------------------ accessors
    @property
    def base_window_classifier(self) -> ECGClassifier:
        """The plain :class:`ECGClassifier` inside, also after :func:`~ecg_adapt.adaptation.adapt` has put an
        adapter around it (``window_classifier`` is then the peft / ecg_adapt wrapper that owns the adapter's
        parameters; every method acts on the classifier's own modules, in place or through hooks, so calling
        this classifier runs the adapted function)."""
        wc = self.window_classifier
        return wc.get_base_model() if hasattr(wc, "get_base_model") else wc

    @property
    def backbone(self) -> PreTrainedModel:
        """The window classifier's backbone."""
        return self.base_window_classifier.backbone

    @property
    def labels(self) -> list[str]:
        return [self.config.id2label[i] for i in range(self.config.num_labels)]

    @property
    def signal_contract(self) -> dict[str, Any]:
        return self.base_window_classifier.signal_contract

    # ------------------------------------------------------------------ forward
    def _embed(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        # The window classifier's pooled features (its backbone + pooling); its logits are a by-product of one
        # small linear layer. See the report: an ``ECGClassifier.embed`` method would avoid computing them.
        return self.base_window_classifier.embed(input_values, attention_mask)[0]

    def _classify(self, centre: torch.Tensor) -> torch.Tensor:
        """The window classifier's head on the centre's features (the live head: an adapter's trained copy when
        the classifier is adapted)."""
        clf = self.base_window_classifier
        if self.config.pooling != "attention":
            return clf.classifier(clf.dropout(centre))
        # Attention pooling: ``centre`` is the attention head's output before its class projection, so only that
        # projection is applied, taken from the head that is live now: peft's trained copy of a modules_to_save
        # head, or the routed ecg_adapt adapter's own head.
        head = clf.classifier
        if hasattr(head, "modules_to_save") and hasattr(head, "active_adapter"):
            name = head.active_adapter
            head = head.modules_to_save[name[0] if isinstance(name, (list, tuple)) else name]
        current = getattr(self.window_classifier, "_current_adapter", None)
        adapter = current() if callable(current) else None
        if adapter is not None:
            head = adapter.classifier
        return head.out_proj(centre)

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> ECGSequenceClassifierOutput:
        k = self.config.window_count
        if input_values.ndim < 3 or input_values.shape[1] != k:
            raise ValueError(f"input_values must be (batch, K={k}, *input_shape) for context={self.config.context}, "
                             f"got shape {tuple(input_values.shape)}")
        if attention_mask is not None and attention_mask.shape != input_values.shape:
            raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} differs from input_values "
                             f"{tuple(input_values.shape)}")
        b, c = input_values.shape[0], self.config.context
        window_shape = tuple(input_values.shape[2:])
        if self.context_encoder is None:
            centre = self._embed(input_values[:, c], None if attention_mask is None else attention_mask[:, c])
            embeddings = None
        else:
            if attention_mask is None:
                present = torch.ones(b, k, dtype=torch.bool, device=input_values.device)
            else:
                present = attention_mask.reshape(b, k, -1).ne(0).any(-1)
            if not bool(present[:, c].all()):
                raise ValueError("a centre window has an all-zero attention_mask: the centre must be a real window")
            x = input_values.reshape((b * k,) + window_shape)
            m = None if attention_mask is None else attention_mask.reshape((b * k,) + window_shape)
            # Also when every window is present, the missing-window embedding enters the graph (overwritten, so
            # with a zero gradient): under DistributedDataParallel a parameter left out of some steps' graphs
            # would fail the gradient reduction (without find_unused_parameters).
            rows = present.reshape(-1).nonzero().squeeze(1)
            if bool(present.all()):
                pooled = self._embed(x, m)
            else:
                pooled = self._embed(x[rows], None if m is None else m[rows])
            missing = self.context_encoder.missing_window.to(pooled.dtype).expand(b * k, pooled.shape[-1])
            embeddings = missing.index_put((rows,), pooled).reshape(b, k, -1)
            centre = embeddings[:, c] + self.context_encoder(embeddings, present)
        logits = self._classify(centre)
        loss = None if labels is None else classification_loss(logits, labels, self.config.problem_type)
        return ECGSequenceClassifierOutput(loss=loss, logits=logits, pooled=centre, window_embeddings=embeddings)


AutoConfig.register("ecg_sequence_classifier", ECGSequenceClassifierConfig, exist_ok=True)

__all__ = [
    "SEQUENCE_MODELS",
    "ContextEncoder",
    "ECGSequenceClassifier",
    "ECGSequenceClassifierConfig",
    "ECGSequenceClassifierOutput",
]
