"""Geodesic multi-modal mixup (m²-mix) in the cross-view trainer: the loss against the
reference code's formula written out with loops, the mixes' geometry, gradients through
the (undetached) mixes, λ sampling, the weight schedule, the trainer's step with mixup on
and off, recall unaffected, no host reads in the step, and config errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vissl_neg.config import flatten, load_config, to_dict
from vissl_neg.engine.geo_trainer import GeoTrainer
from vissl_neg.engine.run_dir import config_differences
from vissl_neg.errors import ConfigError
from vissl_neg.geo.fixture import write_cvusa_fixture
from vissl_neg.geo.m2mix import (
    m2_mix_negatives,
    m2mix_info_nce,
    m2mix_symmetric_info_nce,
    m2mix_weight,
    sample_m2mix_lambda,
)
from vissl_neg.losses import symmetric_info_nce

from helpers import GEO_VIEWS_OFF  # importing helpers also pins torch to one CPU thread
from host_sync import host_reads


def unit(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


def sph_inter(a, b, s):
    """The reference code's slerp, one pair at a time."""
    theta = torch.acos(a @ b)
    return torch.sin(s * theta) / torch.sin(theta) * a + torch.sin((1 - s) * theta) / torch.sin(theta) * b


def smoothed_ce(row: list, target: int, eps: float):
    """-(1-ε) log p_target - ε/n Σ_j log p_j for one row of logits (a list of 0-dim tensors)."""
    logits = torch.stack(row)
    logp = logits - torch.logsumexp(logits, 0)
    return -(1 - eps) * logp[target] - eps / len(row) * logp.sum()


def hand_mix_loss(g, a, lam, scale, eps=0.0, detach=False):
    """The reference's mmmix term with explicit loops: mixes m_j = sph_inter(g_j, a_j, λ)
    replace the off-diagonal entries of both directions, CE per direction, directions summed."""
    n = g.shape[0]
    mixes = [sph_inter(g[j], a[j], lam) for j in range(n)]
    if detach:
        mixes = [m.detach() for m in mixes]
    total = 0.0
    for anchor in (g, a):
        rows = []
        for i in range(n):
            row = [scale * (g[i] @ a[i]) if j == i else scale * (anchor[i] @ mixes[j]) for j in range(n)]
            rows.append(smoothed_ce(row, i, eps))
        total = total + torch.stack(rows).mean()
    return total


def hand_symmetric(g, a, scale, eps=0.0):
    n = g.shape[0]
    i2t = torch.stack([smoothed_ce([scale * (g[i] @ a[j]) for j in range(n)], i, eps) for i in range(n)]).mean()
    t2i = torch.stack([smoothed_ce([scale * (a[i] @ g[j]) for j in range(n)], i, eps) for i in range(n)]).mean()
    return 0.5 * (i2t + t2i)


# ---------------------------------------------------------------- the pure functions
@pytest.mark.parametrize("lam", [0.2, 0.5, 0.85])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_mix_loss_is_the_reference_formula(lam, eps):
    g, a = unit(5, 7, seed=1), unit(5, 7, seed=2)
    scale = 1 / 0.07
    got = m2mix_info_nce(g, a, lam, math.log(scale), label_smoothing=eps)
    assert got.item() == pytest.approx(hand_mix_loss(g, a, lam, scale, eps).item(), rel=1e-10)
    s = torch.tensor(math.log(1 / 0.05), dtype=torch.float64)  # the main loss's learnable scale
    total = m2mix_symmetric_info_nce(
        g, a, s, lam, weight=0.3, mix_logit_scale=math.log(scale), label_smoothing=eps, mix_label_smoothing=eps
    )
    expected = hand_symmetric(g, a, 1 / 0.05, eps) + 0.3 * hand_mix_loss(g, a, lam, scale, eps)
    assert total.item() == pytest.approx(expected.item(), rel=1e-10)
    shared = m2mix_symmetric_info_nce(
        g, a, s, lam, weight=0.3, label_smoothing=eps, mix_label_smoothing=eps
    )  # no τ₂: the main scale
    expected = hand_symmetric(g, a, 1 / 0.05, eps) + 0.3 * hand_mix_loss(g, a, lam, 1 / 0.05, eps)
    assert shared.item() == pytest.approx(expected.item(), rel=1e-10)
    # by default the mix term's targets are hard whatever the main loss's smoothing (reference loss.py:47-49, 62-68)
    hard = m2mix_symmetric_info_nce(g, a, s, lam, weight=0.3, mix_logit_scale=math.log(scale), label_smoothing=eps)
    expected = hand_symmetric(g, a, 1 / 0.05, eps) + 0.3 * hand_mix_loss(g, a, lam, scale, 0.0)
    assert hard.item() == pytest.approx(expected.item(), rel=1e-10)


