"""Every strategy inside a real training step built from a config: the step's loss equals the
public functions composed by hand, synthetic negatives and the key encoder get no gradient,
only real keys are enqueued, diagnostics are logged, and a memory-bank run resumes exactly."""

from __future__ import annotations

import pytest
import torch

from vissl_neg.config import load_config
from vissl_neg.engine.trainer import Trainer
from vissl_neg.losses import debiased_info_nce, false_negative_info_nce, info_nce
from vissl_neg.negatives.ambiguous import sample_without_replacement, simans_logits
from vissl_neg.negatives.false_negatives import suspect_false_negatives
from vissl_neg.negatives.filtering import hardest_negatives
from vissl_neg.negatives.geodesic import geodesic_mix
from vissl_neg.negatives.mochi import mix_hard_negatives, sample_mix_coefficients

import helpers  # noqa: F401  (pins torch to one CPU thread)
from helpers import tiny_overrides, write_fmnist_fixture

STRATEGY_CONFIGS = {
    "mochi": ["negatives.strategies=[{name: mochi, n_hard: 16, s: 8, s_prime: 4}]"],
    "geodesic": ["negatives.strategies=[{name: geodesic, n_hard: 16, s: 8, s_prime: 4, alpha: 0.5}]"],
    "filter_dual_view": ["negatives.strategies=[{name: filter, keep: 40}]", "loss.dual_view=true"],
    "feature_transform": ["negatives.strategies=[{name: feature_transform, pos_alpha: 2.0, neg_alpha: 1.6}]"],
    "debiased": ["loss.name=debiased", "loss.tau_plus=0.1", "loss.beta=1.0"],
    "ambiguous": ["negatives.strategies=[{name: ambiguous, keep: 40, a: 0.5, b: 0.5}]"],
    "false_negatives_eliminate": ["negatives.strategies=[{name: false_negatives, top: 5, mode: eliminate}]"],
    "false_negatives_attract_dual_view": [
        "negatives.strategies=[{name: false_negatives, top: 5, mode: attract}]",
        "loss.dual_view=true",
    ],
    "bank_false_negatives_mochi": [
        "negatives.source=memory_bank",
        "negatives.size=60",
        "negatives.strategies=[{name: false_negatives, top: 4, mode: attract}, "
        "{name: mochi, n_hard: 8, s: 6, s_prime: 2}]",
    ],
    "bank_filter_mochi": [
        "negatives.source=memory_bank",
        "negatives.size=60",
        "negatives.strategies=[{name: filter, fraction: 0.5}, {name: mochi, n_hard: 8, s: 6, s_prime: 2}]",
    ],
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    write_fmnist_fixture(root, n_train=192, n_test=64)
    return root


def make_trainer(data_root, out_dir, extra):
    overrides = tiny_overrides(data_root, out_dir) + [
        "optim.batch_size=32",
        "train.epochs=1",
        "eval.knn_every=-1",
        "negatives.diag_top=5",
    ]
    return Trainer(load_config(None, overrides + extra), resume=False)


def first_batch(trainer):
    trainer.sampler.set_epoch(0, 0)
    images, labels, indices = trainer.train_set.__getitems__(next(iter(trainer.sampler)))
    return images, labels, indices


@pytest.mark.parametrize("name", sorted(STRATEGY_CONFIGS))
def test_strategy_runs_inside_a_training_step(data_root, tmp_path, name):
    trainer = make_trainer(data_root, tmp_path / name, STRATEGY_CONFIGS[name])
    images, labels, indices = first_batch(trainer)
    source = trainer.model.bank if trainer.model.bank is not None else trainer.model.queue
    before = {k: v.clone() for k, v in source.state_dict().items()}
    out = trainer.train_step(images, labels, indices, diagnose=True)
    assert torch.isfinite(out["loss"])
    assert all(p.grad is None for p in trainer.model.encoder_k.parameters())
    assert all(p.grad is not None for p in trainer.model.encoder_q.parameters() if p.requires_grad)
    diag = out["diagnostics"]
    assert 0.0 <= float(diag["negatives/false_negative_rate@5"]) <= 1.0
    assert 0.0 <= float(diag["negatives/same_class_rate"]) <= 1.0
    mixes = name in ("mochi", "geodesic", "bank_filter_mochi", "bank_false_negatives_mochi")
    assert (out["syn"] is not None) == mixes
    assert ("negatives/synthetic_harder_than_hardest_real" in diag) == mixes
    b = images.shape[0]
    if trainer.model.queue is not None:  # only real keys enter the queue: B, or 2B with the dual view
        written = 2 * b if trainer.cfg.loss.dual_view else b
        assert int(trainer.model.queue.ptr) == written % trainer.cfg.negatives.size
    else:  # the bank rows of this batch change, and only those
        changed = (trainer.model.bank.bank != before["bank"]).any(dim=1)
        assert set(changed.nonzero().flatten().tolist()) == set(indices.tolist())
        assert torch.equal(trainer.model.bank.labels[indices], labels.long())


def _contrast_inputs(trainer, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, d = 32, trainer.cfg.model.dim
    q = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=1).requires_grad_(True)
    k = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=1)
    return q, k, torch.arange(b)


