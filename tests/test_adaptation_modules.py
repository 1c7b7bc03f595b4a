"""ecg_adapt's own adapter methods (Houlsby, Pfeiffer, conv adapters, prompt tuning) on every backbone family:
they start as the base model, train exactly what they claim, reload to identical logits, switch and mix per row,
refuse what cannot work, and keep padding out of the computation."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_backbones import tiny_batch, tiny_classifier

from ecg_adapt import adapt, load_adapted, save_adapted
from ecg_adapt.adaptation import AdaptationConfig, UnsupportedAdaptationError, count_parameters, get_method
from ecg_adapt.adaptation.layout import backbone_layout
from ecg_adapt.adaptation.modules import AdaptedModel
from ecg_adapt.models.classifier import ECGClassifier

TRANSFORMERS = ("hubert_ecg", "ecg_fm", "st_mem", "merl_vit", "ecg_jepa")
CNNS = ("ecgfounder", "merl_resnet", "ecgfm_ked", "ecg_cpc")  # ecg_cpc: S4 blocks, channels first
METHODS = {
    "houlsby": {"method": "houlsby_adapter"},
    "pfeiffer": {"method": "pfeiffer_adapter"},
    "prompt_shallow": {"method": "prompt_tuning", "prompt_depth": "shallow"},
    "prompt_deep": {"method": "prompt_tuning", "prompt_depth": "deep"},
    "conv": {"method": "conv_adapter"},
}
PAIRS = [(f, m) for f in TRANSFORMERS for m in ("houlsby", "pfeiffer", "prompt_shallow", "prompt_deep")]
PAIRS += [(f, "conv") for f in CNNS]
# Families whose backbone takes any input length get a short one (the tests are about the adapters, not the signal).
SHORT_INPUT = {"hubert_ecg": 800, "ecg_fm": 480, "ecgfounder": 500, "merl_resnet": 512, "st_mem": 375, "ecgfm_ked": 512}


def _config(method: str) -> AdaptationConfig:
    # Small bottlenecks (width 32 / 4 = 8) and 3 prompts keep the tiny models tiny; dropout off for exact comparisons.
    return AdaptationConfig(**METHODS[method], adapter_reduction_factor=4, num_prompt_tokens=3, dropout=0.0)


def _inputs(model: torch.nn.Module, family: str, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = tiny_batch(model, batch=batch, seed=seed)
    x = inputs["input_values"][..., : SHORT_INPUT.get(family, inputs["input_values"].shape[-1])].contiguous()
    return x, torch.ones_like(x, dtype=torch.long)


def _classifier(family: str, dirs: dict[str, Path]) -> ECGClassifier:
    """A tiny classifier whose config names its saved backbone (adapter saves reload the backbone from there)."""
    clf = tiny_classifier(family)
    clf.config.backbone_name_or_path = str(dirs[family])
    return clf.eval()


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _step(model: torch.nn.Module, x: torch.Tensor) -> None:
    """One AdamW step without weight decay: a parameter moves only if it receives a gradient."""
    g = torch.Generator().manual_seed(1)
    y = (torch.rand(x.shape[0], 3, generator=g) > 0.5).float()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    model.train()
    model(input_values=x, labels=y).loss.backward()
    opt.step()
    model.eval()


@pytest.mark.parametrize(("family", "method"), PAIRS, ids=[f"{f}-{m}" for f, m in PAIRS])
def test_adapter_starts_as_base_trains_only_claimed_tensors_and_reloads_to_identical_logits(
    family: str, method: str, tiny_backbone_dirs: dict[str, Path], tmp_path: Path
) -> None:
    clf = _classifier(family, tiny_backbone_dirs)
    x, _ = _inputs(clf, family)
    with torch.no_grad():
        base = clf(input_values=x).logits
    config = _config(method)
    model = adapt(clf, config)
    assert isinstance(model, AdaptedModel) and model.get_base_model() is clf
    spec = get_method(config.method)

    # 1. identity at init: bottleneck/conv adapters are exactly the base model; prompts are the base model when
    #    disabled, and change the output when enabled (they take part in attention from the start).
    with torch.no_grad():
        start = model(input_values=x).logits
        if config.method == "prompt_tuning":
            with model.disable_adapter():
                assert torch.equal(model(input_values=x).logits, base)
            assert not torch.allclose(start, base)
        else:
            assert torch.equal(start, base)

    # 2. a training step changes exactly the trainable tensors, which are exactly what the method claims
    #    (every parameter and buffer of the whole model compared). The zero-initialised ``up`` projections are
    #    first moved off zero, or they would pass no gradient to ``down`` in this one step.
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(spec.claims(n) for n in trainable)
    assert not any(spec.claims(n) for n, p in model.named_parameters() if not p.requires_grad)
    assert any(".classifier." in n for n in trainable)  # the adapter's own head copy
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".up." in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    before = _snapshot(model)
    _step(model, x)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == trainable, (sorted(changed - trainable), sorted(trainable - changed))

    # 3. save_adapted -> load_adapted: only the adapter + head are stored, and the logits come back bit for bit.
    out = tmp_path / "run"
    save_adapted(model, out)
    files = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "config.json", "adaptation_config.json"} <= files
    assert "model.safetensors" not in files
    stored = load_file(str(out / "adapter_model.safetensors"))
    assert set(stored) == {n.replace("adapters.default.", "adapters.", 1) for n in trainable}
    assert all(spec.claims(k) for k in stored)
    meta = json.loads((out / "adapter_config.json").read_text())
    assert meta["method"] == config.method and meta["base_model_name_or_path"] == str(tiny_backbone_dirs[family])
    assert "ecg_adapt_version" in meta
    with torch.no_grad():
        trained = model(input_values=x).logits
        reloaded = load_adapted(out, backbone_name_or_path=str(tiny_backbone_dirs[family]))(input_values=x).logits
    assert torch.equal(trained, reloaded)
    assert not torch.allclose(trained, start)  # and the training did change the function


def _randomise(adapter: torch.nn.Module, seed: int) -> None:
    """Give an adapter non-trivial weights without training it (zero ``up`` projections made random)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize(("family", "first", "second"), [
    ("hubert_ecg", "houlsby", "prompt_deep"),
    ("ecg_jepa", "prompt_shallow", "pfeiffer"),
    ("merl_resnet", "conv", "conv"),
])
def test_two_adapters_switch_and_a_mixed_batch_equals_per_adapter_runs_row_by_row(
    family: str, first: str, second: str, tiny_backbone_dirs: dict[str, Path],
    tmp_path: Path,
) -> None:
    model = AdaptedModel(_classifier(family, tiny_backbone_dirs), _config(first), adapter_name="a")
    model.add_adapter("b", _config(second))
    _randomise(model.adapters["a"], 1)
    _randomise(model.adapters["b"], 2)
    assert model.active_adapter == "a"
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if n.startswith("adapters.a.")}
    x, _ = _inputs(model, family, batch=3, seed=4)
    with torch.no_grad():
        logits_a = model(input_values=x).logits
        model.set_adapter("b")
        logits_b = model(input_values=x).logits
        with model.disable_adapter():
            logits_base = model(input_values=x).logits
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if n.startswith("adapters.b.")}
    assert not torch.allclose(logits_a, logits_b) and not torch.allclose(logits_a, logits_base)

    # Each adapter saved and loaded alone on a fresh classifier gives the same logits as switching to it.
    model.save_pretrained(tmp_path / "both", selected_adapters=["a", "b"])
    for name, expected in (("a", logits_a), ("b", logits_b)):
        alone = AdaptedModel.from_pretrained(_classifier(family, tiny_backbone_dirs), tmp_path / "both" / name)
        with torch.no_grad():
            assert torch.equal(alone(input_values=x).logits, expected)

    # Mixed batch: each row through its own adapter and head, in the original order; the loss is the batch mean.
    names = ["b", "__base__", "a"]
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    with torch.no_grad():
        mixed = model(input_values=x, labels=labels, adapter_names=names)
    for row, expected in enumerate((logits_b, logits_base, logits_a)):
        torch.testing.assert_close(mixed.logits[row], expected[row], rtol=0, atol=1e-5)
    torch.testing.assert_close(mixed.loss, torch.nn.functional.binary_cross_entropy_with_logits(mixed.logits, labels))
    assert model.active_adapter == "b"  # a mixed batch does not switch the active adapter

    with pytest.raises(ValueError, match="no adapter named \\['c'\\]"):
        model(input_values=x, adapter_names=["a", "c", "a"])
    with pytest.raises(ValueError, match="2 entries for a batch of 3"):
        model(input_values=x, adapter_names=["a", "b"])
    model.adapters["a"].classifier = torch.nn.Linear(model.adapters["a"].classifier.in_features, 5)
    with pytest.raises(ValueError, match="different numbers of labels"):
        model(input_values=x, adapter_names=names)

    model.delete_adapter("b")
    assert model.active_adapter == "a" and list(model.adapters) == ["a"]


