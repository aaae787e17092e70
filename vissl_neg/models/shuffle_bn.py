"""Shuffle-BN (He et al. 2020): keys are embedded with batch-norm statistics that do not
come from the same samples as their queries, so BN cannot leak the positive.

- Under DDP: the key batch is permuted across ranks before the key encoder and restored
  after (``batch_shuffle_ddp`` / ``batch_unshuffle_ddp``).
- On one process: every BatchNorm2d computes statistics over G interleaved groups of the
  batch (``SplitBatchNorm2d``, as in MoCo's single-GPU demo) and the key batch is
  permuted before the key encoder (``batch_shuffle_single``), so each key is normalised
  with a group different from its query's.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from vissl_neg.engine.distributed import concat_all_gather, rank, world_size


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are per group: sample n is in group n mod G.

    Same parameters and buffers as ``nn.BatchNorm2d`` (its state dict is interchangeable);
    in eval mode it is plain BN. The running statistics are the mean of the G groups'
    updates. Needs B divisible by G.
    """

    def __init__(self, num_features: int, num_splits: int, **kwargs):
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.num_splits == 1:
            return super().forward(x)
        n, c, h, w = x.shape
        g = self.num_splits
        mean_split = self.running_mean.repeat(g)
        var_split = self.running_var.repeat(g)
        out = F.batch_norm(
            x.reshape(n // g, c * g, h, w),
            mean_split,
            var_split,
            self.weight.repeat(g),
            self.bias.repeat(g),
            True,
            self.momentum if self.momentum is not None else 0.1,
            self.eps,
        ).view(n, c, h, w)
        with torch.no_grad():
            self.running_mean.copy_(mean_split.view(g, c).mean(0))
            self.running_var.copy_(var_split.view(g, c).mean(0))
            self.num_batches_tracked.add_(1)
        return out


def convert_split_bn(module: nn.Module, num_splits: int) -> int:
    """Replace every plain ``nn.BatchNorm2d`` in place by a ``SplitBatchNorm2d`` with the same
    state; returns how many were replaced."""
    count = 0
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            split = SplitBatchNorm2d(
                child.num_features, num_splits, eps=child.eps, momentum=child.momentum, affine=child.affine
            )
            split.load_state_dict(child.state_dict())
            setattr(module, name, split)
            count += 1
        else:
            count += convert_split_bn(child, num_splits)
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
