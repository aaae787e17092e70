"""torch.distributed helpers: set-up from torchrun's environment, gathers and reductions.

NCCL on CUDA, gloo on CPU. With one process every helper is the identity.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(device_type: str) -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); returns whether it did."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_dist():
        return is_dist()
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    store, rank_, world = next(dist.rendezvous("env://"))
    # torchrun keeps one store across the restarts of a group (--max-restarts): without a key prefix
    # per attempt, a restarted rank can read the address of the killed one and fail to connect
    store = dist.PrefixStore(f"vissl_neg/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
    dist.init_process_group(backend=backend, store=store, rank=rank_, world_size=world)
    return True


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """(B, ...) on every rank -> (world·B, ...) in rank order; no gradient."""
    if not is_dist():
        return tensor
    out = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(out, tensor.contiguous())
    return torch.cat(out, dim=0)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    if not is_dist():
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor)
    return tensor / world_size()


def all_gather_object(obj) -> list:
    """Every rank's ``obj`` in rank order (a one-element list on one process)."""
    if not is_dist():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_dist():
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the gradient over the ranks and returns this rank's rows."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rows = tensor.shape[0]
        return concat_all_gather(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[rank() * ctx.rows : (rank() + 1) * ctx.rows]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """(B, ...) on every rank -> (world·B, ...) in rank order, differentiable: each rank's rows get
    the gradient summed over every rank's loss, so a loss every rank computes on the gathered batch
    (the same on all) gives DDP's averaged parameter gradient of that loss, with no ×world factor.
    Every rank must pass the same B. One process: ``tensor`` itself."""
    if not is_dist():
        return tensor
    return _GatherWithGrad.apply(tensor)
