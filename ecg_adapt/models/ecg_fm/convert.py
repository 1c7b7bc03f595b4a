"""Convert an ECG-FM release (fairseq-signals checkpoint) into an ecg_adapt folder.

The released files (HF ``wanglab/ecg-fm``: ``mimic_iv_ecg_physionet_pretrained.pt``,
``mimic_iv_ecg_finetuned.pt``) are ``torch.save`` dicts written by fairseq-signals' ``Trainer``:
``{'args', 'cfg', 'model', 'criterion', 'optimizer_history', 'task_state', 'extra_state',
'last_optimizer_state'}``. ``cfg`` is the hydra config as plain nested dicts (``cfg['model']`` holds the
architecture), ``model`` the state dict. The converter:

1. reads the file with ``torch.load(weights_only=True)`` (``argparse.Namespace`` allowed, for legacy ``args``);
   files that pickle other classes (e.g. ``omegaconf`` configs) need ``allow_pickle=True``; they are then still
   read by torch's weights-only unpickler, with each unknown class replaced by an inert stand-in (no code runs);
2. keeps only ``model`` (optimiser state and training metadata are ignored);
3. for a fine-tuned classifier (backbone under ``encoder.``), strips that prefix and sets the head ``proj.*``
   aside (reported, and available as :attr:`ECGFMConversionReport.head` for :class:`ECGFMOriginalClassifier`);
4. renames old weight-norm keys (``weight_g``/``weight_v``) to ``parametrizations.weight.original0/1``;
5. drops the pretraining-only modules (``mask_emb``, ``quantizer.*``, ``project_q.*``, ``final_proj.*``, ...);
6. reads every size from the tensors, and from ``cfg['model']`` only what tensors cannot tell (attention heads,
   conv strides, ``layer_norm_first``); without a ``cfg`` those come from the released architecture;
7. loads strictly (every missing, unexpected or mis-shaped key is listed) and saves ``config.json``,
   ``model.safetensors`` and ``preprocessor_config.json``.
"""

from __future__ import annotations

import argparse
import ast
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from ...processing.contract import STANDARD_12_LEADS, SignalContract
from ..conversion import (
    ConversionReport,
    canonical_weight_norm_keys,
    drop_keys,
    load_strict,
    save_converted,
    override_flags,
    plain_data,
    strip_prefix,
    torch_load_checkpoint,
)
from .configuration import (
    ECG_FM_CONTRACT,
    RELEASED_ARCHITECTURE,
    ECGFMConfig,
    default_processor_steps,
)
from .modeling import ECGFMModel

logger = logging.getLogger(__name__)

# Modules of the pretraining model (Wav2Vec2CMSCModel) that feature extraction does not use.
PRETRAINING_ONLY = (
    r"^mask_emb$",
    r"^quantizer\.",
    r"^input_quantizer\.",
    r"^project_q\.",
    r"^project_inp\.",
    r"^target_glu\.",
    r"^final_proj\.",
)
# The head of a fine-tuned ECGTransformerClassificationModel.
HEAD_PREFIX = "proj."

# fairseq-signals cfg['model'] name -> ECGFMConfig field (conv_feature_layers is split into three fields).
FAIRSEQ_CONFIG_NAMES: dict[str, str] = {
    "in_d": "num_leads",
    "conv_bias": "conv_bias",
    "extractor_mode": "feat_extract_norm",
    "encoder_embed_dim": "hidden_size",
    "encoder_layers": "num_hidden_layers",
    "encoder_attention_heads": "num_attention_heads",
    "encoder_ffn_embed_dim": "intermediate_size",
    "conv_pos": "num_conv_pos_embeddings",
    "conv_pos_groups": "num_conv_pos_embedding_groups",
    "layer_norm_first": "layer_norm_first",
    "dropout": "hidden_dropout",
    "attention_dropout": "attention_dropout",
    "activation_dropout": "activation_dropout",
    "dropout_input": "feat_proj_dropout",
    "encoder_layerdrop": "layerdrop",
}
# Training-time fields copied only from a fine-tuned file's cfg (a pretraining cfg holds pretraining dropouts,
# which the original replaces with the fine-tuning ones when it fine-tunes).
_FINETUNING_FIELDS = ("dropout", "attention_dropout", "activation_dropout", "dropout_input", "encoder_layerdrop")