def test_mixes_lie_on_the_sphere_and_split_the_angle():
    g, a = unit(6, 5, seed=3), unit(6, 5, seed=4)
    theta = torch.acos((g * a).sum(1))
    for lam in (0.1, 0.37, 0.9):
        m = m2_mix_negatives(g, a, torch.tensor(lam, dtype=torch.float64))
        assert torch.allclose(m.norm(dim=1), torch.ones(6, dtype=torch.float64), atol=1e-12)
        assert torch.allclose(torch.acos((m * a).sum(1).clamp(-1, 1)), lam * theta, atol=1e-6)  # λθ from a
        assert torch.allclose(torch.acos((m * g).sum(1).clamp(-1, 1)), (1 - lam) * theta, atol=1e-6)
        ref = torch.stack([sph_inter(g[j], a[j], lam) for j in range(6)])
        assert torch.allclose(m, ref, atol=1e-12)
    per_pair = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.7, 0.2], dtype=torch.float64)
    m = m2_mix_negatives(g, a, per_pair)
    assert torch.allclose(m, torch.stack([sph_inter(g[j], a[j], float(per_pair[j])) for j in range(6)]), atol=1e-12)


def test_endpoints_reduce_to_the_real_embeddings():
    g, a = unit(4, 6, seed=5), unit(4, 6, seed=6)
    assert torch.allclose(m2_mix_negatives(g, a, 0.0), a, atol=1e-12)
    assert torch.allclose(m2_mix_negatives(g, a, 1.0), g, atol=1e-12)
    assert m2_mix_negatives(g.float(), a.float(), 0.5).dtype == torch.float32
    # λ = 0: the ground->satellite direction is plain InfoNCE; λ = 1: the satellite->ground one
    s = math.log(1 / 0.07)
    target = torch.arange(4)

    def same_modality(x, y):  # x_i·x_j off the diagonal, x_i·y_i on it
        return F.cross_entropy(torch.diagonal_scatter(x @ x.t(), (x * y).sum(1)) / 0.07, target)

    both = m2mix_info_nce(g, a, 0.0, s) + m2mix_info_nce(g, a, 1.0, s)
    expected = 2 * symmetric_info_nce(g, a, s) + same_modality(g, a) + same_modality(a, g)
    assert both.item() == pytest.approx(expected.item(), rel=1e-10)


def tangential(grad, x):
    """The part of a gradient at unit rows x that survives the encoder's L2 normalisation
    (slerp and the reference's formula agree on the sphere, not off it)."""
    return grad - (grad * x).sum(1, keepdim=True) * x


def test_gradients_flow_through_the_mixes_as_in_the_reference():
    """The reference does not detach the mixes: the mix term's gradient reaches both
    embeddings through the anchors and through the mixes."""
    g0, a0 = unit(4, 5, seed=7), unit(4, 5, seed=8)
    grads = {}
    for name in ("ours", "hand", "hand_detached"):
        g, a = g0.clone().requires_grad_(), a0.clone().requires_grad_()
        if name == "ours":
            loss = m2mix_info_nce(F.normalize(g, dim=1), F.normalize(a, dim=1), 0.3, math.log(1 / 0.07), 0.1)
        else:
            loss = hand_mix_loss(g, a, 0.3, 1 / 0.07, 0.1, detach=name == "hand_detached")
        loss.backward()
        grads[name] = tangential(g.grad, g0), tangential(a.grad, a0)
    for ours, hand, detached in zip(grads["ours"], grads["hand"], grads["hand_detached"]):
        assert torch.allclose(ours, hand, atol=1e-10)
        assert (ours - detached).abs().max() > 1e-2  # the path through the mixes carries gradient


