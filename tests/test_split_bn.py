"""The fused split-BN (one var_mean over G groups of (N/G, C, H·W) in place of G BatchNorm
calls) against G separate ``nn.BatchNorm2d`` calls on the groups: outputs, gradients of the
input, weight and bias, and running statistics; in both layouts and their group orders."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vissl_neg.config import load_config
from vissl_neg.errors import ConfigError
from vissl_neg.models.shuffle_bn import (
    SplitBatchNorm2d,
    convert_split_bn,
    fused_split_batch_norm,
    split_batch_norm,
    split_bn_forward,
)

from helpers import tiny_overrides, write_fmnist_fixture


def groups(n: int, g: int, blocks: bool) -> list[torch.Tensor]:
    """Sample indices of each group: blocks of N/G (channels_last) or interleaved (n mod G)."""
    if blocks:
        return [torch.arange(k * (n // g), (k + 1) * (n // g)) for k in range(g)]
    return [torch.arange(k, n, g) for k in range(g)]


def per_group_bn(bn: nn.BatchNorm2d, x: torch.Tensor, g: int, blocks: bool):
    """G training-mode BatchNorm calls, one per group, sharing ``bn``'s weight and bias, each
    updating its own copy of the running statistics -> (output, running mean, running var: the
    means of the G copies)."""
    momentum = 0.1 if bn.momentum is None else bn.momentum
    out, means, variances = torch.empty_like(x), [], []
    for idx in groups(x.shape[0], g, blocks):
        rm, rv = bn.running_mean.clone(), bn.running_var.clone()
        out = out.index_copy(0, idx, F.batch_norm(x[idx], rm, rv, bn.weight, bn.bias, True, momentum, bn.eps))
        means.append(rm)
        variances.append(rv)
    return out, torch.stack(means).mean(0), torch.stack(variances).mean(0)


def make_bn(c: int, seed: int, momentum: float = 0.2) -> nn.BatchNorm2d:
    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(c, momentum=momentum)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    return bn


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("n,g,c,h,w", [(16, 8, 3, 5, 4), (12, 3, 4, 1, 1), (8, 2, 2, 7, 3)])
def test_fused_equals_per_group_batch_norm(n, g, c, h, w, channels_last):
    bn = make_bn(c, n * g + c)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    blocks = not torch.empty(n, c, h, w).contiguous(memory_format=fmt).is_contiguous()  # (N, C, 1, 1) is both
    # groups with clearly different statistics, in whichever order the layout groups them
    shift = torch.zeros(n)
    for k, idx in enumerate(groups(n, g, blocks)):
        shift[idx] = 2.0 * k
    x = (torch.randn(n, c, h, w) + shift.view(n, 1, 1, 1)).contiguous(memory_format=fmt)
    upstream = torch.randn(n, c, h, w)

    ref_bn = copy.deepcopy(bn)
    x_ref = x.detach().clone().requires_grad_(True)
    want, want_rm, want_rv = per_group_bn(ref_bn, x_ref, g, blocks)
    (want * upstream).sum().backward()

    fused = copy.deepcopy(bn)
    x_f = x.detach().clone().requires_grad_(True)
    got = fused_split_batch_norm(fused, x_f, g)
    (got * upstream).sum().backward()

    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x_f.grad, x_ref.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fused.weight.grad, ref_bn.weight.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fused.bias.grad, ref_bn.bias.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fused.running_mean, want_rm, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(fused.running_var, want_rv, atol=1e-6, rtol=1e-6)
    assert int(fused.num_batches_tracked) == 1
    assert got.is_contiguous(memory_format=fmt)
    # the per-group path (what the CPU runs) agrees too, so switching changes floats only
    classic = copy.deepcopy(bn)
    torch.testing.assert_close(split_batch_norm(classic, x.detach(), g), want.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(classic.running_var, want_rv, atol=1e-6, rtol=1e-6)


def test_fused_keeps_a_low_precision_input_dtype_and_normalises_in_fp32():
    bn = make_bn(3, 7)
    x = (torch.randn(8, 3, 4, 4) * 3 + 1).to(torch.bfloat16)
    ref_bn = copy.deepcopy(bn)
    want, want_rm, _ = per_group_bn(ref_bn, x.float(), 4, False)
    got = fused_split_batch_norm(bn, x, 4)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, atol=2e-2, rtol=1e-2)  # bf16 output rounding only
    torch.testing.assert_close(bn.running_mean, want_rm, atol=1e-6, rtol=1e-6)


def test_no_affine_and_cumulative_momentum():
    torch.manual_seed(3)
    bn = nn.BatchNorm2d(2, affine=False, momentum=None)
    x = torch.randn(8, 2, 3, 3)
    fused = copy.deepcopy(bn)
    want, want_rm, want_rv = per_group_bn(copy.deepcopy(bn), x, 4, False)
    got = fused_split_batch_norm(fused, x, 4)  # momentum None is taken as 0.1, as split_batch_norm does
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused.running_mean, want_rm, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(fused.running_var, want_rv, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("channels_last", [False, True])
def test_auto_keeps_the_cpu_on_the_per_group_path_bit_for_bit(channels_last):
    """model.split_bn_impl=auto on the CPU is the earlier kernel exactly (CPU runs keep their
    numbers); fused is selectable and takes the fused path."""
    bn = make_bn(4, 11)
    x = torch.randn(8, 4, 3, 3)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    a, b, f = copy.deepcopy(bn), copy.deepcopy(bn), copy.deepcopy(bn)
    assert torch.equal(split_bn_forward(a, x, 4, "auto"), split_batch_norm(b, x, 4))
    assert torch.equal(a.running_var, b.running_var)
    assert torch.equal(split_bn_forward(f, x, 4, "fused"), fused_split_batch_norm(copy.deepcopy(bn), x, 4))
    per_group = copy.deepcopy(bn)
    assert torch.equal(split_bn_forward(per_group, x, 4, "per_group"), split_batch_norm(copy.deepcopy(bn), x, 4))


def test_convert_passes_the_impl_and_the_config_selects_it(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    assert convert_split_bn(model, 2, "fused") == 2
    assert [m.impl for m in model.modules() if isinstance(m, SplitBatchNorm2d)] == ["fused", "fused"]

    from vissl_neg.engine.trainer import Trainer

    root = tmp_path / "data"
    write_fmnist_fixture(root, n_train=64, n_test=16)
    cfg = load_config(
        None,
        tiny_overrides(root, tmp_path / "run")
        + ["model.split_bn_impl=fused", "optim.batch_size=16", "train.max_steps=2", "eval.knn_every=-1"],
    )
    trainer = Trainer(cfg)
    impls = {m.impl for m in trainer.model.modules() if isinstance(m, SplitBatchNorm2d)}
    assert impls == {"fused"} and trainer.model.split_bn_layers > 0
    before = trainer.model.encoder_k.backbone.bn1.running_mean.clone()
    assert trainer.fit()["step"] == 2
    assert not torch.equal(trainer.model.encoder_k.backbone.bn1.running_mean, before)
    with pytest.raises(ConfigError, match="model.split_bn_impl.*one of auto, fused, per_group.*'fused'"):
        load_config(None, ["model.split_bn_impl=fusd"])
