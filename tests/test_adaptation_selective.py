"""Selective methods (partial, bitfit, norm_tuning) on every family, layer-wise learning-rate decay groups, and
gradient checkpointing equivalence on every family."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_backbones import TINY_CONFIGS, tiny_backbone, tiny_batch, tiny_classifier
from torch import nn

from ecg_adapt import ECGClassifier, adapt, load_adapted, load_backbone, save_adapted
from ecg_adapt.adaptation import AdaptationConfig, UnsupportedAdaptationError, backbone_layout, get_method
from ecg_adapt.adaptation.optim import parameter_groups
from ecg_adapt.adaptation.selective import trainable_parameter_names
from ecg_adapt.models.registry import get_family

FAMILIES = list(TINY_CONFIGS)
SELECTIVE = {"partial": {"num_trainable_blocks": 1}, "bitfit": {}, "norm_tuning": {}}


def _ecgfounder_with_bn(**kw: object) -> nn.Module:
    """The tiny ECGFounder with its BatchNorm layers applied (the releases have ``use_bn=False``)."""
    family = get_family("ecgfounder")
    torch.manual_seed(0)
    return family.model_class(family.config_class(**{**TINY_CONFIGS["ecgfounder"][1], "use_bn": True, **kw})).eval()


def _backbone(name: str) -> nn.Module:
    return _ecgfounder_with_bn() if name == "ecgfounder_bn" else tiny_backbone(name)


def _labels(batch: dict[str, torch.Tensor], seed: int) -> torch.Tensor:
    n = batch["input_values"].shape[0]
    return (torch.rand(n, 3, generator=torch.Generator().manual_seed(seed)) > 0.5).float()


def _train_step(model: nn.Module, seed: int = 0) -> None:
    """One AdamW step (weight decay on, so every parameter that gets a gradient moves) in training mode."""
    batch = tiny_batch(model, batch=2, seed=seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.01)
    model.train()
    torch.manual_seed(seed)
    model(**batch, labels=_labels(batch, seed)).loss.backward()
    opt.step()


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in [*model.named_parameters(), *model.named_buffers()]}


# Every family x method, except norm_tuning on the released ECGFounder, which applies no norm layer (see
# test_norm_tuning_refuses_unused_batch_norm); ECGFounder with BatchNorm applied gets norm_tuning instead.
CASES = [(f, m) for f in FAMILIES for m in SELECTIVE if (f, m) != ("ecgfounder", "norm_tuning")] + [("ecgfounder_bn", "norm_tuning")]


@pytest.mark.parametrize(("family", "method"), CASES)
def test_selective_step_changes_exactly_the_claimed_parameters_and_reloads(family: str, method: str, tmp_path: Path) -> None:
    tiny = _backbone(family)
    tiny.save_pretrained(tmp_path / "backbone")  # adapter-only saves reload the backbone from here
    torch.manual_seed(1)
    model = adapt(ECGClassifier.from_backbone(load_backbone(tmp_path / "backbone"), ["a", "b", "c"]), method, **SELECTIVE[method])
    claimed = set(trainable_parameter_names(model, model.adaptation_config))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == claimed
    assert {"classifier.weight", "classifier.bias"} < claimed and len(claimed) > 2
    spec_claims = get_method(method).claims
    assert all(spec_claims(n) for n in claimed)

    x = tiny_batch(model, batch=1, seed=7)["input_values"]
    with torch.no_grad():
        untrained_logits = model.eval()(input_values=x).logits

    # Which modules run in training mode, seen from inside the forward pass.
    layout = backbone_layout(model.backbone)
    seen: dict[str, bool] = {}
    watched = {n: m for n, m in model.backbone.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    watched.update(zip(layout.block_names, layout.blocks))
    hooks = [m.register_forward_pre_hook(lambda m, a, n=n: seen.__setitem__(n, m.training)) for n, m in watched.items()]
    before = _snapshot(model)
    _train_step(model)
    for h in hooks:
        h.remove()
    changed = {n for n, t in _snapshot(model).items() if not torch.equal(t, before[n])}
    # Exactly the claimed parameters move; no buffer does (BatchNorm statistics stay the pretrained ones).
    assert changed == claimed, (sorted(changed - claimed), sorted(claimed - changed))
    assert not any(seen.get(n, False) for n in watched if isinstance(watched[n], nn.modules.batchnorm._BatchNorm))
    blocks_training = [seen[n] for n in layout.block_names]
    expected = [False] * (layout.num_blocks - 1) + [True] if method == "partial" else [True] * layout.num_blocks
    assert blocks_training == expected

    save_adapted(model, tmp_path / "run")
    assert set(load_file(str(tmp_path / "run" / "adapter_model.safetensors"))) == claimed
    model.eval()
    with torch.no_grad():
        expected_logits = model(input_values=x).logits
        reloaded = load_adapted(tmp_path / "run", backbone_name_or_path=str(tmp_path / "backbone"))
        assert torch.equal(reloaded(input_values=x).logits, expected_logits)
    assert not torch.allclose(untrained_logits, expected_logits)  # and training changed the model


def test_partial_keeps_the_part_below_in_eval_mode_and_counts_blocks() -> None:
    model = adapt(tiny_classifier("hubert_ecg"), "partial", num_trainable_blocks=1)
    model.train()
    model(**tiny_batch(model))
    backbone = model.backbone
    assert not backbone.feature_extractor.training and not backbone.encoder.layers[0].training
    assert backbone.encoder.layers[1].training and backbone.encoder.layers[1].dropout.training
    # The trainable set: the top layer and the head, nothing before it.
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith(("backbone.encoder.layers.1.", "classifier."))}

    with pytest.raises(UnsupportedAdaptationError, match=r"num_trainable_blocks=3, but this hubert_ecg backbone has 2 blocks"):
        adapt(tiny_classifier("hubert_ecg"), "partial", num_trainable_blocks=3)
    # All blocks: the final norm comes with them, the embeddings stay frozen.
    model = adapt(tiny_classifier("st_mem"), "partial", num_trainable_blocks=2)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"backbone.norm.weight", "backbone.block0.attn.fn.to_qkv.weight"} < trainable
    assert not any(n.startswith(("backbone.to_patch_embedding", "backbone.pos_embedding")) for n in trainable)


def test_partial_with_no_block_is_a_linear_probe() -> None:
    partial = adapt(tiny_classifier("st_mem"), "partial", num_trainable_blocks=0)
    probe = adapt(tiny_classifier("st_mem"), "linear_probe")
    assert [n for n, p in partial.named_parameters() if p.requires_grad] == ["classifier.weight", "classifier.bias"]
    _train_step(partial)
    _train_step(probe)
    assert not partial.backbone.training and not probe.backbone.training
    for (n, a), (_, b) in zip(partial.named_parameters(), probe.named_parameters()):
        assert torch.equal(a, b), n


def test_used_parameters_follow_what_the_forward_pass_applies() -> None:
    # Released ECGFounder (use_bn=False): BatchNorm tensors are stored but never applied.
    trained = set(trainable_parameter_names(tiny_classifier("ecgfounder"), AdaptationConfig(method="bitfit")))
    assert "backbone.first_conv.conv.bias" in trained and not any(".bn" in n or "first_bn" in n for n in trained)
    # With use_bn=True they are, except the first block's bn1 (the network's first block skips it).
    clf = ECGClassifier.from_backbone(_ecgfounder_with_bn(), ["a", "b"])
    trained = set(trainable_parameter_names(clf, AdaptationConfig(method="norm_tuning")))
    assert {"backbone.first_bn.weight", "backbone.stage_list.0.block_list.0.bn2.bias"} < trained
    assert "backbone.stage_list.0.block_list.0.bn1.weight" not in trained
    # ECG-JEPA's fused qkv has no bias (qkv_bias=False, as released): BitFit simply has fewer biases there.
    trained = set(trainable_parameter_names(tiny_classifier("ecg_jepa"), AdaptationConfig(method="bitfit")))
    assert "backbone.encoder_blocks.blocks.0.attn.proj.bias" in trained
    assert not any("qkv" in n for n in trained)


def test_norm_tuning_refuses_unused_batch_norm() -> None:
    with pytest.raises(UnsupportedAdaptationError, match=r"no normalisation-layer parameter.*never used by the forward pass"):
        adapt(tiny_classifier("ecgfounder"), "norm_tuning")


# ------------------------------------------------------------------------------------------ layer-wise lr decay
def _lrs(groups: list[dict]) -> dict[str, tuple[float, float]]:
    out = {}
    for g in groups:
        for n in g["param_names"]:
            assert n not in out, f"{n} is in two groups"
            out[n] = (g["lr"], g["weight_decay"])
    return out


def test_layerwise_lr_decay_groups_on_a_two_block_model() -> None:
    # ST-MEM tiny: embeddings (depth 0), block0 (1), block1 (2), final norm (3). lr 1e-3, decay 0.5:
    # block1 1e-3, block0 5e-4, embeddings 2.5e-4, final norm 1e-3, head 1e-2.
    model = adapt(tiny_classifier("st_mem"), "full")
    groups = parameter_groups(model, learning_rate=1e-3, head_learning_rate=1e-2, weight_decay=0.1, layerwise_lr_decay=0.5)
    lrs = _lrs(groups)
    assert set(lrs) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert lrs["backbone.to_patch_embedding.2.weight"] == (2.5e-4, 0.1)
    assert lrs["backbone.pos_embedding"] == (2.5e-4, 0.0)  # a positional table: no weight decay
    assert lrs["backbone.block0.attn.fn.to_qkv.weight"] == (5e-4, 0.1)
    assert lrs["backbone.block0.attn.norm.weight"] == (5e-4, 0.0)
    assert lrs["backbone.block1.ff.fn.net.3.bias"] == (1e-3, 0.0)
    assert lrs["backbone.block1.ff.fn.net.3.weight"] == (1e-3, 0.1)
    assert lrs["backbone.norm.weight"] == (1e-3, 0.0)
    assert lrs["classifier.weight"] == (1e-2, 0.1) and lrs["classifier.bias"] == (1e-2, 0.0)
    names = [g["name"] for g in groups]
    assert names[0] == "depth00" and names[-2:] == ["head", "head.no_decay"]
    torch.optim.AdamW(groups, lr=1e-3)  # torch accepts the groups as they are

    # No decay: every backbone parameter at the base rate; the head keeps its own.
    flat = _lrs(parameter_groups(model, 1e-3, 1e-2, 0.1, 1.0))
    assert {lr for n, (lr, _) in flat.items() if n.startswith("backbone.")} == {1e-3}

    # partial: only what is trained, at the same rates.
    model = adapt(tiny_classifier("st_mem"), "partial", num_trainable_blocks=1)
    part = _lrs(parameter_groups(model, 1e-3, 1e-2, 0.1, 0.5))
    assert {lr for n, (lr, _) in part.items() if n.startswith("backbone.")} == {1e-3}
    assert "backbone.block0.attn.fn.to_qkv.weight" not in part


def test_layerwise_lr_decay_for_peft_and_weight_norm() -> None:
    # LoRA parameters take the depth of the layer they adapt; peft's head copy is the head.
    model = adapt(tiny_classifier("hubert_ecg"), "lora", r=4)
    lrs = _lrs(parameter_groups(model, 1e-3, 1e-2, 0.1, 0.5))
    assert lrs["base_model.model.backbone.encoder.layers.0.attention.q_proj.lora_A.default.weight"] == (5e-4, 0.1)
    assert lrs["base_model.model.backbone.encoder.layers.1.feed_forward.output_dense.lora_B.default.weight"] == (1e-3, 0.1)
    assert lrs["base_model.model.classifier.modules_to_save.default.weight"] == (1e-2, 0.1)
    # ECG-FM: the weight-normed positional conv's magnitude g is a gain (no decay), its direction v is a kernel.
    model = adapt(tiny_classifier("ecg_fm"), "full")
    lrs = _lrs(parameter_groups(model, 1e-3, None, 0.1, 0.5))
    assert lrs["backbone.conv_pos.pos_conv.0.parametrizations.weight.original0"] == (2.5e-4, 0.0)
    assert lrs["backbone.conv_pos.pos_conv.0.parametrizations.weight.original1"] == (2.5e-4, 0.1)
    assert lrs["classifier.weight"] == (1e-3, 0.1)
    with pytest.raises(ValueError, match="layerwise_lr_decay must be in"):
        parameter_groups(model, 1e-3, layerwise_lr_decay=1.5)


# ------------------------------------------------------------------------------------- gradient checkpointing
def _loss_and_grads(model: nn.Module, checkpointing: bool) -> tuple[torch.Tensor, dict, dict, int]:
    """Loss, gradients, buffers after one forward/backward, and how often the top block's first leaf ran."""
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    top = backbone_layout(model.backbone).blocks[-1]
    leaf = next(m for m in top.modules() if isinstance(m, (nn.Linear, nn.Conv1d)))
    calls = []
    handle = leaf.register_forward_hook(lambda *a: calls.append(1))
    batch = tiny_batch(model, batch=2, seed=3)
    torch.manual_seed(11)  # same dropout masks in both runs (checkpointing replays the RNG state)
    loss = model(**batch, labels=_labels(batch, 3)).loss
    loss.backward()
    handle.remove()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, {n: b.clone() for n, b in model.named_buffers()}, len(calls)


