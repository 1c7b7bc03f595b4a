"""Every peft method (LoRA with rsLoRA/DoRA/PiSSA, IA³, LoHa, LoKr, VeRA, OFT, BOFT) on every backbone family:
a training step changes exactly what the method claims, the saved adapter holds only that and reloads to the same
logits, merging gives the same logits, and unsupported pairs are refused up front with the reason.

Tolerances: a reloaded adapter gives bit-identical logits (``torch.equal``), except PiSSA/OLoRA, which is saved as a
rank-2r LoRA on the original weights (same function, another summation order): ``atol=1e-6``. Merged models:
``atol=1e-5`` (observed <= 1.1e-7).
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from peft import IA3Config, LoraConfig, OFTConfig, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file
from family_cases import peft_refusals
from tiny_backbones import TINY_CONFIGS, tiny_backbone, tiny_batch
from torch import nn

from ecg_adapt import ECGClassifier, adapt, load_adapted, load_backbone, save_adapted
from ecg_adapt.adaptation import AdaptationConfig, UnsupportedAdaptationError, get_method, merge_for_deployment
from ecg_adapt.adaptation.peft_methods import (
    HEAD_WEIGHTS_NAME,
    MATRIX_COLUMNS,
    check_peft_method,
    merge_blockers,
    peft_config_for,
    support_matrix,
    support_matrix_markdown,
)
from ecg_adapt.adaptation.layout import family_key
from ecg_adapt.models.registry import FAMILIES, get_family
from ecg_adapt.processing import ECGProcessor

# peft warns on every BOFT model built without its CUDA kernel (load_adapted builds one): expected here.
pytestmark = [pytest.mark.filterwarnings("ignore:Failed to load the CUDA extension"),
              pytest.mark.filterwarnings("ignore:Setting boft_n_butterfly_factor to 1")]

# method variants: AdaptationConfig kwargs. OFT uses r=2 blocks per layer: the tiny ECGFounder's SE gates have
# in_features 4, which r=8 cannot split (test_oft_block_sizes_are_validated_against_every_target covers that).
VARIANTS: dict[str, dict] = {
    "lora": {"method": "lora"},
    "lora+rslora": {"method": "lora", "use_rslora": True},
    "lora+dora": {"method": "lora", "use_dora": True},
    "lora+pissa": {"method": "lora", "init_lora_weights": "pissa_niter_2"},
    "ia3": {"method": "ia3"},
    "loha": {"method": "loha"},
    "lokr": {"method": "lokr"},
    "vera": {"method": "vera"},
    "oft": {"method": "oft", "r": 2},
    "boft": {"method": "boft", "boft_block_size": 4},
}

# The pairs that must be refused, with words the reason must contain (declared per family, as test data, in
# tests/family_cases/<model_type>.py). Everything else must work.
REFUSED: dict[tuple[str, str], tuple[str, ...]] = peft_refusals()
PAIRS = [(f, v) for f in TINY_CONFIGS for v in VARIANTS]
SUPPORTED = [p for p in PAIRS if p not in REFUSED]
# The family key a refusal names ("merl/resnet", not the tiny config's name), from the layout rules.
FAMILY_LABEL = {name: family_key(tiny_backbone(name)) for name in TINY_CONFIGS}
LABELS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def backbone_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every tiny backbone saved like a converted release (config, safetensors, processor), once per module."""
    root = tmp_path_factory.mktemp("backbones")
    dirs = {}
    for name, (model_type, _) in TINY_CONFIGS.items():
        backbone = tiny_backbone(name)
        backbone.save_pretrained(root / name)
        ECGProcessor(backbone.config.signal_contract, get_family(model_type).default_processor_steps()).save_pretrained(root / name)
        dirs[name] = root / name
    return dirs


def _classifier(backbone_dir: Path) -> ECGClassifier:
    torch.manual_seed(1)
    return ECGClassifier.from_backbone(load_backbone(backbone_dir), LABELS, classifier_dropout=0.0)