def test_a_fixed_mix_temperature_leaves_the_logit_scale_to_the_main_term():
    g, a = unit(4, 5, seed=9), unit(4, 5, seed=10)
    s1 = torch.tensor(math.log(1 / 0.07), dtype=torch.float64, requires_grad=True)
    m2mix_symmetric_info_nce(g, a, s1, 0.4, weight=0.5, mix_logit_scale=math.log(1 / 0.07)).backward()
    s2 = torch.tensor(math.log(1 / 0.07), dtype=torch.float64, requires_grad=True)
    symmetric_info_nce(g, a, s2).backward()
    assert s1.grad.item() == pytest.approx(s2.grad.item(), rel=1e-12)
    s3 = torch.tensor(math.log(1 / 0.07), dtype=torch.float64, requires_grad=True)
    m2mix_symmetric_info_nce(g, a, s3, 0.4, weight=0.5).backward()  # shared scale: the mix term moves it too
    assert abs(s3.grad.item() - s2.grad.item()) > 1e-6


def test_lambda_sampler():
    lam = sample_m2mix_lambda(0.5)
    assert lam.shape == () and 0.0 <= lam.item() <= 1.0
    torch.manual_seed(3)
    first = torch.stack([sample_m2mix_lambda(0.5) for _ in range(2000)])
    torch.manual_seed(3)
    assert torch.equal(first, torch.stack([sample_m2mix_lambda(0.5) for _ in range(2000)]))
    # Beta(0.5, 0.5): mean 1/2, variance 1/(4(2α + 1)) = 1/8
    assert first.mean().item() == pytest.approx(0.5, abs=0.03)
    assert first.var().item() == pytest.approx(0.125, abs=0.01)
    gen = torch.Generator().manual_seed(5)
    u = sample_m2mix_lambda(1.0, generator=gen)
    assert u.item() == torch.rand((), generator=torch.Generator().manual_seed(5)).item()


def test_weight_schedule():
    assert [m2mix_weight(0.06, e) for e in range(3)] == [0.06, 0.03, 0.02]  # the reference's w / (epoch + 1)
    assert [m2mix_weight(0.06, e, start_epoch=2) for e in range(5)] == [0.0, 0.0, 0.06, 0.03, 0.02]
    assert [m2mix_weight(0.06, e, 1, epoch_decay=False) for e in range(3)] == [0.0, 0.06, 0.06]


# ---------------------------------------------------------------- the trainer
N_TRAIN, N_VAL = 24, 8


@pytest.fixture(scope="module")
def cvusa(tmp_path_factory):
    root = tmp_path_factory.mktemp("cvusa")
    write_cvusa_fixture(root, n_train=N_TRAIN, n_val=N_VAL, sat_size=32, pano_size=(16, 64))
    return root


def overrides(root, out_dir, *extra) -> list[str]:
    return [
        f"data.root={root}",
        "data.sat_size=32",
        "data.pano_size=[16,64]",
        "optim.batch_size=8",
        "sampling.neighbour_select=4",
        "sampling.neighbour_range=8",
        "sampling.gps_epochs=1",
        "sampling.mine_every=1",
        "train.epochs=3",
        "train.progress=false",
        "eval.every=1",
        "eval.batch_size=16",
        f"train.out_dir={out_dir}",
        *extra,
    ]


def make(root, out_dir, *extra) -> GeoTrainer:
    return GeoTrainer(load_config("configs/cvusa_fixture.yaml", overrides(root, out_dir, *extra)), resume=False)