def test_mochi_step_loss_equals_the_public_functions(data_root, tmp_path):
    trainer = make_trainer(data_root, tmp_path, STRATEGY_CONFIGS["mochi"])
    q, k, idx = _contrast_inputs(trainer)
    torch.manual_seed(5)
    loss, negs, *_ = trainer.contrast(q, k, idx)
    assert not negs.synthetic_vectors().requires_grad
    assert not any(t.requires_grad for m in negs.synthetic for t in (m.a_coef, m.b_coef, m.anchor))
    queue = trainer.model.queue.keys
    torch.manual_seed(5)
    synthetic = mix_hard_negatives(q, queue, 16, 8, 4)
    want = info_nce(q, k, torch.cat([queue.expand(32, -1, -1), synthetic], dim=1), 0.2)
    torch.testing.assert_close(loss, want)
    loss.backward()
    assert q.grad is not None and not queue.requires_grad


def test_geodesic_step_loss_equals_the_public_functions(data_root, tmp_path):
    trainer = make_trainer(data_root, tmp_path, STRATEGY_CONFIGS["geodesic"])
    q, k, idx = _contrast_inputs(trainer, seed=1)
    torch.manual_seed(6)
    loss, *_ = trainer.contrast(q, k, idx)
    queue = trainer.model.queue.keys
    hard = hardest_negatives(q, queue, 16)
    torch.manual_seed(6)
    c = sample_mix_coefficients(32, 16, 8, 4, beta_alpha=0.5)
    synthetic = geodesic_mix(q, hard, c)  # positions within each query's hard set index ``hard`` directly
    want = info_nce(q, k, torch.cat([queue.expand(32, -1, -1), synthetic], dim=1), 0.2)
    torch.testing.assert_close(loss, want)


@pytest.mark.parametrize("draw", ["step", "sample", "dim"])
def test_feature_transform_step_loss_equals_the_public_functions(data_root, tmp_path, monkeypatch, draw):
    """The step's loss is InfoNCE of extrapolate_positives(q, k, λ⁺) against
    interpolate_negatives(queue, perm, λ⁻), with the λ and permutation the strategy drew (captured
    as it hands them over, and equal to fresh draws under the same seed); the key leaf, the queue
    and the mixed negatives get no gradient."""
    from vissl_neg.negatives import feature_transform as ft
    from vissl_neg.negatives.beta import sample_beta

    extra = [f"negatives.strategies=[{{name: feature_transform, pos_alpha: 2.0, neg_alpha: 1.6, draw: {draw}}}]"]
    trainer = make_trainer(data_root, tmp_path, extra)
    q, k, idx = _contrast_inputs(trainer, seed=7)
    k = k.clone().requires_grad_(True)
    seen = {}
    extrapolate, interpolate = ft.extrapolate_positives, ft.interpolate_negatives

    def spy_pos(q_, k_, lam):
        seen["pos"] = lam
        return extrapolate(q_, k_, lam)

    def spy_neg(negatives, perm, lam):
        seen["neg"], seen["perm"] = lam, perm
        return interpolate(negatives, perm, lam)

    monkeypatch.setattr(ft, "extrapolate_positives", spy_pos)
    monkeypatch.setattr(ft, "interpolate_negatives", spy_neg)
    queue = trainer.model.queue.keys
    before = queue.clone()
    torch.manual_seed(10)
    loss, negs, *_ = trainer.contrast(q, k, idx)
    torch.manual_seed(10)  # the strategy's draws, in its order: λ⁺, λ⁻, then the permutation
    pos_shape, neg_shape = ft.lambda_shapes(draw, 32, 100, trainer.cfg.model.dim)
    assert torch.equal(seen["pos"], 1.0 + sample_beta(2.0, pos_shape))
    assert torch.equal(seen["neg"], sample_beta(1.6, neg_shape))
    assert torch.equal(seen["perm"], torch.randperm(100))
    q_hat, k_hat = ft.extrapolate_positives(q, k, seen["pos"])
    n_hat = ft.interpolate_negatives(queue, seen["perm"], seen["neg"])
    torch.testing.assert_close(loss, info_nce(q_hat, k_hat, n_hat, 0.2))
    assert not torch.allclose(loss, info_nce(q, k, queue, 0.2))
    assert not negs.source.requires_grad and torch.equal(queue, before)
    loss.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0 and k.grad is None and not queue.requires_grad