@dataclass
class Trained:
    """A (family, variant) model after two training steps, with what is needed to compare against it."""

    model: nn.Module
    before: dict[str, torch.Tensor]  # parameters before training
    buffers: dict[str, torch.Tensor]  # buffers before training
    x: torch.Tensor  # evaluation input
    logits: torch.Tensor  # the trained model's eval logits on x


@pytest.fixture(scope="module")
def trained(backbone_dirs: dict[str, Path]) -> Callable[[str, str], Trained]:
    """``trained(family, variant)``: the model after two AdamW steps, trained once per test module and shared by the
    step, save/reload and merge tests (the merge test works on a copy)."""
    cache: dict[tuple[str, str], Trained] = {}

    def get(family: str, variant: str) -> Trained:
        if (family, variant) not in cache:
            cache[family, variant] = _train(family, variant, backbone_dirs[family])
        return cache[family, variant]

    return get


def _train(family: str, variant: str, backbone_dir: Path) -> Trained:
    model = adapt(_classifier(backbone_dir), AdaptationConfig(dropout=0.0, **VARIANTS[variant]))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    batch = tiny_batch(model, batch=1, seed=0)
    labels = torch.tensor([[1.0, 0.0, 1.0]])
    # No weight decay: a parameter moves only if it gets a gradient. Two steps, because zero-initialised factors
    # (LoRA's B, LoHa's w2_b, VeRA's lambda_b) leave their partners without gradient at the first one.
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    model.train()
    for _ in range(2):
        opt.zero_grad()
        model(**batch, labels=labels).loss.backward()
        opt.step()
    model.eval()
    x = tiny_batch(model, batch=2, seed=5)["input_values"]
    with torch.no_grad():
        logits = model(input_values=x).logits
    return Trained(model, before, buffers, x, logits)


def _saved_name(param_name: str) -> str:
    """Where peft stores a trainable parameter in adapter_model.safetensors: adapter name dropped, and DoRA's
    magnitude (a module holding one ``weight``) stored under the module's name."""
    name = param_name.replace(".modules_to_save.default.", ".").replace(".default.", ".").removesuffix(".default")
    return name.replace(".lora_magnitude_vector.weight", ".lora_magnitude_vector")