def expected_step_loss(t: GeoTrainer, pano, sat, seed: int, epoch: int = 0):
    """The step's loss composed from the public functions, RNG draws in the step's order
    (augmentation, then λ); the model's state is restored afterwards."""
    m = t.cfg.mixup
    state = {k: v.clone() for k, v in t.model.state_dict().items()}
    torch.manual_seed(seed)
    with torch.no_grad():
        p, s = t.augment(pano, sat)
        fp, fs = t.model(p), t.model(s)
        weight = m2mix_weight(m.weight, epoch, m.start_epoch, m.epoch_decay) if m.enabled else 0.0
        if weight == 0:
            loss, lam = symmetric_info_nce(fp, fs, t.model.logit_scale, t.cfg.loss.label_smoothing), None
        else:
            lam = sample_m2mix_lambda(m.alpha)
            loss = m2mix_symmetric_info_nce(
                fp,
                fs,
                t.model.logit_scale,
                lam,
                weight,
                math.log(1 / m.temperature),
                t.cfg.loss.label_smoothing,
                m.label_smoothing,
            )
    t.model.load_state_dict(state)  # the reference pass moved BN statistics
    return loss, lam, weight


def test_step_loss_is_the_m2mix_loss(cvusa, tmp_path):
    t = make(
        cvusa,
        tmp_path / "on",
        "mixup.enabled=true",
        "mixup.weight=0.5",
        "mixup.temperature=0.05",
        "loss.label_smoothing=0.1",
        *GEO_VIEWS_OFF,
    )  # τ₂ unlike the initial learnable 0.07
    pano, sat, _, _ = t.train_set.__getitems__(list(range(8)))
    t.model.train()
    expected, lam, weight = expected_step_loss(t, pano, sat, seed=11)
    torch.manual_seed(11)
    out = t.train_step(pano, sat)
    assert weight == 0.5 and out["m2mix_weight"] == 0.5 and out["m2mix_lambda"].item() == lam.item()
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["hardest_mix"].shape == (8,) and (out["hardest_mix"].abs() <= 1 + 1e-5).all()
    # later epochs: the weight decays as 1 / (epoch + 1)
    t.step = 2 * t.steps_per_epoch
    expected, lam, weight = expected_step_loss(t, pano, sat, seed=12, epoch=2)
    torch.manual_seed(12)
    out = t.train_step(pano, sat)
    assert weight == pytest.approx(0.5 / 3) and out["m2mix_weight"] == weight
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_mixup_off_or_not_yet_started_leaves_the_step_unchanged(cvusa, tmp_path):
    plain = make(cvusa, tmp_path / "off", "mixup.weight=0.5", *GEO_VIEWS_OFF)  # settings without enabled do nothing
    late = make(
        cvusa, tmp_path / "late", "mixup.enabled=true", "mixup.weight=0.5", "mixup.start_epoch=1", *GEO_VIEWS_OFF
    )
    on = make(cvusa, tmp_path / "on", "mixup.enabled=true", "mixup.weight=0.5", *GEO_VIEWS_OFF)
    pano, sat, _, _ = plain.train_set.__getitems__(list(range(8)))
    losses = {}
    for name, t in (("off", plain), ("late", late), ("on", on)):
        t.model.train()
        if name == "off":
            expected, _, _ = expected_step_loss(t, pano, sat, seed=4)
        torch.manual_seed(4)
        out = t.train_step(pano, sat)
        losses[name] = out["loss"].item()
        assert ("m2mix_lambda" in out) == (name == "on")
    assert losses["off"] == pytest.approx(expected.item(), rel=1e-5)
    assert losses["late"] == losses["off"]  # identical weights and inputs, same step
    assert abs(losses["on"] - losses["off"]) > 1e-4
    a, b = plain.model.state_dict(), late.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # one identical step: the same weights after it