def test_filter_then_mochi_composes_in_config_order(data_root, tmp_path):
    extra = ["negatives.strategies=[{name: filter, keep: 40}, {name: mochi, n_hard: 10, s: 5, s_prime: 3}]"]
    trainer = make_trainer(data_root, tmp_path, extra)
    q, k, idx = _contrast_inputs(trainer, seed=2)
    torch.manual_seed(7)
    loss, *_ = trainer.contrast(q, k, idx)
    kept = hardest_negatives(q, trainer.model.queue.keys, 40)
    torch.manual_seed(7)
    synthetic = mix_hard_negatives(q, kept, 10, 5, 3)
    torch.testing.assert_close(loss, info_nce(q, k, torch.cat([kept, synthetic], dim=1), 0.2))


def test_debiased_step_loss_equals_the_public_function(data_root, tmp_path):
    trainer = make_trainer(data_root, tmp_path, STRATEGY_CONFIGS["debiased"])
    q, k, idx = _contrast_inputs(trainer, seed=3)
    loss, *_ = trainer.contrast(q, k, idx)
    torch.testing.assert_close(loss, debiased_info_nce(q, k, trainer.model.queue.keys, 0.2, 0.1, 1.0))


def test_ambiguous_step_loss_equals_the_public_functions(data_root, tmp_path):
    trainer = make_trainer(data_root, tmp_path, STRATEGY_CONFIGS["ambiguous"])
    q, k, idx = _contrast_inputs(trainer, seed=4)
    torch.manual_seed(8)
    loss, negs, *_ = trainer.contrast(q, k, idx)
    queue = trainer.model.queue.keys
    sims, pos = (q @ queue.t()).detach(), (q * k).sum(1).detach()
    torch.manual_seed(8)
    drawn = sample_without_replacement(simans_logits(sims, pos, 0.5, 0.5, 0.2), 40)
    assert torch.equal(negs.index.sort(1).values, drawn.sort(1).values)
    torch.testing.assert_close(loss, info_nce(q, k, queue[drawn], 0.2))
    loss.backward()
    assert q.grad is not None


@pytest.mark.parametrize("mode", ["eliminate", "attract"])
def test_false_negative_step_loss_equals_the_public_functions(data_root, tmp_path, mode):
    extra = [f"negatives.strategies=[{{name: false_negatives, top: 5, threshold: -1, mode: {mode}}}]"]
    trainer = make_trainer(data_root, tmp_path, extra)
    q, k, idx = _contrast_inputs(trainer, seed=5)
    loss, negs, *_ = trainer.contrast(q, k, idx)
    queue = trainer.model.queue.keys
    suspected = suspect_false_negatives(torch.maximum(q.detach() @ queue.t(), k @ queue.t()), 5, -1.0)
    assert torch.equal(negs.suspected, suspected) and int(suspected.sum()) == 32 * 5
    want = false_negative_info_nce(q, k, queue, 0.2, suspected, mode)
    torch.testing.assert_close(loss, want)
    assert not torch.allclose(loss, info_nce(q, k, queue, 0.2))


def test_false_negatives_then_filter_then_mochi(data_root, tmp_path):
    extra = [
        "negatives.strategies=[{name: false_negatives, top: 6, threshold: -1, mode: eliminate}, {name: filter, keep: 40}, "
        "{name: mochi, n_hard: 10, s: 5, s_prime: 3}]"
    ]
    trainer = make_trainer(data_root, tmp_path, extra)
    q, k, idx = _contrast_inputs(trainer, seed=6)
    torch.manual_seed(9)
    loss, *_ = trainer.contrast(q, k, idx)
    queue = trainer.model.queue.keys
    suspected = suspect_false_negatives(torch.maximum(q.detach() @ queue.t(), k @ queue.t()), 6, -1.0)
    kept_rows = (q @ queue.t()).detach().topk(40, dim=1).indices
    torch.manual_seed(9)
    synthetic = mix_hard_negatives(q, queue[kept_rows], 10, 5, 3)
    marks = torch.cat([suspected.gather(1, kept_rows), torch.zeros(32, 8, dtype=torch.bool)], dim=1)
    want = false_negative_info_nce(q, k, torch.cat([queue[kept_rows], synthetic], dim=1), 0.2, marks, "eliminate")
    torch.testing.assert_close(loss, want)


