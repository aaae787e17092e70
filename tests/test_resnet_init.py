"""The ResNet of the MoCo v2 recipes starts as the reference's: facebookresearch/moco @ 7397dfe
builds torchvision's ``resnet50(num_classes=128)`` (main_moco.py:248-255) and puts a Linear-ReLU
in front of its fc (moco/builder.py:31-41). torchvision's rule (``zero_init_residual=False``):
convolutions kaiming-normal over fan-out, every BN scale 1 and shift 0 (the last BN of each
residual block included), Linear layers PyTorch's default. timm's ResNet zero-initialises the
last BN scale of every block unless ``zero_init_last=False`` (``model.zero_init_last``)."""

from __future__ import annotations

import math
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.nn as nn
import torchvision
import yaml

from vissl_neg.config import load_config
from vissl_neg.models.encoder import build_encoder

import helpers  # noqa: F401  (pins torch to one CPU thread)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SEEDS = (0, 1, 2)


def reference_model(seed: int) -> nn.Module:
    """MoCo v2's encoder_q as the reference builds it (moco/builder.py:31-41, ``--mlp``)."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet50(num_classes=128)  # zero_init_residual=False, torchvision's default
    model.fc = nn.Sequential(nn.Linear(model.fc.weight.shape[1], model.fc.weight.shape[1]), nn.ReLU(), model.fc)
    return model


def our_model(seed: int, overrides: tuple[str, ...] = (), dry_run: bool = False) -> nn.Module:
    """imagenet_mocov2.yaml's encoder (backbone + head); without ``dry_run`` the feature width is
    given rather than measured by a 224x224 forward pass (0.4 s of a CPU core per build)."""
    cfg = load_config(CONFIGS / "imagenet_mocov2.yaml", list(overrides))
    torch.manual_seed(seed)
    if dry_run:
        return build_encoder(cfg.model, 3, cfg.augment.size)
    with mock.patch("vissl_neg.models.encoder.check_input", return_value=2048):
        return build_encoder(cfg.model, 3, cfg.augment.size)


def reference_names(name: str) -> str:
    """Our encoder's tensor names -> the reference's: timm's ResNet names its layers as torchvision."""
    if name.startswith("backbone."):
        return name.removeprefix("backbone.")
    return name.replace("head.net.", "fc.")


def tensors(model: nn.Module, most: int = 1 << 16) -> dict[str, torch.Tensor]:
    """Each parameter and buffer's first ``most`` values (an init draws them independently)."""
    state = model.state_dict()
    return {k: v.detach().flatten()[:most].double() for k, v in state.items() if not k.endswith("num_batches_tracked")}


def last_bns(model: nn.Module) -> list[torch.Tensor]:
    """The BN scale torchvision's ``zero_init_residual`` sets: bn3 of a Bottleneck, bn2 of a BasicBlock."""
    return [
        m.bn3.weight if hasattr(m, "bn3") else m.bn2.weight
        for m in model.modules()
        if type(m).__name__ in ("Bottleneck", "BasicBlock")
    ]


def init_differences(ours: list[nn.Module], theirs: list[nn.Module]) -> list[str]:
    """Tensors whose initial distribution differs. Per tensor (at most 65536 values of each),
    pooled over the seeds: mean, std and mean |x| (which tells a uniform from a normal of the same std). Allowed: 6 standard
    errors of the difference, the errors estimated from the reference's values; a tensor the
    reference sets to a constant must be that constant."""
    a = [tensors(m) for m in ours]
    b = [tensors(m) for m in theirs]
    names = {reference_names(k) for k in a[0]}
    assert names == set(b[0]), sorted(names ^ set(b[0]))
    bad = []
    for ours_name in a[0]:
        x = torch.cat([t[ours_name] for t in a])
        y = torch.cat([t[reference_names(ours_name)] for t in b])
        if y.std() == 0:
            if not torch.equal(x, torch.full_like(x, float(y[0]))):
                bad.append(f"{ours_name}: not the constant {float(y[0])}")
            continue
        n, s = y.numel(), float(y.std())
        se = {  # standard errors of one estimate from n values
            "mean": s / math.sqrt(n),
            "std": math.sqrt(max(float(((y - y.mean()) ** 4).mean()) - s**4, 0.0) / (4 * s**2 * n)),
            "mean |x|": float(y.abs().std()) / math.sqrt(n),
        }
        for stat, f in (("mean", torch.mean), ("std", torch.std), ("mean |x|", lambda t: t.abs().mean())):
            diff = abs(float(f(x)) - float(f(y)))
            if diff > 6 * math.sqrt(2) * se[stat]:
                bad.append(f"{ours_name}: {stat} {float(f(x)):.4g} vs {float(f(y)):.4g}")
    return bad