def test_recall_evaluation_does_not_depend_on_mixup(cvusa, tmp_path):
    on = make(cvusa, tmp_path / "on", "mixup.enabled=true", "mixup.weight=1.0")
    off = make(cvusa, tmp_path / "off")
    pano, sat, _, _ = on.train_set.__getitems__(list(range(8)))
    on.model.train()
    on.train_step(pano, sat)
    off.model.load_state_dict(on.model.state_dict())
    assert on.evaluate_metrics() == off.evaluate_metrics()


def test_mixup_adds_no_host_reads_to_the_step(cvusa, tmp_path):
    """The CPU optimiser reads its step count back (CUDA uses the fused one): the step with
    mixup on reads back exactly what the step without it does."""
    reads = {}
    for name, extra in (("off", []), ("on", ["mixup.enabled=true", "mixup.alpha=0.5"])):
        t = make(cvusa, tmp_path / name, *extra)
        pano, sat, _, _ = t.train_set.__getitems__(list(range(8)))
        t.model.train()
        t.train_step(pano, sat)  # the first step allocates optimizer state
        with host_reads() as r:
            out = t.train_step(pano, sat)
        reads[name] = dict(r.ops)
    assert "m2mix_lambda" in out and reads["on"] == reads["off"], reads


def test_fit_with_mixup(cvusa, tmp_path):
    result = make(cvusa, tmp_path / "fit", "mixup.enabled=true", "train.epochs=2", "eval.every=0").fit()
    assert result["step"] == 2 * (N_TRAIN // 8) and set(result["recall"]) >= {"R@1", "R@5", "R@10"}


# ---------------------------------------------------------------- config
def test_shipped_config_is_the_fixture_recipe_with_the_reference_defaults():
    fixture = flatten(to_dict(load_config("configs/cvusa_fixture.yaml")))
    mixed = flatten(to_dict(load_config("configs/cvusa_fixture_m2mix.yaml")))
    differ = {k for k in fixture if fixture[k] != mixed[k]}
    assert differ == {"mixup.enabled", "train.out_dir"}
    m = load_config("configs/cvusa_fixture_m2mix.yaml").mixup
    assert (m.enabled, m.alpha, m.weight, m.temperature, m.epoch_decay, m.start_epoch) == (
        True,
        0.5,
        0.01,
        0.07,
        True,
        0,
    )
    assert load_config(None, ["task=geo"]).mixup.enabled is False


def test_mixup_settings_do_not_change_on_resume():
    saved = to_dict(load_config(None, ["task=geo"]))
    for change in (
        "mixup.enabled=true",
        "mixup.weight=0.1",
        "mixup.alpha=1.0",
        "mixup.temperature=0",
        "mixup.epoch_decay=false",
        "mixup.start_epoch=2",
        "mixup.label_smoothing=0.1",
    ):
        diffs = config_differences(saved, load_config(None, ["task=geo", change]))
        assert [d.split(":")[0] for d in diffs] == [change.split("=")[0]]


@pytest.mark.parametrize(
    "override, message",
    [
        ("mixup.alpha=0", "config key 'mixup.alpha' must be > 0, got 0.0"),
        ("mixup.weight=-0.1", "config key 'mixup.weight' must be > 0, got -0.1"),
        ("mixup.temperature=-1", "config key 'mixup.temperature' must be >= 0, got -1.0"),
        ("mixup.start_epoch=-1", "config key 'mixup.start_epoch' must be >= 0, got -1"),
        ("mixup.start_epoch=40", "config key 'mixup.start_epoch' (40) must be below train.epochs (40)"),
        ("mixup.enabled=maybe", "config key 'mixup.enabled' must be of type bool"),
        ("mixup.label_smoothing=1.0", "config key 'mixup.label_smoothing' must be in [0, 1), got 1.0"),
        ("mixup.wieght=0.1", "mixup.wieght"),
    ],
)
def test_config_errors(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["task=geo", "mixup.enabled=true", override])
    assert message in str(err.value) and "\n" not in str(err.value)
