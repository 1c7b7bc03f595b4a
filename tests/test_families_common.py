"""Every registered backbone family, the same way (the transformers ``ModelTesterMixin`` / timm ``list_models()``
habit): the family record, its tiny configs, its released variants and its golden fixtures.

Parametrised over what the registry discovers, so a new family folder is tested here without editing this file;
its golden fixtures are declared in ``tests/family_cases/<model_type>.py``. The per-family test files keep only
what is specific to one family.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel

from ecg_adapt import ECGClassifier, adapt, load_backbone
from ecg_adapt.adaptation.layout import backbone_layout, family_key
from ecg_adapt.adaptation.peft_methods import default_target_modules
from ecg_adapt.models.family import BackboneFamily, BlockLayout, ECGBackbone
from ecg_adapt.models.registry import FAMILIES, check_family, get_family, register_family, released_variants

from family_cases import GoldenCase, all_cases
from tiny_backbones import TINY_CONFIGS, tiny_backbone, tiny_batch, tiny_classifier


TINY = sorted(TINY_CONFIGS)
GOLDEN_CASES, RELEASED_NAMES, LORA_CASES = all_cases()
ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ the family record
@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_family_facts_hold_on_its_tiny_models(model_type: str) -> None:
    family = get_family(model_type)
    check_family(family)  # layout, sublayers, channels, post-block modules, default targets on real tiny models
    covered = {family.key_of(family.config_class(**kw)) for kw in family.tiny_configs.values()}
    assert covered == set(family.variants)
    assert family.lora_target_modules and family.lora_rationale
    assert family.model_class.main_input_name == "input_values" and family.model_class.supports_gradient_checkpointing


def test_every_family_has_golden_cases_released_names_and_lora_cases() -> None:
    assert {c.family for c in GOLDEN_CASES} == set(FAMILIES)
    assert {r.family for r in RELEASED_NAMES} == set(FAMILIES)
    assert set(LORA_CASES) == set(TINY_CONFIGS)


def test_listing_families_imports_neither_torch_nor_transformers() -> None:
    code = (
        "import sys; from ecg_adapt.models.registry import FAMILIES, released_variants; "
        "assert len(released_variants()) >= len(FAMILIES) >= 6; "
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; print(','.join(heavy))"
    )
    # The package faces above ecg_adapt.models are not this test's subject: load the registry with them stubbed.
    stub = (
        "import importlib.util, sys, types, pathlib; root = pathlib.Path(sys.argv[1]); "
        "[sys.modules.setdefault(n, types.ModuleType(n)) for n in ('ecg_adapt', 'ecg_adapt.processing')]; "
        "sys.modules['ecg_adapt'].__path__ = [str(root / 'ecg_adapt')]; "
        "sys.modules['ecg_adapt.processing'].__path__ = [str(root / 'ecg_adapt' / 'processing')]; "
    )
    out = subprocess.run([sys.executable, "-c", stub + code, str(ROOT)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def _broken(family: BackboneFamily, **changes) -> BackboneFamily:
    return replace(family, **changes)


def test_registration_refuses_a_family_without_layout_tiny_config_or_reasons() -> None:
    st_mem = get_family("st_mem")
    with pytest.raises(ValueError, match="no tiny_configs"):
        register_family(_broken(st_mem, tiny_configs={}))
    with pytest.raises(ValueError, match="no architecture variant"):
        register_family(_broken(st_mem, variants={}))
    variant = st_mem.variants["st_mem"]
    no_prompt = replace(variant, layout=replace(variant.layout, prompt=None))
    with pytest.raises(ValueError, match="needs prompt"):
        register_family(_broken(st_mem, variants={"st_mem": no_prompt}))
    merl = get_family("merl")
    resnet = merl.variants["merl/resnet"]
    silent = replace(resnet, targets=replace(resnet.targets, no_linear_reason=None))
    with pytest.raises(ValueError, match="no_linear_reason"):
        register_family(replace(merl, model_type="merl2", variants={"merl2/resnet": silent},
                                variant_of=lambda c: "merl2/resnet"))
    with pytest.raises(ValueError, match="no tiny config builds"):
        register_family(replace(merl, tiny_configs={"only_vit": merl.tiny_configs["merl_vit"]}, model_type="merl3",
                                variants={f"merl3/{k.split('/')[1]}": v for k, v in merl.variants.items()},
                                variant_of=lambda c: f"merl3/{c.encoder_type or 'resnet'}"))
    with pytest.raises(ValueError, match="already registered"):
        register_family(replace(st_mem))
    assert FAMILIES["st_mem"] is st_mem and "merl2" not in FAMILIES and "merl3" not in FAMILIES


def test_a_block_pattern_that_matches_nothing_fails_the_family_check() -> None:
    family = get_family("st_mem")
    variant = family.variants["st_mem"]
    wrong = replace(family, variants={"st_mem": replace(variant, layout=replace(variant.layout, block_pattern=r"blocks\.\d+"))})
    with pytest.raises(ValueError, match=r"No block matching 'blocks\\\\.\\\\d\+'"):
        check_family(wrong)
    bad_ffn = replace(family, variants={"st_mem": replace(variant, layout=replace(variant.layout, ffn_output="mlp"))})
    with pytest.raises(ValueError, match="has no 'mlp'"):
        check_family(bad_ffn)
    with pytest.raises(ValueError, match="not a valid regex"):
        BlockLayout("cnn", "(", channels=("out_channels",)).validate("x")


# ------------------------------------------------------------------------------------------------- tiny models
@pytest.mark.parametrize("name", TINY)
def test_tiny_backbone_honours_the_backbone_contract(name: str) -> None:
    model = tiny_backbone(name)
    assert isinstance(model, ECGBackbone)
    batch = tiny_batch(model)
    with torch.no_grad():
        plain = model(batch["input_values"])
        ones = model(**batch)
    # An all-ones attention mask is no mask, bit for bit.
    assert torch.equal(plain.last_hidden_state, ones.last_hidden_state)
    if getattr(plain, "pooler_output", None) is None:  # the classifier averages the frames frame_mask keeps
        n_frames = plain.last_hidden_state.shape[1]
        frames = model.frame_mask(batch["attention_mask"], n_frames)
        assert frames.shape == (2, n_frames) and frames.all()
    else:
        assert plain.pooler_output.shape == (2, model.config.hidden_size)
    layout = backbone_layout(model)
    assert layout.num_blocks >= 1 and family_key(model) in get_family(model.config.model_type).variants


@pytest.mark.parametrize("name", TINY)
def test_auto_classes_build_every_tiny_config(name: str) -> None:
    model_type, kwargs = TINY_CONFIGS[name]
    config = AutoConfig.for_model(model_type, **kwargs)
    assert isinstance(config, get_family(model_type).config_class)
    assert isinstance(AutoModel.from_config(config), get_family(model_type).model_class)


@pytest.mark.parametrize("name", TINY)
def test_saved_backbone_reloads_identically_through_every_loader(name: str, tmp_path: Path) -> None:
    model = tiny_backbone(name)
    model.save_pretrained(tmp_path)
    batch = tiny_batch(model)
    with torch.no_grad():
        expected = model(**batch).last_hidden_state
        family = get_family(model.config.model_type)
        for loaded in (family.model_class.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path), load_backbone(tmp_path)):
            assert type(loaded) is family.model_class
            torch.testing.assert_close(loaded.eval()(**batch).last_hidden_state, expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", TINY)
def test_saved_classifier_reloads_with_identical_logits(name: str, tmp_path: Path) -> None:
    clf = tiny_classifier(name).eval()
    clf.save_pretrained(tmp_path / "clf")
    reloaded = ECGClassifier.from_pretrained(tmp_path / "clf").eval()
    assert type(reloaded.backbone) is type(clf.backbone)
    batch = tiny_batch(clf)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, clf(**batch).logits, atol=0, rtol=0)


@pytest.mark.filterwarnings("ignore:.*gradient_checkpointing_enable.*:FutureWarning")
@pytest.mark.parametrize("name", TINY)
def test_gradient_checkpointing_gives_the_same_gradients(name: str) -> None:
    grads = []
    for checkpointing in (False, True):
        clf = tiny_classifier(name, classifier_dropout=0.0)
        model = adapt(clf, "lora", r=2, dropout=0.0)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            assert clf.backbone.is_gradient_checkpointing
        model.train()
        torch.manual_seed(0)  # same dropout masks in both runs
        model(**tiny_batch(clf), labels=torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for param in grads[0]:
        torch.testing.assert_close(grads[1][param], grads[0][param], msg=param)


@pytest.mark.parametrize("name", TINY)
def test_default_lora_on_a_real_record_trains_only_adapters_and_head_and_merges(name: str, samples: Path) -> None:
    from peft import PeftModel

    from ecg_adapt.data import read_wfdb
    from ecg_adapt.processing import ECGProcessor

    clf = tiny_classifier(name)
    family = get_family(clf.backbone.config.model_type)
    processor = ECGProcessor(clf.backbone.config.signal_contract, family.default_processor_steps())
    batch = processor([read_wfdb(samples / "cinc2021" / n) for n in ("HR06001", "E07500")])
    n = batch["input_values"].shape[0]
    assert tuple(batch["input_values"].shape[1:]) == tuple(processor.contract.input_shape)
    targets = default_target_modules(clf, "lora")
    expected = {m for m, _ in clf.backbone.named_modules() if any(m == t or m.endswith("." + t) for t in targets)}
    model = adapt(clf, "lora", r=4)
    assert isinstance(model, PeftModel)
    wrapped = {m.split("backbone.", 1)[1] for m, mod in model.named_modules() if hasattr(mod, "lora_A") and "backbone." in m}
    assert wrapped == expected and len(wrapped) == LORA_CASES[name].wrapped
    before = {p: t.detach().clone() for p, t in model.named_parameters()}
    trainable = {p for p, t in model.named_parameters() if t.requires_grad}
    assert trainable and all("lora_" in p or "classifier" in p for p in trainable)
    model.train()
    opt = torch.optim.AdamW([t for t in model.parameters() if t.requires_grad], lr=1e-2)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]).repeat(n, 1)[:n]
    out = model(input_values=batch["input_values"], attention_mask=batch["attention_mask"], labels=labels)
    assert torch.isfinite(out.logits).all() and out.logits.shape == (n, 3)
    out.loss.backward()
    opt.step()
    changed = {p for p, t in model.named_parameters() if not torch.equal(t, before[p])}
    assert changed <= trainable
    assert {p for p in changed if ".lora_B." in p} == {p for p in trainable if ".lora_B." in p}  # every adapter trained
    assert any("classifier.modules_to_save" in p for p in changed)
    model.eval()
    with torch.no_grad():
        adapted = model(input_values=batch["input_values"]).logits
        merged = model.merge_and_unload()(input_values=batch["input_values"]).logits
    assert torch.isfinite(adapted).all()
    torch.testing.assert_close(merged, adapted, atol=LORA_CASES[name].atol, rtol=LORA_CASES[name].rtol)


# ------------------------------------------------------------------------------------------- released variants
@pytest.mark.parametrize("released", RELEASED_NAMES, ids=lambda r: r.family)
def test_released_variants_are_listed_and_their_parameter_counts_match_the_configs(released) -> None:
    family = get_family(released.family)
    rows = [v for v in released_variants() if v["family"] == released.family]
    assert tuple(v["name"] for v in rows) == released.names
    for v in rows:
        for key in ("name", "family", "source", "weights", "licence", "redistribution", "parameters", "contract"):
            assert v.get(key) not in (None, ""), (v["name"], key)
        with torch.device("meta"):
            model = family.model_class(family.config_class(**v["config"]))
            if hasattr(model, "prepare_for_finetuning"):  # the backbone as ECGClassifier holds it: no SpecAugment
                model.prepare_for_finetuning()              # embedding, no original head
        # ``parameters_backbone`` where ``parameters`` counts the original head as well (ECGFounder)
        assert sum(p.numel() for p in model.parameters()) == v.get("parameters_backbone", v["parameters"]), v["name"]


# ---------------------------------------------------------------------------------------------- golden parity
def _outputs(model: torch.nn.Module, case: GoldenCase, golden: Path) -> object:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(np.load(golden / case.model_input)))


def _assert_matches_golden(out: object, case: GoldenCase, golden: Path) -> None:
    if case.hidden:
        hidden = out.last_hidden_state
        hidden = hidden.transpose(1, 2) if case.hidden_channels_first else hidden
        np.testing.assert_allclose(hidden.numpy(), np.load(golden / case.hidden), **case.tolerance(golden, "hidden"))
    if case.features:
        # The original feature vector: the backbone's pooler_output, or HuBERT-ECG's mean over frames.
        pooled = out.pooler_output if getattr(out, "pooler_output", None) is not None else out.last_hidden_state.mean(1)
        np.testing.assert_allclose(pooled.numpy(), np.load(golden / case.features), **case.tolerance(golden, "features"))
    if case.logits:
        np.testing.assert_allclose(out.logits.numpy(), np.load(golden / case.logits), **case.tolerance(golden, "logits"))


@pytest.mark.parametrize("case", GOLDEN_CASES, ids=lambda c: c.id)
def test_converted_original_matches_the_original_outputs_through_every_loader(case: GoldenCase, golden: Path, tmp_path: Path) -> None:
    family = get_family(case.family)
    dst = tmp_path / "converted"
    family.convert(golden / case.checkpoint, dst, **case.convert_kwargs)
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    assert json.loads((dst / "config.json").read_text())["model_type"] == case.family
    for model in (family.model_class.from_pretrained(dst), AutoModel.from_pretrained(dst), load_backbone(dst)):
        assert type(model) is family.model_class
        _assert_matches_golden(_outputs(model, case, golden), case, golden)


@pytest.mark.parametrize("case", GOLDEN_CASES, ids=lambda c: c.id)
def test_cli_converts_every_golden_checkpoint(case: GoldenCase, golden: Path, tmp_path: Path) -> None:
    from ecg_adapt.cli import main

    flags = [f"--{k.replace('_', '-')}={v}" for k, v in case.convert_kwargs.items()]  # the CLI spells the kwargs as flags
    assert main(["convert", "--family", case.family, *flags, str(golden / case.checkpoint), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "model.safetensors").exists() and (tmp_path / "out" / "preprocessor_config.json").exists()


@pytest.mark.parametrize("case", [c for c in GOLDEN_CASES if c.features], ids=lambda c: c.id)
def test_classifier_pools_the_original_feature_vector(case: GoldenCase, golden: Path, tmp_path: Path) -> None:
    family = get_family(case.family)
    family.convert(golden / case.checkpoint, tmp_path / "converted", **case.convert_kwargs)
    clf = ECGClassifier.from_backbone(load_backbone(tmp_path / "converted"), ["a", "b"]).eval()
    with torch.no_grad():
        pooled = clf(torch.from_numpy(np.load(golden / case.model_input))).pooled.numpy()
    np.testing.assert_allclose(pooled, np.load(golden / case.features), **case.tolerance(golden, "features"))


# ------------------------------------------------------------------------------------ plain transformers loading
def test_folders_with_auto_map_load_in_plain_transformers_with_trust_remote_code(tmp_path: Path) -> None:
    from ecg_adapt.models.remote_code import add_auto_map

    for name in TINY:
        model = tiny_backbone(name)
        model.save_pretrained(tmp_path / name)
        add_auto_map(tmp_path / name)
        add_auto_map(tmp_path / name)  # idempotent
        batch = tiny_batch(model)
        np.save(tmp_path / name / "x.npy", batch["input_values"].numpy())
        with torch.no_grad():
            np.save(tmp_path / name / "expected.npy", model(batch["input_values"]).last_hidden_state.numpy())
        # In a process where ecg_adapt registered the family, the registered class wins without trust_remote_code.
        assert type(AutoModel.from_pretrained(tmp_path / name)) is type(model)
    script = (
        "import sys, numpy as np, torch; from pathlib import Path; from transformers import AutoModel\n"
        "torch.set_num_threads(1)\n"
        "folders = [Path(f) for f in sys.argv[1:]]\n"
        "for folder in folders:  # before anything imported ecg_adapt: transformers alone refuses to run the code\n"
        "    try:\n"
        "        AutoModel.from_pretrained(folder)\n"
        "        raise SystemExit(f'{folder.name}: loaded without trust_remote_code')\n"
        "    except ValueError as e:\n"
        "        assert 'trust_remote_code' in str(e), e\n"
        "for folder in folders:\n"
        "    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()\n"
        "    assert type(model).__module__.startswith('ecg_adapt.models.'), type(model).__module__\n"
        "    with torch.no_grad():\n"
        "        got = model(torch.from_numpy(np.load(folder / 'x.npy'))).last_hidden_state.numpy()\n"
        "    np.testing.assert_allclose(got, np.load(folder / 'expected.npy'), rtol=1e-5, atol=1e-6)\n"
        "print('ok')\n"
    )
    env = {**__import__("os").environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script, *(str(tmp_path / n) for n in TINY)], capture_output=True,
                         text=True, timeout=300, env=env, stdin=subprocess.DEVNULL)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]  # after transformers' prompts


def test_first_use_of_a_family_does_not_move_the_seeded_random_state() -> None:
    # Registration (on first use of a family's classes) builds tiny models to check the family's facts; a user
    # who seeds and then builds a model must get the same weights whether or not the family was used before.
    code = (
        "import torch\n"
        "from ecg_adapt.models.registry import get_family\n"
        "family = get_family('merl')\n"
        "torch.manual_seed(0)\n"
        "family.model_class  # first use: registers the family with transformers and checks its tiny models\n"
        "after_registration = torch.rand(4)\n"
        "torch.manual_seed(0)\n"
        "assert torch.equal(after_registration, torch.rand(4)), 'registration consumed the global RNG'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