def test_merge_and_unload_says_why_the_adapters_cannot_be_folded(
    tiny_backbone_dirs: dict[str, Path]
) -> None:
    model = adapt(_classifier("st_mem", tiny_backbone_dirs), _config("houlsby"))
    with pytest.raises(UnsupportedAdaptationError, match="houlsby_adapter cannot be merged.*non-linear"):
        model.merge_and_unload()
    assert not get_method("prompt_tuning").mergeable and not get_method("conv_adapter").mergeable


@pytest.mark.parametrize(("family", "method", "alternative"), [
    ("hubert_ecg", "conv", "use houlsby_adapter or pfeiffer_adapter"),
    ("ecgfounder", "houlsby", "use conv_adapter"),
    ("merl_resnet", "pfeiffer", "use conv_adapter"),
    ("merl_resnet", "prompt_deep", "use conv_adapter"),
    ("ecg_cpc", "prompt_shallow", "ecg_cpc is an S4 state-space model .*: use conv_adapter"),
])
def test_unsupported_pairs_are_refused_before_anything_changes_naming_the_alternative(
    family: str, method: str, alternative: str
) -> None:
    clf = tiny_classifier(family)
    trainable = {n for n, p in clf.named_parameters() if p.requires_grad}
    with pytest.raises(UnsupportedAdaptationError, match=alternative):
        adapt(clf, _config(method))
    assert {n for n, p in clf.named_parameters() if p.requires_grad} == trainable