def test_strategy_waits_for_its_start_epoch(data_root, tmp_path):
    trainer = make_trainer(
        data_root, tmp_path, ["negatives.strategies=[{name: mochi, n_hard: 8, s: 4, start_epoch: 1}]"]
    )
    q, k, idx = _contrast_inputs(trainer)
    assert trainer.contrast(q, k, idx)[1].synthetic_vectors() is None
    trainer.step = trainer.steps_per_epoch
    assert trainer.contrast(q, k, idx)[1].synthetic_vectors().shape == (32, 4 + 512, 128)


def test_diagnostics_reach_tensorboard(data_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    trainer = make_trainer(data_root, run, STRATEGY_CONFIGS["mochi"] + ["train.log_every=2", "train.hist_every=2"])
    trainer.fit()
    events = EventAccumulator(str(run / "tb"), size_guidance={"histograms": 0, "scalars": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {
        "negatives/false_negative_rate@5",
        "negatives/same_class_rate",
        "negatives/synthetic_harder_than_hardest_real",
    } <= scalars
    assert {"scores/positive", "scores/negative", "scores/synthetic"} <= set(events.Tags()["histograms"])
    fnr = [e.value for e in events.Scalars("negatives/false_negative_rate@5")]
    assert all(0.0 <= v <= 1.0 for v in fnr)


def test_debiased_clamp_is_logged_and_noted_once(data_root, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    extra = ["loss.name=debiased", "loss.tau_plus=0.5", "train.log_every=1"]
    trainer = make_trainer(data_root, run, extra)
    trainer.fit()
    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0}).Reload()
    clamped = [e.value for e in events.Scalars("loss/debiased_clamped_fraction")]
    assert len(clamped) == trainer.steps_per_epoch and all(0.0 <= v <= 1.0 for v in clamped)
    notes = [line for line in capsys.readouterr().out.splitlines() if "clamps Ng" in line]
    # first step: 100 random queued keys at T 0.2, τ⁺ 0.5: the correction drives Ng onto its clamp
    assert clamped[0] > 0.5 and len(notes) == 1 and notes[0].startswith("note: ")
    assert f"{100 * clamped[0]:.0f}% of the queries" in notes[0]
    below = float(notes[0].rsplit("loss.tau_plus below ", 1)[1].split()[0])
    assert 0.0 < below < 0.5


def test_no_clamp_note_when_most_queries_are_unclamped(data_root, tmp_path, capsys):
    trainer = make_trainer(
        data_root,
        tmp_path / "run",
        ["loss.name=debiased", "loss.tau_plus=0.001", "train.log_every=1", "train.max_steps=2"],
    )
    trainer.fit()
    assert trainer.last_scalars["loss/debiased_clamped_fraction"] < 0.5
    assert "clamps Ng" not in capsys.readouterr().out


def test_count_larger_than_the_negatives_is_refused_at_build_time(data_root, tmp_path):
    from vissl_neg.errors import ConfigError

    for extra, needle in (
        ("{name: mochi, n_hard: 128, s: 4}", "negatives.strategies[0].n_hard=128 is larger than the 100 negatives"),
        (
            "{name: filter, keep: 30}, {name: geodesic, n_hard: 31, s: 4}",
            "negatives.strategies[1].n_hard=31 is larger than the 30 negatives each query has after "
            "negatives.strategies[0] (filter)",
        ),
        ("{name: ambiguous, keep: 101}", "negatives.strategies[0].keep=101"),
        ("{name: false_negatives, top: 101}", "negatives.strategies[0].top=101"),
    ):
        with pytest.raises(ConfigError) as info:
            make_trainer(data_root, tmp_path, [f"negatives.strategies=[{extra}]"])
        assert needle in str(info.value) and "\n" not in str(info.value)


def test_memory_bank_run_resumes_bit_identically(data_root, tmp_path):
    extra = STRATEGY_CONFIGS["bank_filter_mochi"] + ["train.epochs=2", "train.ckpt_every=2"]
    whole = make_trainer(data_root, tmp_path / "whole", extra)
    whole.fit()
    part = make_trainer(data_root, tmp_path / "part", extra + ["train.max_steps=5"])
    part.fit()
    overrides = tiny_overrides(data_root, tmp_path / "part") + [
        "optim.batch_size=32",
        "train.epochs=1",
        "eval.knn_every=-1",
        "negatives.diag_top=5",
    ]
    resumed = Trainer(load_config(None, overrides + extra), resume=True)
    assert resumed.step == 5
    resumed.fit()
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert "bank.bank" in a
    for key in a:
        assert torch.equal(a[key], b[key]), key
