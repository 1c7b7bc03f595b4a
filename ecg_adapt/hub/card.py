"""The model card (``README.md``) of a pushed run: Hub metadata plus what a user must know to use the model.

Metadata (YAML, built with ``huggingface_hub.ModelCardData`` and read back with ``ModelCard`` to check it):
``library_name: ecg_adapt``, ``base_model`` (+ ``base_model_relation``), ``license`` (inherited from the
base model, never guessed), ``datasets``, ``tags`` (``ecg``, the backbone family, the adaptation method),
``metrics`` and a ``model-index`` whose values are exactly the numbers of the run's ``metrics.json`` (test
and validation splits).

Body: intended use and a clinical-use disclaimer, the exact input contract
(:meth:`~ecg_adapt.processing.SignalContract.describe`) and preprocessing steps, labels and decision
thresholds, how to load it (Python and CLI), the training recipe, the trainable parameters, and the list
of files in the repository.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..models.registry import released_variants
from ..processing.contract import SignalContract
from ..tasks.task import display_label

LIBRARY_NAME = "ecg_adapt"
CARD_NAME = "README.md"
RUN_FILES = ("metrics.json", "recipe.yaml")  # run-level files pushed next to the model folder's files

# Licence identifiers the Hub knows (https://huggingface.co/docs/hub/repositories-licenses), the common ones.
HUB_LICENSES = frozenset({
    "apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "bsd-3-clause-clear", "cc0-1.0", "cc-by-2.0",
    "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0",
    "cc-by-nd-4.0", "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0",
    "cc-by-nc-sa-4.0", "gpl-2.0", "gpl-3.0", "lgpl-2.1", "lgpl-3.0", "agpl-3.0", "mpl-2.0", "epl-2.0",
    "odc-by", "odbl", "pddl", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "unlicense",
    "other", "unknown",
})

FILE_DESCRIPTIONS = {
    CARD_NAME: "this model card",
    "config.json": "`ECGClassifierConfig`: labels (`id2label`), head, the backbone's config and its hub id",
    "adaptation_config.json": "adaptation method, its hyper-parameters and the trainable parameter count",
    "adapter_config.json": "the adapter's config (peft's, or ecg_adapt's in the same form); records the base model id",
    "adapter_model.safetensors": ("only the trained weights (peft methods: the adapter, keyed on the plain backbone; "
                                  "native methods: the head too, or the trained blocks for `partial`)"),
    "head.safetensors": "peft methods: the trained classification head (`classifier.*`), loaded beside the adapter",
    "sequence_model.safetensors": ("the sequence model over the neighbouring windows (`context_encoder.*`: GRU or "
                                   "transformer), trained beside the backbone adapter"),
    "model.safetensors": "the whole classifier: backbone and head weights",
    "preprocessor_config.json": "`ECGProcessor`: the signal contract and the preprocessing steps",
    "task.json": "task, labels and the decision thresholds tuned on validation",
    "model_complete.json": "completion marker, written last when the folder was saved (loaders refuse a folder without it)",
    "metrics.json": "validation and test metrics of the training run",
    "recipe.yaml": "the resolved training recipe (`ecg-adapt train recipe.yaml` reruns it)",
}

# metrics.json keys -> (Hub metric id, readable name). Scalars are macro averages over the labels.
_SCALAR_METRICS = {
    "kappa": ("cohen_kappa", "Cohen's kappa"),
    "subject_kappa_mean": ("cohen_kappa", "per-subject Cohen's kappa (mean over subjects)"),
    "macro_auroc": ("roc_auc", "macro AUROC"),
    "macro_auprc": ("average_precision", "macro AUPRC"),
    "macro_f1": ("f1", "macro F1 at the validation-tuned thresholds"),
    "accuracy": ("accuracy", "accuracy"),
    # regression targets (age): present only in a regression run's metrics.json
    "mae": ("mae", "MAE"),
    "rmse": ("rmse", "RMSE"),
    "r2": ("r_squared", "R²"),
    "pearson_r": ("pearsonr", "Pearson r"),
}
_PER_CLASS_METRICS = {
    "per_class_auroc": ("roc_auc", "AUROC"),
    "per_class_auprc": ("average_precision", "AUPRC"),
    "per_class_f1": ("f1", "F1"),
}
SPLITS = ("test", "validation")

_DISCLAIMER = (
    "**Not a medical device.** This model has not been validated for clinical use and must not be used to "
    "diagnose, treat or triage patients, nor to replace the reading of an ECG by a qualified clinician. Its "
    "outputs are research predictions whose performance outside the evaluation data below is unknown."
)


# -- base model ------------------------------------------------------------------------------------------
def hub_base_model(base_model: str) -> str:
    """The hub repository a card's metadata names for ``base_model``: the repository of a registry release's
    original file, or ``base_model`` itself (a hub id)."""
    from ..models.pretrained import hub_repo_of

    return hub_repo_of(base_model) or base_model


def _backbone_link(base_model: str, hub_base: str) -> str:
    if hub_base == base_model:
        return f"[`{base_model}`](https://huggingface.co/{base_model})"
    return f"`{base_model}` (the original release in [`{hub_base}`](https://huggingface.co/{hub_base}))"


def _plain_backbone_lines(base_model: str) -> list[str]:
    """A backbone repository in ecg_adapt's (transformers') format: plain ``AutoModel`` once the architectures
    are registered."""
    return [
        "from ecg_adapt.models.registry import register_all_with_transformers",
        "from peft import PeftModel",
        "from transformers import AutoModel",
        "",
        "register_all_with_transformers()  # the ECG backbones' architectures, for transformers' Auto classes",
        f'backbone = AutoModel.from_pretrained("{base_model}")',
    ]


def _load_comment(base_model: str, hub_base: str) -> str:
    if hub_base == base_model:
        return ""
    return f"   # downloads the original release from {hub_base}, converts it once and caches it"


# -- licence -----------------------------------------------------------------------------------------
def hub_license_id(text: str) -> str:
    """A licence as written in the registry (``"CC BY-NC 4.0 (code and weights; ...)"``) -> the Hub's id
    (``"cc-by-nc-4.0"``); ids the Hub does not know come back as they are (slugified).

    Example:
        >>> hub_license_id("CC BY-NC 4.0 (code and weights; non-commercial use only)")
        'cc-by-nc-4.0'
    """
    head = text.split("(")[0].strip().lower()
    slug = re.sub(r"[\s_]+", "-", head)
    slug = re.sub(r"^apache-license-", "apache-", slug)
    return slug


def named_release(name: str) -> dict[str, Any] | None:
    """The released variant ``name`` names: a registry name (``ecgfounder-12lead``), or the hub repository of its
    original release (``PKUDigitalHealth/ECGFounder``: the repository's default release, its first listed variant)."""
    from ..models.pretrained import find_variant, variants_in_repo

    return find_variant(name) or next(iter(variants_in_repo(name)), None)


def registry_entry(base_model: str) -> dict[str, Any] | None:
    """The released variant (``FAMILIES[...].released_variants``) that ``base_model`` names: a registry name
    (``ecgfounder-12lead``), the hub repository of its original release (``PKUDigitalHealth/ECGFounder``: the
    repository's default release, its first listed variant), or a hub id its ``weights`` field links to."""
    named = named_release(base_model)
    if named is not None:
        return named
    wanted = base_model.strip().lower().rstrip("/")
    for v in released_variants():
        ids = [v.get("hub_id") or ""]
        weights = str(v.get("weights") or "")
        if weights.startswith("https://huggingface.co/"):
            ids.append(weights[len("https://huggingface.co/"):])
        if wanted in {i.strip().lower().rstrip("/") for i in ids if i}:
            return v
    return None


def resolve_license(base_model: str, backbone_config: dict[str, Any] | None = None,
                    license: str | None = None) -> tuple[str, str]:
    """The licence of a model adapted from ``base_model`` and where it came from.

    Order: the base model's registry entry (an explicit ``license`` that contradicts it is an error), then
    an explicit ``license``, then a ``license``/``licence`` field of the backbone config. Nothing found is an
    error: a card never says "unknown" on its own.

    Returns:
        ``(hub licence id, human-readable source)``.
    """
    entry = registry_entry(base_model)
    if entry is not None and entry.get("licence"):
        inherited = hub_license_id(entry["licence"])
        if license is not None and hub_license_id(license) != inherited:
            raise ValueError(
                f"license={license!r} contradicts the licence of the base model {base_model}: {entry['licence']} "
                f"(ecg_adapt's registry). A model adapted from it carries that licence."
            )
        return inherited, f"inherited from the base model {base_model}: {entry['licence']}"
    if license is not None:
        return hub_license_id(license), "given by the publisher"
    for key in ("license", "licence"):
        value = (backbone_config or {}).get(key)
        if value:
            return hub_license_id(str(value)), f"inherited from the backbone config of {base_model}: {value}"
    raise ValueError(
        f"The licence of {base_model} is unknown to ecg_adapt (not a registered release, no licence in its "
        f"config): pass license='<hub licence id>' (e.g. 'apache-2.0', 'cc-by-nc-4.0', or 'other'), the "
        f"licence under which the base model's weights may be redistributed and adapted."
    )


# -- reading a run -----------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: not a complete ecg_adapt run folder")
    return json.loads(path.read_text())


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def run_files(run_dir: str | os.PathLike) -> list[str]:
    """The files a push of ``run_dir`` holds: the model folder's files (peft's generic ``README.md`` is
    replaced by this card), ``metrics.json``, ``recipe.yaml`` and ``README.md``."""
    model_dir = Path(run_dir) / "model"
    names = {p.name for p in model_dir.iterdir() if p.is_file()} - {CARD_NAME}
    return sorted(names | set(RUN_FILES) | {CARD_NAME})


def _ci_label(test: dict[str, Any]) -> str:
    info = test.get("ci_info")
    return f"{round(100 * info['level'])}% CI" if info else "CI"


def _ci_cell(test: dict[str, Any], key: str) -> str:
    ci = (test.get("ci") or {}).get(key)
    return f"[{_fmt(ci['low'])}, {_fmt(ci['high'])}]" if ci else "n/a"


def _ci_text(test: dict[str, Any], key: str) -> str:
    ci = (test.get("ci") or {}).get(key)
    return f" ({_ci_label(test)} {_fmt(ci['low'])}–{_fmt(ci['high'])})" if ci else " (no interval computed)"


def eval_results(metrics: dict[str, Any], task_label: str, dataset_type: str, dataset_name: str,
                 dataset_config: str | None) -> tuple[list[EvalResult], list[str]]:
    """``metrics.json`` -> Hub ``EvalResult``s (values copied as they are) and the list of values left out
    because they are undefined (e.g. AUROC of a class with a single outcome on a split)."""
    results: list[EvalResult] = []
    undefined: list[str] = []
    names = metrics.get("label_names") or {}  # a code's name is shown beside it; the code stays the config
    for split in SPLITS:
        m = metrics.get(split)
        if not isinstance(m, dict):
            continue
        common = {"task_type": "ecg-classification", "task_name": task_label, "dataset_type": dataset_type,
                  "dataset_name": dataset_name, "dataset_config": dataset_config, "dataset_split": split}
        for key, (metric_type, name) in _SCALAR_METRICS.items():
            if key not in m:
                continue
            name = _metric_name(key, name, m)
            if _is_number(m[key]):
                config = "macro" if key.startswith("macro") else ("per-subject mean" if key.startswith("subject_") else None)
                results.append(EvalResult(metric_type=metric_type, metric_value=m[key], metric_name=f"{split} {name}",
                                          metric_config=config, **common))
            else:
                undefined.append(f"{split} {name}")
        for key, (metric_type, name) in _PER_CLASS_METRICS.items():
            for label, value in (m.get(key) or {}).items():
                shown = display_label(str(label), names)
                if _is_number(value):
                    results.append(EvalResult(metric_type=metric_type, metric_value=value,
                                              metric_name=f"{split} {name} {shown}", metric_config=str(label), **common))
                else:
                    undefined.append(f"{split} {name} {shown}")
    return results, undefined


def _metric_name(key: str, name: str, split_metrics: dict[str, Any]) -> str:
    """Multi-class F1 is at the argmax (no thresholds are tuned): say so instead of the multi-label wording."""
    if key == "macro_f1" and "thresholds" not in split_metrics:
        return "macro F1"
    return name


def _is_staging(metrics: dict[str, Any]) -> bool:
    """A sleep-staging run: scored with Cohen's kappa, per-subject kappa and a confusion matrix."""
    return "confusion_matrix" in (metrics.get("test") or {})


# -- the card ------------------------------------------------------------------------------------------
def build_model_card(
    run_dir: str | os.PathLike,
    repo_id: str,
    base_model: str,
    *,
    license: str | None = None,
    datasets: list[str] | None = None,
    merged: bool = False,
    files: Iterable[str] | None = None,
) -> str:
    """The ``README.md`` of a run pushed as ``repo_id``, adapted from the hub model ``base_model``.

    Args:
        run_dir: a training run folder (``model/``, ``metrics.json``, ``recipe.yaml``).
        repo_id: where it is (or will be) on the Hub; used for the title and the loading snippet.
        base_model: hub id of the backbone the adapter/weights belong to.
        license: needed only when ecg_adapt cannot inherit it (see :func:`resolve_license`).
        datasets: dataset names for the metadata; by default derived from the recipe (``ptb-xl``, or
            ``synthetic-ptb-xl-layout`` for the synthetic demo data).
        merged: the LoRA adapter was merged into the backbone (the repo holds a full model).
        files: the repository's files (default: :func:`run_files`).

    Raises:
        ValueError: the licence is unknown, or the card does not survive ``huggingface_hub``'s own parsing.

    Example:
        >>> text = build_model_card("runs/demo", "me/ecg-lora", "Edoardo-BS/hubert-ecg-small")  # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    model_dir = run_dir / "model"
    metrics = _read_json(run_dir / "metrics.json")
    config = _read_json(model_dir / "config.json")
    adaptation = _read_json(model_dir / "adaptation_config.json")
    task_file = _read_json(model_dir / "task.json") if (model_dir / "task.json").exists() else {}
    processor = _read_json(model_dir / "preprocessor_config.json") if (model_dir / "preprocessor_config.json").exists() else {}
    adapter_cfg = _read_json(model_dir / "adapter_config.json") if (model_dir / "adapter_config.json").exists() else {}
    recipe: dict[str, Any] = {}
    if (run_dir / "recipe.yaml").exists():
        recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text()) or {}
    files = sorted(set(files) if files is not None else run_files(run_dir))

    backbone_config = config.get("backbone_config") or {}
    family = backbone_config.get("model_type") or "unknown-family"
    method = adaptation.get("method", "full")
    license_id, license_source = resolve_license(base_model, backbone_config, license)
    # The card's metadata names a hub repository; a registry name (what the configs record, so that loading
    # resolves to the exact release file) stands for the repository of its original release.
    hub_base = hub_base_model(base_model)
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    thresholds = task_file.get("thresholds") or {}
    task = task_file.get("task") or {}
    task_name = task.get("name") or metrics.get("task") or "classification"
    problem_type = config.get("problem_type") or task.get("problem_type") or "multi_label_classification"

    data = recipe.get("data") or {}
    # The demo data: synthesised by the recipe (no path), or a folder written by make_synthetic_ptbxl.
    synthetic = data.get("source", "ptbxl") == "ptbxl" and (
        not data.get("path") or (Path(str(data["path"])) / "synthetic_manifest.json").exists())
    synthetic = synthetic or (metrics.get("run_info") or {}).get("data") == "synthetic"  # said by ecg_adapt.demo
    if datasets is None:
        datasets = ["synthetic-ptb-xl-layout"] if synthetic else ([str(data.get("source")).replace("ptbxl", "ptb-xl")]
                                                                 if data.get("source") else [])
    dataset_type = datasets[0] if datasets else "unknown"
    source_name = {"ptbxl": "PTB-XL"}.get(data.get("source", ""), data.get("source") or "dataset")
    dataset_name = f"synthetic {source_name}-layout records" if synthetic else source_name
    task_config = task_name.split("/")[-1]
    task_label = f"ECG {'multi-label' if problem_type == 'multi_label_classification' else 'multi-class'} classification ({task_name})"
    if problem_type == "regression":
        task_label = f"ECG regression ({task_name})"
    sequence = config if config.get("model_type") == "ecg_sequence_classifier" else None
    staging = _is_staging(metrics)
    if staging:
        task_label = f"sleep staging from the ECG ({task_name})"

    results, undefined = eval_results(metrics, task_label, dataset_type, f"{dataset_name}, {task_config}", task_config)
    model_name = repo_id.split("/")[-1]
    tags = (["ecg", family, method] + (["sleep-staging"] if staging else [])
            + (["sequence-model"] if sequence else []) + (["merged"] if merged else [])
            + (["synthetic-data"] if synthetic else []))
    relation = "finetune" if (method == "full" or merged) else "adapter"
    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        base_model=hub_base,
        license=license_id if license_id in HUB_LICENSES else "other",
        license_name=None if license_id in HUB_LICENSES else license_id,
        datasets=datasets or None,
        tags=tags,
        metrics=sorted({r.metric_type for r in results}) or None,
        model_name=model_name,
        eval_results=results or None,
        base_model_relation=relation,
    )

    contract = SignalContract.from_dict(backbone_config.get("signal_contract") or processor.get("signal_contract") or {})
    body = _body(
        repo_id=repo_id, base_model=base_model, hub_base=hub_base, family=family, method=method, merged=merged, labels=labels,
        thresholds=thresholds, metrics=metrics, task_name=task_name, problem_type=problem_type, contract=contract,
        processor=processor, adaptation=adaptation, adapter_cfg=adapter_cfg, recipe=recipe, synthetic=synthetic,
        dataset_name=dataset_name, license_id=license_id, license_source=license_source, files=files,
        undefined=undefined, sequence=sequence,
    )
    text = f"---\n{card_data.to_yaml()}\n---\n\n{body}"
    _check_card(text, card_data, results)
    return text


def _check_card(text: str, expected: ModelCardData, results: list[EvalResult]) -> None:
    """Parse the card back with huggingface_hub and check nothing was lost or reshaped."""
    card = ModelCard(text)  # raises ValueError on malformed metadata or model-index
    data = card.data
    for key in ("library_name", "base_model", "license", "datasets", "tags", "metrics"):
        if getattr(data, key, None) != getattr(expected, key, None):
            raise ValueError(f"model card metadata {key!r} did not survive parsing: "
                             f"{getattr(data, key, None)!r} != {getattr(expected, key, None)!r}")
    parsed = [(r.dataset_split, r.metric_type, r.metric_config, r.metric_value) for r in (data.eval_results or [])]
    wanted = [(r.dataset_split, r.metric_type, r.metric_config, r.metric_value) for r in results]
    if sorted(parsed, key=repr) != sorted(wanted, key=repr):
        raise ValueError("model-index values did not survive parsing: the card would misreport metrics.json")


def _sequence_summary(sequence: dict[str, Any], task_name: str, labels: list[str], backbone_link: str, family: str,
                      method_text: str, staging: bool) -> list[str]:
    """The opening of a sequence model's card: what it scores, from how much context, from which channel."""
    context, epoch = int(sequence.get("context", 0)), sequence.get("epoch_seconds")
    kind = {"gru": "a bidirectional GRU", "transformer": "a transformer encoder",
            "none": "no sequence model (the centre window alone)"}.get(str(sequence.get("sequence_model")), "a sequence model")
    what = "A sleep-staging sequence model" if staging else "A sequence model"
    channels = sequence.get("ecg_channels")
    lead = sequence.get("ecg_lead")
    mapping = (f"It reads the ECG channel of a recording labelled {', '.join(f'`{c}`' for c in channels)} (the first "
               f"present, in that order) and feeds it as lead `{lead or 'as labelled'}` of the backbone's input."
               if channels else "The ECG channel of the recordings it was trained on is not recorded.")
    return [
        (f"{what} from the ECG for **{task_name}** ({len(labels)} classes: {', '.join(labels)}), scoring every "
         f"{_fmt(epoch, 0)} s epoch. Each window of the epoch is encoded by {backbone_link} ({family}), adapted with {method_text}, and {kind} runs over the {2 * context + 1} "
         f"consecutive windows around it ({context} on each side); window predictions are averaged per epoch. Made "
         "with `ecg_adapt`."),
        "", mapping, "",
    ]


def _fmt(v: Any, digits: int = 4) -> str:
    return f"{v:.{digits}f}" if _is_number(v) else "n/a"


def _label_table(first: str, labels: list[str], names: dict[str, str],
                 columns: dict[str, Callable[[str], Any]]) -> list[str]:
    """A markdown table with one row per label: the label, its name when ``names`` has any (labels that are
    codes), then each column's value for it."""
    head = [first, *(["name"] if names else []), *columns]
    rows = [[label, *([names.get(label, "")] if names else []), *(_fmt(value(label)) for value in columns.values())]
            for label in labels]
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def _method_summary(method: str) -> str:
    from ..adaptation import get_method

    try:
        return f"{method}: trains {get_method(method).trains}"
    except ValueError:
        return method


def _body(*, repo_id: str, base_model: str, hub_base: str, family: str, method: str, merged: bool, labels: list[str],
          thresholds: dict[str, float], metrics: dict[str, Any], task_name: str, problem_type: str,
          contract: SignalContract, processor: dict[str, Any], adaptation: dict[str, Any],
          adapter_cfg: dict[str, Any], recipe: dict[str, Any], synthetic: bool, dataset_name: str,
          license_id: str, license_source: str, files: list[str], undefined: list[str],
          sequence: dict[str, Any] | None = None) -> str:
    multi_label = problem_type == "multi_label_classification"
    method_text = {
        "lora": "LoRA (peft) on the backbone + a new linear head",
        "linear_probe": "linear probe: a new linear head on the frozen backbone",
        "full": "full fine-tuning of the backbone and a new linear head",
    }.get(method) or _method_summary(method)
    if merged:
        method_text += ", **merged** into the backbone weights (this repository holds the whole classifier)"
    needs_backbone = method != "full" and not merged
    test, val = metrics.get("test") or {}, metrics.get("validation") or {}
    data = recipe.get("data") or {}
    rec_model, rec_ad, rec_tr = recipe.get("model") or {}, recipe.get("adaptation") or {}, recipe.get("training") or {}

    staging = _is_staging(metrics)
    regression = problem_type == "regression"
    headline, headline_name = ("kappa", "Cohen's kappa") if staging else ("macro_auroc", "macro AUROC")
    if regression:  # the run's own primary metric (MAE by default), lower is better
        headline = metrics.get("primary_metric") or "mae"
        headline_name = {"mae": "MAE", "rmse": "RMSE", "r2": "R²", "pearson_r": "Pearson r"}.get(headline, headline)
    out: list[str] = [f"# {repo_id.split('/')[-1]}", ""]
    if regression:
        out += [
            (f"An ECG regression model for **{task_name}** ({len(labels)} target{'s' if len(labels) > 1 else ''}: "
             f"{', '.join(labels)}; in the targets' own units), adapted from {_backbone_link(base_model, hub_base)} "
             f"({family}) with {method_text}, made with `ecg_adapt`."),
            "",
        ]
    elif sequence is not None:
        out += _sequence_summary(sequence, task_name, labels, _backbone_link(base_model, hub_base), family, method_text,
                                 staging)
    else:
        out += [
            (f"An ECG classifier for **{task_name}** ({len(labels)} labels, {'multi-label' if multi_label else 'multi-class'}), "
             f"adapted from {_backbone_link(base_model, hub_base)} ({family}) with {method_text}, made with "
             "`ecg_adapt`."),
            "",
        ]
    out += [
        (f"Test {headline_name} **{_fmt(test.get(headline))}**{_ci_text(test, headline)} (validation "
         f"{_fmt(val.get(headline))}){' on **synthetic** records' if synthetic else ''}."),
        "",
    ]
    if needs_backbone:
        trained = {"lora": "LoRA matrices and the head", "linear_probe": "the head"}.get(method, _method_summary(method))
        out += [(f"This repository holds only what was trained ({trained}); the backbone weights are loaded from "
                 f"`{base_model}` and are not re-hosted here."), ""]

    outputs = ("values of each target" if regression else
               "probabilities for each label" if multi_label else "class probabilities")
    if sequence is not None:
        use = ("Research on sleep staging from the ECG of a polysomnography (or any long single-lead recording): "
               "benchmarking adaptation methods and reproducing the results below. Outputs are stage probabilities "
               f"for every {_fmt(sequence.get('epoch_seconds'), 0)} s epoch of a night.")
    elif regression:
        use = ("Research on estimating quantities from the ECG: benchmarking adaptation methods and reproducing the "
               "results below. Inputs are resting ECG records read with `wfdb` or any `ECGRecord`; outputs are "
               f"per-record {outputs}.")
    else:
        use = ("Research on ECG classification: benchmarking adaptation methods, feature extraction, and reproducing "
               f"the results below. Inputs are resting ECG records read with `wfdb` or any `ECGRecord`; outputs are "
               f"per-record {outputs}.")
    out += ["## Intended use", "", use, "", _DISCLAIMER, ""]
    if synthetic:
        out += [("**Trained and evaluated on synthetic data** (ecg_adapt's PTB-XL-layout generator), not on patient "
                 "recordings: the metrics below describe the synthetic task only."), ""]

    out += [
        "## Input contract", "",
        ("Records are converted to exactly the input the backbone was pretrained on by the processor saved here "
         "(`preprocessor_config.json`):"),
        "", contract.describe(), "",
    ]
    steps = processor.get("steps") or []
    if steps:
        described = [f"`{s.get('name')}`(" + ", ".join(f"{k}={v}" for k, v in s.items() if k != "name") + ")"
                     for s in steps]
        out += ["Preprocessing steps, in order: " + "; ".join(described) + ".", ""]
    policy = processor.get("missing_leads", "error")
    out += [(f"Leads are matched by name (any spelling of `aVR`, `MLII` as `II`, reordered as needed). Missing leads: "
             f"`{policy}` by default (`missing_leads=\"zero\"` or `\"mask\"` to accept records with fewer leads; every "
             f"prediction reports what was done). "
             + (f"Each epoch is cut into {contract.window_seconds:g} s windows, each scored with its neighbours."
                if sequence is not None else
                f"Longer records are cut into {contract.window_seconds:g} s windows whose probabilities are averaged "
                "per record.")), ""]

    test_auroc, val_auroc = test.get("per_class_auroc") or {}, val.get("per_class_auroc") or {}
    # Labels that are codes (SNOMED CT in CinC) get their abbreviation in a column beside them.
    names = {k: v for k, v in (metrics.get("label_names") or {}).items() if v and v != k}
    if regression:
        out += [
            "## Targets", "",
            ("Records without a target value were left out of the loss and the metrics (not imputed); the model "
             "outputs the targets in their own units (any standardisation is undone by the saved model)."), "",
        ]

        def per(split: dict[str, Any], name: str) -> Callable[[str], Any]:
            """A target's value of metric ``name`` (a single target's is the split's own scalar)."""
            return lambda label: (split.get(f"per_target_{name}") or {}).get(
                label, split.get(name) if len(labels) == 1 else None)

        out += _label_table("target", labels, {}, {"test MAE": per(test, "mae"), "test RMSE": per(test, "rmse"),
                                                  "test R²": per(test, "r2"), "validation MAE": per(val, "mae")})
    elif multi_label:
        out += [
            "## Labels and thresholds", "",
            "Decision thresholds were tuned for F1 on the validation split and applied unchanged to test.", "",
        ]
        out += _label_table("label", labels, names, {"threshold": thresholds.get, "test AUROC": test_auroc.get,
                                                     "validation AUROC": val_auroc.get})
    else:
        noun = "stage" if staging else "class"
        out += [
            "## Labels", "",
            f"One {noun} per {'epoch' if sequence is not None else 'record'}: the most probable one (no thresholds).", "",
        ]
        test_f1, val_f1 = test.get("per_class_f1") or {}, val.get("per_class_f1") or {}
        out += _label_table(noun, labels, names, {"test F1": test_f1.get, "validation F1": val_f1.get,
                                                  "test AUROC (one vs rest)": test_auroc.get})
    out.append("")

    splits = "folds 1-8 train, 9 validation, 10 test" if data.get("source") == "ptbxl" else "the recipe's splits"
    out += [
        "## Evaluation", "",
        (f"On {dataset_name} ({splits}); values are copied from `metrics.json` (also in this card's `model-index` "
         "metadata)."),
        "", f"| metric | test | test {_ci_label(test)} | validation |", "|---|---|---|---|",
    ]
    for key, (_, name) in _SCALAR_METRICS.items():
        if key in test or key in val:
            name = _metric_name(key, name, test or val)
            out.append(f"| {name} | {_fmt(test.get(key))} | {_ci_cell(test, key)} | {_fmt(val.get(key))} |")
    if staging:
        for key, name in (("subject_kappa_sd", "per-subject Cohen's kappa, SD"),
                          ("subject_kappa_min", "per-subject Cohen's kappa, min"),
                          ("subject_kappa_max", "per-subject Cohen's kappa, max")):
            out.append(f"| {name} | {_fmt(test.get(key))} | | {_fmt(val.get(key))} |")
        out += [f"| epochs | {test.get('n_epochs', 'n/a')} | | {val.get('n_epochs', 'n/a')} |",
                f"| subjects | {test.get('n_subjects', 'n/a')} | | {val.get('n_subjects', 'n/a')} |", ""]
        cm = test.get("confusion_matrix") or []
        cm_labels = test.get("labels") or labels
        out += ["Test confusion matrix (epochs; rows: scored stage, columns: predicted):", "",
                "| | " + " | ".join(cm_labels) + " |", "|---|" + "---|" * len(cm_labels)]
        out += [f"| **{name}** | " + " | ".join(str(n) for n in row) + " |" for name, row in zip(cm_labels, cm)]
        out.append("")
    else:
        out += [f"| records | {test.get('n_samples', 'n/a')} | | {val.get('n_samples', 'n/a')} |", ""]
    info = test.get("ci_info")
    if info:
        unit = info.get("unit", "record")
        count = info.get(f"n_{unit}s", info.get("n_records"))
        out += [(f"Intervals: {round(100 * info['level'])}% percentile bootstrap over the {count} test "
                 f"{unit}s ({info['n_resamples']} resamples, whole {unit}s resampled)."), ""]
    else:
        out += ["No confidence intervals were computed for this run (`training.bootstrap_resamples: 0`): the test "
                "numbers above are point estimates only.", ""]
    for warning in test.get("support_warnings") or []:
        out.append(f"- **Small test support.** {warning}.")
    if test.get("support_warnings"):
        out.append("")
    selection = metrics.get("selection") or {}
    if selection.get("selected") == "best":
        out += [(f"The model is the one of the best validation {selection.get('metric_for_best_model')} "
                 f"({_fmt(selection.get('best_value'))} at step {selection.get('best_step')} of "
                 f"{selection.get('last_step')}{', early stopped' if selection.get('early_stopped') else ''})."), ""]
    elif selection:
        out += [f"**Not a selected checkpoint:** {selection.get('reason')}.", ""]
    if undefined:
        out += ["Undefined on these splits (a class with a single outcome), left out of the metadata: "
                + ", ".join(undefined) + ".", ""]

    fetches = f"   # also fetches the backbone {base_model}" if needs_backbone else ""
    if sequence is not None:
        out += [
            "## How to use", "",
            "From the command line, one row per epoch (time, stage, probabilities):", "",
            "```bash",
            f"ecg-adapt predict {repo_id} night.edf -o hypnogram.csv",
            "```", "",
            "In Python:", "",
            "```python",
            "from ecg_adapt.adaptation import load_adapted",
            "from ecg_adapt.hub.load import download",
            "",
            f'model = load_adapted(download("{repo_id}")){fetches}',
            "logits = model(input_values=windows, attention_mask=mask).logits   # windows: (batch, K, *input_shape)",
            "```", "",
        ]
    out += [] if sequence is not None else [
        "## How to use", "",
        "```python",
        "from ecg_adapt import read_wfdb",
        "from ecg_adapt.hub import from_hub",
        "",
        f'predictor = from_hub("{repo_id}"){fetches}',
        'prediction = predictor.predict([read_wfdb("path/to/record")])[0]',
        "print(prediction.probabilities, prediction.predicted)",
        "```", "",
        "From the command line:", "",
        "```bash",
        f"ecg-adapt predict {repo_id} RECORD_OR_FOLDER ... [--missing-leads zero] [-o predictions.csv]",
        "```", "",
        ("Offline, after a first download: `HF_HUB_OFFLINE=1` loads both this repository and the backbone from the "
         "Hugging Face cache."),
        "",
    ]
    if needs_backbone and "head.safetensors" in files:
        # peft_methods.HEAD_WEIGHTS_NAME: the adapter files are a plain peft adapter of the backbone.
        out += [
            "The adapter is a plain peft adapter of the backbone: peft alone gives the adapted backbone's features "
            "(ecg_adapt only registers the backbone's architecture with `AutoModel`); the head is in "
            "`head.safetensors`, which `from_hub` / `load_adapted` put on top.", "",
            "```python",
            *(_plain_backbone_lines(base_model) if hub_base == base_model else [
                # an original release (not in transformers' format): ecg_adapt converts it once, then plain peft
                "from ecg_adapt import load_backbone",
                "from peft import PeftModel",
                "",
                f'backbone = load_backbone("{base_model}"){_load_comment(base_model, hub_base)}']),
            f'model = PeftModel.from_pretrained(backbone, "{repo_id}")',
            "features = model(input_values).last_hidden_state   # input_values from the ECGProcessor of this repository",
            "```", "",
        ]

    out += ["## Training", ""]
    if sequence is not None:
        out.append(f"- sequence model: {sequence.get('sequence_model')} over {2 * int(sequence.get('context', 0)) + 1} "
                   f"windows (width {sequence.get('sequence_hidden_size')}, {sequence.get('sequence_num_layers')} "
                   f"layer(s)), trained with the head at the head's learning rate")
    embedded = " (the demo's embedded random-weight backbone, pushed as this id)" if (recipe and not rec_model.get("model_name_or_path")) or (metrics.get("run_info") or {}).get("backbone") else ""
    out.append(f"- backbone: `{base_model}`{embedded}")
    if method == "lora":
        targets = adapter_cfg.get("target_modules") or rec_ad.get("target_modules")
        if isinstance(targets, list):
            targets = ", ".join(sorted(targets))
        out.append(f"- LoRA: r={adaptation.get('r')}, alpha={adaptation.get('lora_alpha', adaptation.get('alpha'))}, "
                   f"dropout={adaptation.get('lora_dropout', adaptation.get('dropout'))}, rsLoRA={adaptation.get('use_rslora')}, "
                   f"DoRA={adaptation.get('use_dora')}, init={adaptation.get('init_lora_weights')}, "
                   f"targets: {targets}; head trained in full (`modules_to_save`)")
    else:
        out.append(f"- method: {method}")
    if rec_tr:
        max_steps = rec_tr.get("max_steps") or -1
        length = f"max_steps {max_steps}" if max_steps > 0 else f"{rec_tr.get('num_train_epochs')} epochs"
        out.append(f"- optimiser AdamW, learning rate {rec_tr.get('learning_rate')} (head "
                   f"{rec_tr.get('head_learning_rate') or rec_tr.get('learning_rate')}), weight decay "
                   f"{rec_tr.get('weight_decay')}, {rec_tr.get('lr_scheduler_type')} schedule, warm-up ratio "
                   f"{rec_tr.get('warmup_ratio')}, {length}, batch {rec_tr.get('per_device_train_batch_size')} "
                   f"per device x {rec_tr.get('gradient_accumulation_steps')} accumulation, seed {rec_tr.get('seed')}"
                   f"{', bf16' if rec_tr.get('bf16') else ''}")
    records = (metrics.get("data") or {}).get("records") or {}
    out.append(f"- {metrics.get('global_step', 'n/a')} optimiser steps on {metrics.get('world_size', 1)} process(es), "
               f"{metrics.get('train_seconds', 'n/a')} s; records: " + ", ".join(f"{k} {v}" for k, v in records.items()))
    out += ["- the full resolved recipe is `recipe.yaml`", ""]

    tp = adaptation.get("trainable_parameters") or {}
    trainable = tp.get("trainable", metrics.get("trainable_parameters"))
    total = tp.get("total", metrics.get("total_parameters"))
    out += ["## Trainable parameters", ""]
    if _is_number(trainable) and _is_number(total):
        out.append(f"{int(trainable):,} trainable of {int(total):,} parameters ({100.0 * trainable / max(total, 1):.2f}%).")
    else:
        out.append("Not recorded.")
    if merged:
        out.append("The LoRA matrices were merged into the backbone for this upload: the repository holds the "
                   "whole classifier (backbone and head weights).")
    out.append("")

    derived = " The merged weights are derived from the base model's weights and carry its licence." if merged else ""
    out += ["## Licence", "", f"`{license_id}` — {license_source}.{derived}", ""]

    out += ["## Files in this repository", ""]
    descriptions = dict(FILE_DESCRIPTIONS)
    if sequence is not None:
        descriptions["config.json"] = ("`ECGSequenceClassifierConfig`: labels, the window classifier's head and backbone "
                                       "(config and hub id), the sequence model and its context, and the recording "
                                       "mapping (`ecg_channels`, `ecg_lead`, `epoch_seconds`)")
    out += [f"- `{name}`" + (f": {descriptions[name]}" if name in descriptions else "") for name in files]
    out.append("")
    return "\n".join(out)