@dataclass
class ECGFMConversionReport(ConversionReport):
    """:class:`~ecg_adapt.models.conversion.ConversionReport` plus what is specific to ECG-FM files.

    Attributes:
        source_model: ``cfg['model']['_name']`` of the file (``wav2vec2_cmsc``, ``ecg_transformer_classifier``).
        head: the fine-tuned classifier's ``proj.weight``/``proj.bias`` (empty for pretrained files). Not part of
            the backbone; :class:`ECGFMOriginalClassifier` puts it back on top to reproduce the original logits.
        notes: anything a user should know (settings read from the cfg, preprocessing flags).
    """

    source_model: str | None = None
    head: dict[str, torch.Tensor] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = super().summary()
        if self.head:
            text += f"; original head proj set aside ({tuple(self.head['weight'].shape)[0]} labels)"
        return text + "".join(f"; {n}" for n in self.notes)


# ---------------------------------------------------------------------------------------------- reading files
def read_fairseq_checkpoint(path: str | Path, allow_pickle: bool = False) -> dict[str, Any]:
    """Read a fairseq(-signals) checkpoint: ``{'model': state_dict, 'cfg': dict | None}`` (cfg as plain dicts).

    Also accepts a bare state dict saved with ``torch.save`` or as ``.safetensors`` (then ``cfg`` is ``None``).

    Raises:
        ValueError: the file pickles Python objects besides tensors and ``allow_pickle`` is false, or it holds
            no state dict.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        return {"model": load_file(str(path)), "cfg": None}
    # Legacy fairseq files keep their settings in an argparse.Namespace: a plain attribute bag, safe to build.
    # Files that pickle other classes (omegaconf configs) need allow_pickle; those are then built inert.
    obj = torch_load_checkpoint(path, allow_pickle=allow_pickle, safe_globals=[argparse.Namespace])
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        cfg = plain_data(obj.get("cfg")) if obj.get("cfg") is not None else None
        if cfg is None and obj.get("args") is not None:  # fairseq checkpoints from before hydra
            cfg = {"model": plain_data(obj["args"])}
        return {"model": dict(obj["model"]), "cfg": cfg}
    if isinstance(obj, dict) and obj and all(torch.is_tensor(v) for v in obj.values()):
        return {"model": dict(obj), "cfg": None}
    raise ValueError(f"{path}: not a fairseq-signals checkpoint (expected a dict with 'model', or a bare state dict)")


# ---------------------------------------------------------------------------------------------- keys
def canonicalise_state_dict(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], ECGFMConversionReport]:
    """Map original ECG-FM keys onto :class:`ECGFMModel` keys; see the module docstring (steps 3-5)."""
    report = ECGFMConversionReport()
    sd = strip_prefix(state_dict, ("module.",), report)  # DistributedDataParallel wrappers
    if any(k.startswith("encoder.feature_extractor.") for k in sd):
        # Fine-tuned classifier: backbone under encoder.*, head proj.*; nothing else may be there.
        report.stripped_prefix = (report.stripped_prefix or "") + "encoder."
        report.head = {k[len(HEAD_PREFIX):]: v for k, v in sd.items() if k.startswith(HEAD_PREFIX)}
        report.dropped.extend(k for k in sd if k.startswith(HEAD_PREFIX))
        sd = {k.removeprefix("encoder."): v for k, v in sd.items() if not k.startswith(HEAD_PREFIX)}
    sd = canonical_weight_norm_keys(sd, report)
    sd = drop_keys(sd, PRETRAINING_ONLY, report)
    return sd, report


def parse_conv_feature_layers(spec: str) -> list[tuple[int, int, int]]:
    """Parse fairseq's ``conv_feature_layers`` string (e.g. ``"[(256, 2, 2)] * 4"``) without ``eval``.

    Only list/tuple literals of integers combined with ``+`` and ``* int`` are accepted.
    """

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [ev(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = ev(node.left), ev(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"unsupported element {ast.dump(node)}")

    try:
        layers = ev(ast.parse(spec, mode="eval").body)
        out = [tuple(int(v) for v in layer) for layer in layers]
    except (SyntaxError, ValueError, TypeError) as e:
        raise ValueError(f"cannot read conv_feature_layers {spec!r}: {e}") from e
    if not out or any(len(layer) != 3 for layer in out):
        raise ValueError(f"conv_feature_layers {spec!r} is not a list of (dim, kernel, stride) triples")
    return out  # type: ignore[return-value]


def _parse_leads(spec: Any) -> list[str]:
    """``task.leads_to_load`` (``"['I', 'II']"``, ``"[0, 1]"`` or a list) -> contract lead names."""
    value = ast.literal_eval(spec) if isinstance(spec, str) else spec
    by_lower = {name.lower(): name for name in STANDARD_12_LEADS}
    return [STANDARD_12_LEADS[v] if isinstance(v, int) else by_lower[str(v).lower()] for v in value]


def config_from_checkpoint(
    state_dict: dict[str, torch.Tensor], cfg: dict[str, Any] | None, report: ECGFMConversionReport | None = None,
    config_overrides: dict[str, Any] | None = None,
) -> ECGFMConfig:
    """Build the :class:`ECGFMConfig` of a canonicalised state dict: sizes from the tensors, the rest from
    ``cfg['model']`` (or the released architecture when there is no cfg); ``config_overrides``
    (``ecg-adapt convert --config``) replaces any field, and gives strides and heads a file without cfg lacks.

    Raises:
        ValueError: the tensors do not look like ECG-FM, disagree with the cfg, or need a setting that neither
            the cfg nor the released architecture gives.
    """
    report = report or ECGFMConversionReport()
    overrides = dict(config_overrides or {})
    model_cfg = dict((cfg or {}).get("model") or {})
    task_cfg = dict((cfg or {}).get("task") or {})
    conv_idx = sorted(
        {int(m.group(1)) for k in state_dict if (m := re.match(r"feature_extractor\.conv_layers\.(\d+)\.0\.weight$", k))}
    )
    if not conv_idx or "encoder.layer_norm.weight" not in state_dict:
        raise ValueError(
            "Not an ECG-FM (fairseq-signals ECGTransformerModel) state dict: no 'feature_extractor.conv_layers.N.0.weight' "
            "or 'encoder.layer_norm.weight'"
        )
    conv_w = [state_dict[f"feature_extractor.conv_layers.{i}.0.weight"] for i in conv_idx]
    conv_dim = [int(w.shape[0]) for w in conv_w]
    conv_kernel = [int(w.shape[-1]) for w in conv_w]
    hidden = int(state_dict["encoder.layer_norm.weight"].shape[0])
    n_layers = len({int(m.group(1)) for k in state_dict if (m := re.match(r"encoder\.layers\.(\d+)\.", k))})
    v = state_dict.get("conv_pos.pos_conv.0.parametrizations.weight.original1")
    if v is None:
        raise ValueError("ECG-FM state dict without the positional conv weight ('conv_pos.pos_conv.0.weight_v' or its new name)")
    kwargs: dict[str, Any] = {
        "num_leads": int(conv_w[0].shape[1]),
        "conv_dim": conv_dim,
        "conv_kernel": conv_kernel,
        "conv_bias": "feature_extractor.conv_layers.0.0.bias" in state_dict,
        "feat_extract_norm": "layer" if "feature_extractor.conv_layers.0.2.1.weight" in state_dict else "group",
        "hidden_size": hidden,
        "num_hidden_layers": n_layers,
        "intermediate_size": int(state_dict["encoder.layers.0.fc1.weight"].shape[0]) if n_layers else RELEASED_ARCHITECTURE["intermediate_size"],
        "num_conv_pos_embeddings": int(v.shape[-1]),
        "num_conv_pos_embedding_groups": hidden // int(v.shape[1]),
    }

    # What tensors cannot tell: strides, heads, LayerNorm placement (cfg first, then the released architecture).
    if "conv_feature_layers" in model_cfg:
        layers = parse_conv_feature_layers(str(model_cfg["conv_feature_layers"]))
        if [(d, k) for d, k, _ in layers] != list(zip(conv_dim, conv_kernel)):
            raise ValueError(
                f"cfg conv_feature_layers {model_cfg['conv_feature_layers']!r} disagrees with the conv weights "
                f"(dims {conv_dim}, kernels {conv_kernel})"
            )
        kwargs["conv_stride"] = [s for _, _, s in layers]
    elif "conv_stride" in overrides:
        kwargs["conv_stride"] = list(overrides["conv_stride"])
    elif conv_kernel == RELEASED_ARCHITECTURE["conv_kernel"]:
        kwargs["conv_stride"] = list(RELEASED_ARCHITECTURE["conv_stride"])
        report.notes.append("no cfg: conv strides taken from the released architecture")
    else:
        raise ValueError(f"conv kernels {conv_kernel} are not the released ones and the file has no cfg to give the "
                         f"strides: give them with {override_flags(conv_stride='[...]')}")
    if "encoder_attention_heads" in model_cfg:
        kwargs["num_attention_heads"] = int(model_cfg["encoder_attention_heads"])
    elif "num_attention_heads" in overrides:
        kwargs["num_attention_heads"] = int(overrides["num_attention_heads"])
    elif hidden == RELEASED_ARCHITECTURE["hidden_size"]:
        kwargs["num_attention_heads"] = RELEASED_ARCHITECTURE["num_attention_heads"]
        report.notes.append("no cfg: attention heads taken from the released architecture")
    else:
        raise ValueError(
            f"hidden size {hidden} is not the released one ({RELEASED_ARCHITECTURE['hidden_size']}) and the file has no "
            f"cfg to give the number of attention heads: give it with {override_flags(num_attention_heads='N')}"
        )
    kwargs["layer_norm_first"] = bool(model_cfg.get("layer_norm_first", False))
    for name in ("encoder_embed_dim", "encoder_layers", "encoder_ffn_embed_dim", "conv_pos", "conv_pos_groups", "in_d"):
        if name in model_cfg and int(model_cfg[name]) != kwargs[FAIRSEQ_CONFIG_NAMES[name]]:
            raise ValueError(
                f"cfg {name}={model_cfg[name]} disagrees with the tensors ({FAIRSEQ_CONFIG_NAMES[name]}="
                f"{kwargs[FAIRSEQ_CONFIG_NAMES[name]]})"
            )
    if "final_dropout" in model_cfg or "num_labels" in model_cfg:  # a fine-tuning cfg
        for name in _FINETUNING_FIELDS:
            if name in model_cfg:
                kwargs[FAIRSEQ_CONFIG_NAMES[name]] = float(model_cfg[name])

    # Input contract: 12 standard leads unless the task loaded a subset.
    leads = task_cfg.get("leads_to_load")
    if kwargs["num_leads"] != len(STANDARD_12_LEADS) or leads is not None:
        if leads is None:
            raise ValueError(f"the model takes {kwargs['num_leads']} leads but the cfg does not say which (task.leads_to_load)")
        names = _parse_leads(leads)
        if len(names) != kwargs["num_leads"]:
            raise ValueError(f"task.leads_to_load {leads!r} names {len(names)} leads but the model takes {kwargs['num_leads']}")
        contract = SignalContract.from_dict({**ECG_FM_CONTRACT.to_dict(), "leads": names})
        kwargs["signal_contract"] = contract.to_dict()
        report.notes.append(f"input leads {names} (task.leads_to_load)")
    for flag in ("normalize", "filter"):
        if task_cfg.get(flag):
            report.notes.append(
                f"the checkpoint was trained with task.{flag}=true, which the default ECG-FM processor does not apply"
            )
            logger.warning("ECG-FM checkpoint trained with task.%s=true: the default preprocessing differs", flag)
    kwargs.update(overrides)
    return ECGFMConfig(**kwargs)


# ---------------------------------------------------------------------------------------------- loading
def load_original(src: str | Path, allow_pickle: bool = False,
                  config_overrides: dict[str, Any] | None = None) -> tuple[ECGFMModel, ECGFMConversionReport]:
    """Load an original ECG-FM checkpoint (pretrained or fine-tuned ``.pt``) into :class:`ECGFMModel` (eval mode).

    Returns the model and a report: stripped prefix, renamed weight-norm keys, dropped keys (pretraining modules
    and the fine-tuned head) and, for fine-tuned files, the head tensors in ``report.head``.

    Raises:
        FileNotFoundError: ``src`` does not exist.
        ValueError: the file needs ``allow_pickle=True``, or is not an ECG-FM checkpoint.
        CheckpointMismatchError: keys or shapes disagree with the model built from the checkpoint's own
            architecture (every offending key is listed).

    Example:
        >>> model, report = load_original("mimic_iv_ecg_physionet_pretrained.pt")   # doctest: +SKIP
        >>> report.summary()                                                          # doctest: +SKIP
    """
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist")
    if src.is_dir():
        candidates = sorted(p.name for p in src.glob("*.pt"))
        raise ValueError(f"{src} is a folder: pass the checkpoint file itself (.pt files there: {candidates})")
    ckpt = read_fairseq_checkpoint(src, allow_pickle=allow_pickle)
    state_dict, report = canonicalise_state_dict(ckpt["model"])
    cfg = ckpt["cfg"]
    report.source_model = ((cfg or {}).get("model") or {}).get("_name")
    config = config_from_checkpoint(state_dict, cfg, report, config_overrides)
    model = ECGFMModel(config)
    load_strict(model, state_dict, what=f"ECG-FM checkpoint {src}")
    logger.info("Loaded ECG-FM from %s: %s", src, report.summary())
    return model.eval(), report


class ECGFMOriginalClassifier(nn.Module):
    """The original fine-tuned classifier rebuilt from a converted backbone and its ``proj`` head.

    Only for checking parity with (and using) the released fine-tuned file: logits = ``proj(pooler_output)``,
    as ``ECGTransformerClassificationModel.forward`` computes them (``final_dropout`` is 0 in the release). For
    adaptation, use :class:`~ecg_adapt.ECGClassifier` on the backbone instead.
    """

    def __init__(self, backbone: ECGFMModel, head: dict[str, torch.Tensor]) -> None:
        super().__init__()
        if not head:
            raise ValueError("no head weights: the checkpoint is not a fine-tuned ECG-FM classifier")
        self.backbone = backbone
        n_labels, width = head["weight"].shape
        self.proj = nn.Linear(int(width), int(n_labels))
        self.proj.load_state_dict(head, strict=True)

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(self.backbone(input_values, attention_mask=attention_mask).pooler_output)


def load_original_classifier(src: str | Path, allow_pickle: bool = False) -> tuple[ECGFMOriginalClassifier, ECGFMConversionReport]:
    """:func:`load_original` for a fine-tuned file, with its head put back on (see :class:`ECGFMOriginalClassifier`)."""
    backbone, report = load_original(src, allow_pickle=allow_pickle)
    return ECGFMOriginalClassifier(backbone, report.head).eval(), report


def convert_ecg_fm(src: str | Path, dst: str | Path, allow_pickle: bool = False,
                   config_overrides: dict[str, Any] | None = None) -> ECGFMConversionReport:
    """Convert an original ECG-FM checkpoint to ``dst`` (``config.json``, ``model.safetensors``,
    ``preprocessor_config.json``). The optimiser state, pretraining modules and fine-tuned head are left out.

    Example:
        >>> convert_ecg_fm("mimic_iv_ecg_physionet_pretrained.pt", "converted/ecg-fm")   # doctest: +SKIP
    """
    model, report = load_original(src, allow_pickle=allow_pickle, config_overrides=config_overrides)
    save_converted(model, dst, default_processor_steps())
    return report