@pytest.mark.parametrize("family", [*FAMILIES, "ecgfounder_bn"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(family: str) -> None:
    def build() -> nn.Module:
        if family == "ecgfounder_bn":  # BatchNorm and dropout applied: the recomputation must not count twice
            torch.manual_seed(1)
            return ECGClassifier.from_backbone(_ecgfounder_with_bn(use_do=True), ["a", "b", "c"])
        return tiny_classifier(family)

    loss, grads, buffers, calls = _loss_and_grads(build(), checkpointing=False)
    loss_gc, grads_gc, buffers_gc, calls_gc = _loss_and_grads(build(), checkpointing=True)
    torch.testing.assert_close(loss_gc, loss, rtol=0, atol=1e-6)
    assert grads_gc.keys() == grads.keys()
    for n in grads:
        torch.testing.assert_close(grads_gc[n], grads[n], rtol=0, atol=1e-6, msg=n)
    for n in buffers:
        assert torch.equal(buffers_gc[n], buffers[n]), n
    assert calls == 1
    # The top block really is recomputed in the backward pass, except MERL-ResNet's stages whose BatchNorm trains
    # (MERL skips them: see MERLModel); it recomputes them when BatchNorm is frozen (next test).
    assert calls_gc == (1 if family == "merl_resnet" else 2)
    if family == "ecgfounder_bn":
        counts = {int(v) for n, v in buffers_gc.items() if n.endswith("num_batches_tracked") and int(v)}
        assert counts == {1}


def test_gradient_checkpointing_with_a_selective_method_recomputes_merl_resnet() -> None:
    results = []
    for checkpointing in (False, True):
        model = tiny_classifier("merl_resnet")
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        results.append(_loss_and_grads(adapt(model, "norm_tuning"), checkpointing=False))
    (loss, grads, _, calls), (loss_gc, grads_gc, _, calls_gc) = results
    torch.testing.assert_close(loss_gc, loss, rtol=0, atol=1e-6)
    for n in grads:
        torch.testing.assert_close(grads_gc[n], grads[n], rtol=0, atol=1e-6, msg=n)
    assert (calls, calls_gc) == (1, 2)
