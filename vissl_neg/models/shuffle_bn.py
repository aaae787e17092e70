"""Shuffle-BN (He et al. 2020): keys are embedded with batch-norm statistics that do not
come from the same samples as their queries, so BN cannot leak the positive.

- Under DDP: the key batch is permuted across ranks before the key encoder and restored
  after (``batch_shuffle_ddp`` / ``batch_unshuffle_ddp``).
- On one process: every BatchNorm2d (and timm's BatchNormAct2d) computes statistics over
  G interleaved groups of the batch (``SplitBatchNorm2d``, as in MoCo's single-GPU demo) and
  the key batch is permuted before the key encoder (``batch_shuffle_single``), so each key
  is normalised with a group different from its query's.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import BatchNormAct2d

from vissl_neg.runtime.distributed import concat_all_gather, rank, world_size


def split_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, num_splits: int) -> torch.Tensor:
    """Training-mode BN of (N, C, H, W) with statistics per group of N/G samples; ``bn``'s
    running statistics become the mean of the G groups' updates. Needs N divisible by G.

    Groups are interleaved (sample n in group n mod G) for contiguous tensors, where that
    is a free reshape into one (N/G, G·C, H, W) BN; for channels_last tensors they are
    contiguous blocks of N/G samples, each normalised in its own layout-preserving BN call
    (the interleaved reshape would copy every activation twice). Either way each group is
    a fixed 1/G of the batch and the key batch is permuted at random, so a key shares its
    group with its query with probability 1/G, as under G-process shuffle-BN."""
    n, c, h, w = x.shape
    g = num_splits
    momentum = bn.momentum if bn.momentum is not None else 0.1
    assert bn.running_mean is not None and bn.running_var is not None and bn.num_batches_tracked is not None, (
        "split BN keeps running statistics"
    )
    if x.dim() == 4 and _grouped_blocks(x):
        means = [bn.running_mean.clone() for _ in range(g)]
        variances = [bn.running_var.clone() for _ in range(g)]
        out = torch.cat(
            [
                F.batch_norm(block, m, v, bn.weight, bn.bias, True, momentum, bn.eps)
                for block, m, v in zip(x.chunk(g), means, variances)
            ]
        )
        mean_split, var_split = torch.stack(means), torch.stack(variances)
    else:
        mean_split = bn.running_mean.repeat(g)
        var_split = bn.running_var.repeat(g)
        out = F.batch_norm(
            x.reshape(n // g, c * g, h, w),
            mean_split,
            var_split,
            bn.weight.repeat(g),
            bn.bias.repeat(g),
            True,
            momentum,
            bn.eps,
        ).view(n, c, h, w)
    with torch.no_grad():
        bn.running_mean.copy_(mean_split.view(g, c).mean(0))
        bn.running_var.copy_(var_split.view(g, c).mean(0))
        bn.num_batches_tracked.add_(1)
    return out


# how split BN computes its statistics (model.split_bn_impl): see split_bn_forward
SplitBNImpl = Literal["auto", "fused", "per_group"]


def _grouped_blocks(x: torch.Tensor) -> bool:
    """Whether :func:`split_batch_norm` groups ``x`` in contiguous blocks (channels_last) rather than interleaved."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def fused_split_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, num_splits: int) -> torch.Tensor:
    """:func:`split_batch_norm` as one reduction: ``x`` viewed (no copy) as G groups of
    (N/G, C, H·W), the same groups in either layout, one ``var_mean`` for all G statistics
    instead of G BatchNorm calls; statistics in fp32, output in ``x``'s dtype and layout; the
    same running-statistics update (the mean of the G groups' updates)."""
    n, c, h, w = x.shape
    g = num_splits
    momentum = bn.momentum if bn.momentum is not None else 0.1
    assert bn.running_mean is not None and bn.running_var is not None and bn.num_batches_tracked is not None, (
        "split BN keeps running statistics"
    )
    xf = x.float()
    if _grouped_blocks(x):  # group k = samples k·N/G .. (k+1)·N/G - 1
        xg, dims, shape = xf.view(g, n // g, c, h, w), (1, 3, 4), (g, 1, c, 1, 1)
    else:  # group k = samples n with n mod G = k
        xg, dims, shape = xf.view(n // g, g, c, h, w), (0, 3, 4), (1, g, c, 1, 1)
    var, mean = torch.var_mean(xg, dim=dims, correction=0, keepdim=True)
    y = (xg - mean) * torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        y = y * bn.weight.float().view(1, 1, c, 1, 1) + bn.bias.float().view(1, 1, c, 1, 1)
    with torch.no_grad():
        count = (n // g) * h * w
        bn.running_mean.mul_(1 - momentum).add_(mean.view(shape).reshape(g, c).mean(0), alpha=momentum)
        unbiased = var.view(shape).reshape(g, c) * (count / max(count - 1, 1))
        bn.running_var.mul_(1 - momentum).add_(unbiased.mean(0), alpha=momentum)
        bn.num_batches_tracked.add_(1)
    return y.reshape(n, c, h, w).to(x.dtype)


def split_bn_forward(bn: nn.BatchNorm2d, x: torch.Tensor, num_splits: int, impl: SplitBNImpl) -> torch.Tensor:
    """Training-mode split BN by ``impl``: fused (:func:`fused_split_batch_norm`), per_group
    (:func:`split_batch_norm`) or auto: fused for CUDA channels_last inputs, where the per-group
    path makes G BatchNorm calls, per_group elsewhere (one reshaped BN call; the CPU's results
    stay those of earlier versions)."""
    fused = impl == "fused" or (impl == "auto" and x.is_cuda and _grouped_blocks(x))
    return (fused_split_batch_norm if fused else split_batch_norm)(bn, x, num_splits)


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are per group of N/G samples (:func:`split_batch_norm`).

    Same parameters and buffers as ``nn.BatchNorm2d`` (its state dict is interchangeable);
    in eval mode it is plain BN. The running statistics are the mean of the G groups'
    updates. Needs B divisible by G.
    """

    def __init__(self, num_features: int, num_splits: int, impl: SplitBNImpl = "auto", **kwargs):
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits
        self.impl = impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.num_splits == 1:
            return super().forward(x)
        return split_bn_forward(self, x, self.num_splits, self.impl)


class SplitBatchNormAct2d(BatchNormAct2d):
    """timm's BatchNormAct2d (BN, then dropout and activation; EfficientNet, RegNet, ...) with
    the statistics of :class:`SplitBatchNorm2d`; the same state dict as BatchNormAct2d."""

    def __init__(self, num_features: int, num_splits: int, impl: SplitBNImpl = "auto", **kwargs):
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits
        self.impl = impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.num_splits == 1:
            return super().forward(x)
        return self.act(self.drop(split_bn_forward(self, x, self.num_splits, self.impl)))


def count_batch_norms(module: nn.Module) -> int:
    """BatchNorm layers of any kind in ``module`` (0 for LayerNorm models such as ViTs and ConvNeXts)."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def convert_split_bn(module: nn.Module, num_splits: int, impl: SplitBNImpl = "auto") -> int:
    """Replace every plain ``nn.BatchNorm2d`` and timm ``BatchNormAct2d`` in place by its split
    version (``impl``: :func:`split_bn_forward`) with the same state; returns how many were replaced."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and type(child) in (nn.BatchNorm2d, BatchNormAct2d):
            kwargs = dict(eps=child.eps, momentum=child.momentum, affine=child.affine)
            split: nn.Module
            if isinstance(child, BatchNormAct2d):
                split = SplitBatchNormAct2d(child.num_features, num_splits, impl, apply_act=False, **kwargs)
                split.drop, split.act = child.drop, child.act
            else:
                split = SplitBatchNorm2d(child.num_features, num_splits, impl, **kwargs)
            split.load_state_dict(child.state_dict())
            setattr(module, name, split)
            count += 1
        else:
            count += convert_split_bn(child, num_splits, impl)
    return count


def batch_shuffle_single(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Random permutation of the batch on its device -> (x[perm], inverse perm)."""
    perm = torch.randperm(x.shape[0], device=x.device)
    return x[perm], torch.argsort(perm)


@torch.no_grad()
def batch_shuffle_ddp(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather the keys' inputs of all ranks, permute them with rank 0's permutation and
    give each rank its share -> (this rank's shuffled (B, ...), global inverse permutation)."""
    b = x.shape[0]
    x_all = concat_all_gather(x)
    perm = torch.randperm(x_all.shape[0], device=x.device)
    dist.broadcast(perm, src=0)
    unshuffle = torch.argsort(perm)
    return x_all[perm.view(world_size(), b)[rank()]], unshuffle


@torch.no_grad()
def batch_unshuffle_ddp(x: torch.Tensor, unshuffle: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`batch_shuffle_ddp`: each rank gets back the keys of its own samples."""
    b = x.shape[0]
    x_all = concat_all_gather(x)
    return x_all[unshuffle.view(world_size(), b)[rank()]]