@pytest.mark.parametrize("family", ["ecg_cpc", "ecgfm_ked", "ecgfounder"])
def test_refusals_describe_the_backbone_as_its_family_record_does(family: str) -> None:
    from ecg_adapt.models.registry import get_family

    clf = tiny_classifier(family)
    record = get_family(clf.backbone.config.model_type)
    what = record.variant(record.key_of(clf.backbone.config)).layout.what
    with pytest.raises(UnsupportedAdaptationError) as err:
        adapt(clf, _config("houlsby"))
    assert f"is {what}: use conv_adapter" in str(err.value)
    # ECG-CPC's blocks are handled like a CNN's (kind "cnn"), but it is not one, and the message must not say so.
    assert ("is a CNN" in str(err.value)) == (family != "ecg_cpc")


def test_prompt_tuning_refuses_layerdrop_which_could_skip_the_blocks_that_insert_and_remove_prompts() -> None:
    clf = tiny_classifier("hubert_ecg", backbone_layerdrop=0.1)
    with pytest.raises(UnsupportedAdaptationError, match="backbone_layerdrop=0"):
        adapt(clf, _config("prompt_shallow"))


@pytest.mark.parametrize("family", ["st_mem", "merl_vit", "ecg_jepa"])
@pytest.mark.parametrize("depth", ["prompt_shallow", "prompt_deep"])
def test_prompts_keep_padding_out_where_the_family_honours_the_mask(family: str, depth: str) -> None:
    """These families' real outputs do not depend on padded samples at all; with prompts that must stay true."""
    model = adapt(tiny_classifier(family), _config(depth)).eval()
    _randomise(model.adapters["default"], 3)
    x, mask = _inputs(model, family, seed=5)
    mask[0, ..., x.shape[-1] // 2 :] = 0  # row 0: second half is padding
    if family == "ecg_jepa":
        mask[1, 3] = 0  # row 1: a masked lead (lead-wise attention)
    noisy = x.clone()
    noisy[mask == 0] = 7.0 * torch.randn(int((mask == 0).sum()), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        clean_out = model(input_values=x, attention_mask=mask).logits
        noisy_out = model(input_values=noisy, attention_mask=mask).logits
        unmasked = model(input_values=noisy).logits
    torch.testing.assert_close(noisy_out, clean_out, rtol=0, atol=1e-6)
    assert not torch.allclose(unmasked, clean_out)  # the padding content would matter if it were attended


@pytest.mark.parametrize("family", ["hubert_ecg", "ecg_fm"])
@pytest.mark.parametrize("depth", ["prompt_shallow", "prompt_deep"])
def test_prompts_never_attend_padded_tokens_in_conv_front_end_families(family: str, depth: str) -> None:
    """HuBERT-ECG and ECG-FM let padded samples reach real frames through their conv front end (as the originals
    do), so the check is at the blocks: padded tokens entering the first block are replaced by noise, and
    nothing downstream (real tokens, prompts, pooled features) may change."""
    model = adapt(tiny_classifier(family), _config(depth)).eval()
    _randomise(model.adapters["default"], 3)
    x, mask = _inputs(model, family, seed=5)
    mask[0, ..., x.shape[-1] // 2 :] = 0
    backbone = model.get_base_model().backbone
    noise = torch.Generator().manual_seed(6)
    replaced: dict[str, torch.Tensor] = {}

    def perturb(module: torch.nn.Module, args: tuple) -> tuple | None:
        if "tokens" not in replaced:
            return None
        h, where = args[0].clone(), replaced["tokens"]
        h[where] = 7.0 * torch.randn(int(where.sum()), h.shape[-1], generator=noise)
        return (h, *args[1:])

    # prepend=True: runs before the adapter's hook, i.e. on the tokens before the prompts join them
    handle = backbone_layout(backbone).blocks[0].register_forward_pre_hook(perturb, prepend=True)
    try:
        with torch.no_grad():
            reference = model(input_values=x, attention_mask=mask)
            real = backbone.frame_mask(mask, reference.last_hidden_state.shape[1])
            assert not bool(real[0].all()) and bool(real[1].all())
            replaced["tokens"] = ~real
            perturbed = model(input_values=x, attention_mask=mask).logits
            replaced["tokens"] = torch.zeros_like(real)
            replaced["tokens"][1, 0] = True  # sanity: replacing one *real* token does change the output
            sanity = model(input_values=x, attention_mask=mask).logits
    finally:
        handle.remove()
    torch.testing.assert_close(perturbed, reference.logits, rtol=0, atol=1e-6)
    assert not torch.allclose(sanity[1], reference.logits[1])


def test_adapter_folder_from_another_family_is_a_clear_error(
    tiny_backbone_dirs: dict[str, Path], tmp_path: Path
) -> None:
    model = adapt(_classifier("st_mem", tiny_backbone_dirs), _config("pfeiffer"))
    model.save_pretrained(tmp_path / "st_mem_adapter")
    other = AdaptedModel(tiny_classifier("merl_vit"))
    with pytest.raises(ValueError, match="trained on a st_mem backbone; this one is merl/vit"):
        other.load_adapter(tmp_path / "st_mem_adapter")
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        other.load_adapter(tmp_path)


def test_trainable_parameter_counts_follow_the_method_definitions() -> None:
    """Houlsby = 2 bottlenecks per block, Pfeiffer = 1, prompts = tokens x width (x blocks when deep), + the head."""
    d, blocks, m, head = 32, 2, 8, 32 * 3 + 3
    bottleneck = (d * m + m) + (m * d + d)
    expected = {
        "houlsby": 2 * blocks * bottleneck + head,
        "pfeiffer": blocks * bottleneck + head,
        "prompt_shallow": 3 * d + head,
        "prompt_deep": blocks * 3 * d + head,
    }
    for method, n in expected.items():
        assert count_parameters(adapt(tiny_classifier("ecg_jepa"), _config(method))).trainable == n, method
    channels = backbone_layout(tiny_classifier("merl_resnet").backbone).block_channels
    conv = sum((c * (c // 4) + c // 4) + (c // 4 * c + c) for c in channels) + 16 * 3 + 3
    assert count_parameters(adapt(tiny_classifier("merl_resnet"), _config("conv"))).trainable == conv


def test_a_deep_copy_routes_through_its_own_adapters() -> None:
    """The routing hooks are bound methods, so a deep copy's hooks serve the copy's adapters, not the original's."""
    model = adapt(tiny_classifier("st_mem"), _config("pfeiffer")).eval()
    twin = copy.deepcopy(model)
    _randomise(twin.adapters["default"], 1)
    x, _ = _inputs(model, "st_mem")
    with torch.no_grad():
        original = model(input_values=x).logits
        with model.disable_adapter():
            assert torch.equal(original, model(input_values=x).logits)  # still the zero-initialised adapter
        assert not torch.allclose(twin(input_values=x).logits, original)


def test_prompts_and_adapters_give_the_same_gradients_under_gradient_checkpointing() -> None:
    """ST-MEM recomputes each block (hooks included) in the backward pass: the hooks must be stateless."""
    grads = []
    for checkpointing in (False, True):
        clf = tiny_classifier("st_mem")
        if checkpointing:
            clf.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model = adapt(clf, _config("prompt_deep"))
        _randomise(model.adapters["default"], 3)
        x, mask = _inputs(model, "st_mem", seed=5)
        mask[0, :, 150:] = 0
        model.train()
        model(input_values=x, attention_mask=mask, labels=torch.ones(2, 3)).loss.backward()
        grads.append(model.adapters["default"].prompts.grad.clone())
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0])


def test_peft_lora_adapters_mix_per_row_with_the_same_adapter_names_convention() -> None:
    """peft's own ``adapter_names=`` (LoRA) takes the same ``"__base__"`` entry as AdaptedModel."""
    from peft import LoraConfig

    model = adapt(tiny_classifier("st_mem"), "lora", r=4, dropout=0.0).eval()
    model.add_adapter("b", LoraConfig(r=4, target_modules=model.peft_config["default"].target_modules,
                                      modules_to_save=["classifier"]))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n or "modules_to_save" in n:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    x, _ = _inputs(model, "st_mem", batch=3)
    with torch.no_grad():
        model.set_adapter("default")
        logits_a = model(input_values=x).logits
        model.set_adapter("b")
        logits_b = model(input_values=x).logits
        with model.disable_adapter():
            base = model(input_values=x).logits
        mixed = model(input_values=x, adapter_names=["b", "__base__", "default"]).logits
    torch.testing.assert_close(mixed, torch.stack([logits_b[0], base[1], logits_a[2]]), rtol=0, atol=1e-5)
    assert not torch.allclose(logits_a, logits_b)