@pytest.mark.parametrize(("family", "variant"), SUPPORTED)
def test_training_step_changes_exactly_the_claimed_parameters(family: str, variant: str, trained: Callable[[str, str], Trained]) -> None:
    t = trained(family, variant)
    claims = get_method(VARIANTS[variant]["method"]).claims
    params = dict(t.model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    claimed = {n for n in params if claims(n)}
    assert trainable == claimed, (sorted(trainable - claimed)[:5], sorted(claimed - trainable)[:5])
    assert any(".modules_to_save." in n for n in claimed) and any(".modules_to_save." not in n for n in claimed)
    changed = {n for n, p in params.items() if not torch.equal(p.detach(), t.before[n])}
    assert changed == claimed, (sorted(changed - claimed)[:5], sorted(claimed - changed)[:5])
    moved_buffers = [n for n, b in t.model.named_buffers() if not torch.equal(b, t.buffers[n])]
    assert not moved_buffers


@pytest.mark.parametrize(("family", "variant"), SUPPORTED)
def test_saved_adapter_holds_only_claimed_tensors_and_reloads_to_the_same_logits(
    family: str, variant: str, trained: Callable[[str, str], Trained], backbone_dirs: dict[str, Path], tmp_path: Path
) -> None:
    t = trained(family, variant)
    method = VARIANTS[variant]["method"]
    processor = ECGProcessor.from_pretrained(str(backbone_dirs[family]))
    save_adapted(t.model, tmp_path / "run", processor)

    saved = load_file(str(tmp_path / "run" / "adapter_model.safetensors"))
    head = load_file(str(tmp_path / "run" / HEAD_WEIGHTS_NAME))
    trainable = {_saved_name(n) for n, p in t.model.named_parameters() if p.requires_grad}
    # VeRA's shared random projections are frozen buffers that peft saves with the adapter (save_projection=True).
    frozen_saved = {"base_model.vera_A", "base_model.vera_B"} if method == "vera" else set()
    # The plain-backbone layout: adapter keys without the classifier's "backbone." (plain peft loads them onto the
    # bare backbone), the head beside them keyed as in the classifier.
    in_head = {k for k in trainable if k.startswith("base_model.model.classifier.")}
    assert set(head) == {k.removeprefix("base_model.model.") for k in in_head}
    assert set(saved) == {k.replace("base_model.model.backbone.", "base_model.model.", 1) for k in trainable - in_head} | frozen_saved
    claims = get_method(method).claims
    assert all(claims(k) for k in saved) and all(claims(k) for k in head)  # what hub pushes check before uploading
    assert not (tmp_path / "run" / "model.safetensors").exists()

    reloaded = load_adapted(tmp_path / "run", backbone_name_or_path=str(backbone_dirs[family]))
    with torch.no_grad():
        got = reloaded(input_values=t.x).logits
    if variant == "lora+pissa":
        peft_config = json.loads((tmp_path / "run" / "adapter_config.json").read_text())
        assert peft_config["r"] == 2 * t.model.adaptation_config.r and peft_config["init_lora_weights"] is True
        torch.testing.assert_close(got, t.logits, rtol=0, atol=1e-6)
    else:
        assert torch.equal(got, t.logits)


@pytest.mark.parametrize(("family", "variant"), SUPPORTED)
def test_merged_model_is_a_plain_classifier_with_the_same_logits(
    family: str, variant: str, trained: Callable[[str, str], Trained], backbone_dirs: dict[str, Path]
) -> None:
    t = trained(family, variant)
    assert get_method(VARIANTS[variant]["method"]).mergeable and not merge_blockers(t.model)
    merged = merge_for_deployment(copy.deepcopy(t.model))
    assert type(merged) is ECGClassifier and not any(isinstance(m, BaseTunerLayer) for m in merged.modules())
    with torch.no_grad():
        torch.testing.assert_close(merged(input_values=t.x).logits, t.logits, rtol=0, atol=1e-5)
    # The adapter was not the identity: merging changed backbone weights.
    original = load_backbone(backbone_dirs[family]).state_dict()
    assert any(not torch.equal(v, original[k]) for k, v in merged.backbone.state_dict().items())


@pytest.mark.parametrize(("family", "variant"), list(REFUSED))
def test_unsupported_pairs_are_refused_before_anything_changes(family: str, variant: str, backbone_dirs: dict[str, Path]) -> None:
    clf = _classifier(backbone_dirs[family])
    state = {k: v.clone() for k, v in clf.state_dict().items()}
    method = VARIANTS[variant]["method"]
    with pytest.raises(UnsupportedAdaptationError) as err:
        adapt(clf, AdaptationConfig(**VARIANTS[variant]))
    message = str(err.value)
    assert message.startswith(f"{method} cannot adapt {FAMILY_LABEL.get(family, family)}: ")
    for words in REFUSED[family, variant]:
        assert words.lower() in message.lower(), message
    assert not any(isinstance(m, BaseTunerLayer) for m in clf.modules())
    assert all(torch.equal(v, state[k]) for k, v in clf.state_dict().items())


def test_refusals_are_what_peft_itself_would_do(backbone_dirs: dict[str, Path]) -> None:
    """The checks are not over-cautious: peft 0.21 fails on the same pairs (IA³ on Conv1d, PiSSA on Conv1d)."""
    resnet = _classifier(backbone_dirs["merl_resnet"])
    with pytest.raises(ValueError, match="is not supported"):
        get_peft_model(resnet, IA3Config(target_modules=["conv1", "conv2"], feedforward_modules=[]))
    founder = _classifier(backbone_dirs["ecgfounder"])
    with pytest.raises(ValueError, match="Unknown initialization"):
        get_peft_model(founder, LoraConfig(target_modules=["conv1.conv"], init_lora_weights="pissa"))


def test_default_targets_follow_the_method_and_the_family(backbone_dirs: dict[str, Path]) -> None:
    founder = _classifier(backbone_dirs["ecgfounder"])
    assert peft_config_for(founder, AdaptationConfig(method="loha")).target_modules == {"conv1.conv", "conv3.conv"}
    assert peft_config_for(founder, AdaptationConfig(method="vera")).target_modules == {"se_fc1", "se_fc2"}
    ia3 = peft_config_for(_classifier(backbone_dirs["hubert_ecg"]), AdaptationConfig(method="ia3"))
    assert ia3.target_modules == {"k_proj", "v_proj", "output_dense"} and ia3.feedforward_modules == {"output_dense"}
    user = peft_config_for(_classifier(backbone_dirs["ecg_jepa"]), AdaptationConfig(method="ia3", target_modules=["qkv", "fc1", "fc2"]))
    assert user.feedforward_modules == {"fc2"}
    # oft_block_size, when set, replaces r (peft wants exactly one of them).
    oft = peft_config_for(_classifier(backbone_dirs["st_mem"]), AdaptationConfig(method="oft", oft_block_size=8))
    assert (oft.r, oft.oft_block_size) == (0, 8)


def test_oft_block_sizes_are_validated_against_every_target(backbone_dirs: dict[str, Path]) -> None:
    st_mem = _classifier(backbone_dirs["st_mem"])  # targets' in_features: 32 (to_qkv, to_out.0, net.0), 64 (net.3)
    with pytest.raises(UnsupportedAdaptationError, match=r"r=5 .*in_features of the targets: \[32, 64\]") as err:
        check_peft_method(st_mem, AdaptationConfig(method="oft", r=5))
    assert "r in [1, 2, 4, 8, 16] or oft_block_size in [2, 4, 8, 16, 32]" in str(err.value)
    with pytest.raises(UnsupportedAdaptationError, match="oft_block_size=3"):
        check_peft_method(st_mem, AdaptationConfig(method="oft", oft_block_size=3))
    with pytest.raises(UnsupportedAdaptationError, match="OFT needs r .* or oft_block_size > 0"):
        check_peft_method(st_mem, AdaptationConfig(method="oft", r=0))
    # peft itself would train something else than what was asked for, only warning about it:
    with pytest.warns(UserWarning, match=r"Adjusted `r`"):
        get_peft_model(copy.deepcopy(st_mem), OFTConfig(r=5, oft_block_size=0, target_modules=["to_qkv"]))
    # The tiny ECGFounder's SE gates (in_features 4..24) cannot take the default r=8.
    with pytest.raises(UnsupportedAdaptationError, match=r"se_fc2 \(1x in_features=4"):
        check_peft_method(_classifier(backbone_dirs["ecgfounder"]), AdaptationConfig(method="oft"))
    model = adapt(_classifier(backbone_dirs["st_mem"]), "oft", oft_block_size=8)
    layer = model.get_base_model().backbone.block0.ff.fn.net[3]  # in_features 64 -> 8 blocks of 8
    assert (layer.r["default"], layer.oft_block_size["default"]) == (8, 8)


def test_boft_block_sizes_and_butterfly_factor_are_validated(backbone_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    st_mem = _classifier(backbone_dirs["st_mem"])
    with pytest.raises(UnsupportedAdaptationError, match=r"boft_block_size=3 .* values that fit every target: \[2, 4, 8, 16, 32\]"):
        check_peft_method(st_mem, AdaptationConfig(method="boft", boft_block_size=3))
    # Without the CUDA extension peft 0.21 trains with factor 1 whatever the config says: refused.
    monkeypatch.setattr("peft.tuners.boft.layer.get_fbd_cuda", lambda: None)
    with pytest.raises(UnsupportedAdaptationError, match="fbd_cuda"):
        check_peft_method(st_mem, AdaptationConfig(method="boft", boft_n_butterfly_factor=2))


def test_lora_on_grouped_convolutions_trains_but_is_not_mergeable(backbone_dirs: dict[str, Path]) -> None:
    # The tiny ECGFounder's grouped conv2 has groups 1, 2, 2, 3.
    founder = _classifier(backbone_dirs["ecgfounder"])
    with pytest.raises(UnsupportedAdaptationError, match=r"r=8 does not divide .*groups=3.*multiple of 6"):
        adapt(founder, "lora", r=8, target_modules=["conv2.conv"])
    with pytest.raises(UnsupportedAdaptationError, match="DoRA"):
        adapt(founder, "lora", r=6, use_dora=True, target_modules=["conv2.conv"])
    model = adapt(founder, "lora", r=6, target_modules=["conv2.conv"])
    assert len(merge_blockers(model)) == 3  # the three blocks with groups > 1
    with pytest.raises(UnsupportedAdaptationError, match="cannot be merged: LoRA on a grouped Conv1d"):
        merge_for_deployment(model)
    with pytest.raises(NotImplementedError, match="groups > 1"):  # what peft would have done
        model.merge_and_unload()


def test_merging_into_a_weight_normed_layer_is_refused(backbone_dirs: dict[str, Path]) -> None:
    """peft's merge writes weight.data, which the weight-norm parametrisation recomputes: the adapter is lost."""
    model = adapt(_classifier(backbone_dirs["hubert_ecg"]), "loha", target_modules=["pos_conv_embed.conv"], dropout=0.0)
    with torch.no_grad():  # a non-zero adapter
        for name, p in model.named_parameters():
            if "hada_" in name:
                p.normal_(std=0.1)
    x = tiny_batch(model, batch=1)["input_values"]
    model.eval()
    with torch.no_grad():
        adapted = model(input_values=x).logits
    with pytest.raises(UnsupportedAdaptationError, match="parametrised weight"):
        merge_for_deployment(model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        silently_wrong = model.merge_and_unload()(input_values=x).logits
    assert not torch.allclose(silently_wrong, adapted, atol=1e-4)


def test_targets_inside_torch_fused_attention_are_refused(backbone_dirs: dict[str, Path]) -> None:
    clf = _classifier(backbone_dirs["st_mem"])
    clf.backbone.block1.ff = nn.TransformerEncoderLayer(32, 2, 64, batch_first=True)  # a user's custom block
    with pytest.raises(UnsupportedAdaptationError, match=r"inside TransformerEncoderLayer .* fast path"):
        check_peft_method(clf, AdaptationConfig(method="lora", target_modules=["to_qkv", "linear1"]))
    clf.backbone.block0.attn = nn.MultiheadAttention(32, 2, batch_first=True)
    with pytest.raises(UnsupportedAdaptationError, match=r"\['backbone.block0.attn'\] sit inside MultiheadAttention"):
        check_peft_method(clf, AdaptationConfig(method="lora", target_modules=["block0.attn"]))
    # Why: in eval() PyTorch's fused encoder kernel reads the base weights and ignores the adapter entirely.
    torch.manual_seed(0)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True), 1)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        plain = encoder.eval()(x)
    lora = get_peft_model(encoder, LoraConfig(target_modules=["linear1", "linear2"], init_lora_weights=False))
    with torch.no_grad():
        assert torch.equal(lora.eval()(x), plain)
        assert not torch.allclose(lora.train()(x), plain)


def test_misconfigurations_name_the_option(backbone_dirs: dict[str, Path]) -> None:
    clf = _classifier(backbone_dirs["hubert_ecg"])
    with pytest.raises(UnsupportedAdaptationError, match="ia3 cannot adapt hubert_ecg: use_dora is a LoRA option"):
        check_peft_method(clf, AdaptationConfig(method="ia3", use_dora=True))
    with pytest.raises(UnsupportedAdaptationError, match=r"target_modules \['q_projj'\] match no module"):
        check_peft_method(clf, AdaptationConfig(method="lora", target_modules=["q_proj", "q_projj"]))
    with pytest.raises(UnsupportedAdaptationError, match="init_lora_weights='loftq' is not supported"):
        check_peft_method(clf, AdaptationConfig(method="lora", init_lora_weights="loftq"))
    with pytest.raises(UnsupportedAdaptationError, match=r"targets conv_layers.0.conv \(1x nn.Conv1d\) are not layers peft 0.21's vera wraps \(nn.Linear only\)"):
        check_peft_method(clf, AdaptationConfig(method="vera", target_modules=["conv_layers.0.conv", "q_proj"]))


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_base_changing_inits_reload_on_the_unmodified_backbone(init: str, backbone_dirs: dict[str, Path], tmp_path: Path) -> None:
    model = adapt(_classifier(backbone_dirs["st_mem"]), "lora", init_lora_weights=init, dropout=0.0)
    batch = tiny_batch(model, batch=1)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    model(**batch, labels=torch.tensor([[0.0, 1.0, 1.0]])).loss.backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        expected = model(**batch).logits
    save_adapted(model, tmp_path / "run")
    with torch.no_grad():
        got = load_adapted(tmp_path / "run", backbone_name_or_path=str(backbone_dirs["st_mem"]))(**batch).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_base_changing_init_refuses_save_options_it_cannot_convert_before_writing(backbone_dirs: dict[str, Path],
                                                                                   tmp_path: Path) -> None:
    model = adapt(_classifier(backbone_dirs["st_mem"]), "lora", init_lora_weights="olora")
    refused = {
        "selected_adapters": {"selected_adapters": ["other"]},
        "safe_serialization": {"safe_serialization": False},
        # peft's own PiSSA/OLoRA conversion on top of this one would convert the adapter twice
        "path_initial_model_for_weight_conversion": {"path_initial_model_for_weight_conversion": str(tmp_path / "init")},
    }
    for name, kwargs in refused.items():
        with pytest.raises(ValueError, match=name):
            model.save_pretrained(tmp_path / name, **kwargs)
        assert not (tmp_path / name).exists()  # refused before peft wrote anything
    model.peft_config["default"].rank_pattern = {"q_proj": 4}
    with pytest.raises(ValueError, match="rank_pattern"):
        model.save_pretrained(tmp_path / "pattern")
    assert not (tmp_path / "pattern").exists()


def test_support_matrix_on_the_tiny_families(backbone_dirs: dict[str, Path]) -> None:
    classifiers = {FAMILY_LABEL.get(f, f): _classifier(backbone_dirs[f]) for f in TINY_CONFIGS}
    columns = {**MATRIX_COLUMNS, "oft": {"method": "oft", "r": 2}}  # see VARIANTS
    matrix = support_matrix(classifiers, columns)
    for family in TINY_CONFIGS:
        row = matrix[FAMILY_LABEL.get(family, family)]
        summary = {c: "ok" if v == "ok" else "no" for c, v in row.items()}
        assert summary == {c: "no" if (family, c) in REFUSED else "ok" for c in MATRIX_COLUMNS}
        assert all(v == "ok" or v.startswith(f"{MATRIX_COLUMNS[c]['method']} cannot adapt ") for c, v in row.items())


def test_support_matrix_of_the_released_architectures_as_markdown() -> None:
    matrix = support_matrix()  # every released variant, weightless
    # Every discovered family's released architectures (per layout variant) get a row; the refusals are those
    # declared for the tiny configs (the released architectures have the same layer kinds).
    assert {key.split("/")[0] for key in matrix} == set(FAMILIES)  # every discovered family has its rows
    assert set(matrix) <= set(FAMILY_LABEL.values())  # and every row's layout variant has a tiny config
    refused = {(f, c) for f, row in matrix.items() for c, v in row.items() if v != "ok"}
    assert refused == {(FAMILY_LABEL[f], c) for f, c in REFUSED if c in MATRIX_COLUMNS and FAMILY_LABEL[f] in matrix}
    text = support_matrix_markdown(matrix)
    lines = text.splitlines()
    assert lines[0] == "| family | " + " | ".join(MATRIX_COLUMNS) + " |"
    # Footnote numbers depend on the rows sorted before merl/resnet (families are discovered): read them off the row.
    row = next(line for line in lines if line.startswith("| merl/resnet |"))
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    assert [c if c == "ok" else c.split(" [")[0] for c in cells] == ["ok", "ok", "no", "no", "ok", "ok", "no", "no", "no"]
    ia3_note = cells[list(MATRIX_COLUMNS).index("ia3")].split("[")[1].rstrip("]")
    assert any(line.startswith(f"{ia3_note}. ia3 cannot adapt merl/resnet: ") for line in lines)