@pytest.fixture(scope="module")
def reference():
    return [reference_model(s) for s in SEEDS]


def test_every_residual_blocks_last_bn_starts_as_the_references():
    """16 Bottlenecks, each bn3 scale 1 as torchvision's resnet50() leaves it; timm's default would be 0."""
    scales = last_bns(our_model(0, dry_run=True).backbone)
    assert len(scales) == 16
    assert all(torch.equal(w, torch.ones_like(w)) for w in scales)
    assert all(torch.equal(w, torch.ones_like(w)) for w in last_bns(reference_model(0)))
    # the control: timm's own init, which the recipe replaces
    assert all(torch.equal(w, torch.zeros_like(w)) for w in last_bns(our_model(0, ("model.zero_init_last=true",))))


def test_every_config_on_the_mocov2_recipe_keeps_the_references_init():
    """Every config built on imagenet_mocov2.yaml inherits ``zero_init_last: false`` (MoCHi, feature
    transformation, false negatives, ambiguous, ImageNet-100; the ViT of MoCo v3 has no such layer)."""

    def chain(path: Path) -> list[str]:
        base = (yaml.safe_load(path.read_text()) or {}).get("base")
        return [path.name] + (chain(path.parent / base) if base else [])

    family = [p for p in sorted(CONFIGS.glob("*.yaml")) if "imagenet_mocov2.yaml" in chain(p)]
    assert len(family) >= 8
    for path in family:
        assert load_config(path).model.zero_init_last is False, path.name


def test_every_other_tensor_starts_with_the_references_distribution(reference):
    assert init_differences([our_model(s) for s in SEEDS], reference) == []


def test_the_comparison_tells_a_wrong_init(reference):
    """The tolerance cannot pass a wrong init: timm's default (zero last BN scales) and PyTorch's
    default convolution init (kaiming-uniform over fan-in, a = sqrt(5)) are both caught, layer by layer."""
    timm_default = [our_model(s, ("model.zero_init_last=true",)) for s in SEEDS]
    bad = init_differences(timm_default, reference)
    assert sorted(bad) == sorted(f"backbone.{k}: not the constant 1.0" for k in _bn3_names(timm_default[0]))
    for model in timm_default:
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.reset_parameters()
    convs = {f"{n}.weight" for n, m in timm_default[0].named_modules() if isinstance(m, nn.Conv2d)}
    flagged = {line.split(":")[0] for line in init_differences(timm_default, reference)}
    assert len(convs) == 53 and convs <= flagged


def _bn3_names(model: nn.Module) -> list[str]:
    return [f"{n}.bn3.weight".removeprefix("backbone.") for n, m in model.backbone.named_modules() if hasattr(m, "bn3")]


@pytest.mark.parametrize("name", ["resnet18", "resnetv2_18"])
def test_the_schema_default_keeps_each_architectures_own_init(name):
    """``model.zero_init_last: null`` (the default of the configs that claim no recipe) builds the
    model as timm does: zero last BN scales for its ResNets, ones for its ResNetV2s."""
    import timm

    from vissl_neg.models.encoder import create_timm_model

    assert load_config().model.zero_init_last is None
    torch.manual_seed(0)
    ours = create_timm_model(name, False, {}, load_config().model.zero_init_last).state_dict()
    torch.manual_seed(0)
    own = timm.create_model(name).state_dict()
    assert ours.keys() == own.keys() and all(torch.equal(ours[k], own[k]) for k in own)
    torch.manual_seed(0)
    flipped = create_timm_model(name, False, {}, name == "resnetv2_18").state_dict()
    assert not all(torch.equal(flipped[k], own[k]) for k in own)  # the key does reach this architecture
