"""Gradient caching (Gao, Zhang, Han, Callan 2021, "Scaling Deep Contrastive Learning Batch Size
under Memory Limited Setup"): the loss sees the whole batch while the encoder holds the
activations of one chunk at a time.

    cache = GradCache()
    a = cache.embed(encoder, x, chunk_size=8)   # (B, D) leaf: every chunk forwarded without a graph
    b = cache.embed(encoder, y, chunk_size=8)   # any number of calls, encoders and chunk sizes
    loss = my_loss(a, b)                        # any loss over the whole batch, any parameters of its own
    optimizer.zero_grad()
    cache.backward(loss)                        # or scaler.scale(loss)
    optimizer.step()

``backward`` back-propagates the loss to the embeddings (and to the loss's own parameters),
then, per chunk of every ``embed`` call, forwards the chunk again with a graph and
back-propagates the cached gradient of its rows. The parameters' gradients are those of one
full-batch step for encoders whose output row depends only on its own input row (LayerNorm
models such as ViTs and ConvNeXts; see docs/methods.md for what differs with BatchNorm).

What the second forward repeats of the first, so that both compute the same function:

- random draws (dropout, drop-path): the CPU generator and the CUDA generator of every device
  the chunk touches (its inputs, the module's parameters, the current device) are saved before
  each chunk's first forward and restored for its second, inside a fork, so that after the
  step the generators sit where the first forwards left them;
- autocast: the second forward runs under the autocast state (per device type) of the first;
- buffers (BatchNorm running statistics): each call's buffers are put back to their values
  before its first forward, so the replay sees what the first pass saw and its updates replace
  the first pass's: running statistics move once per chunk, not twice.

Under DDP, every chunk but the last of each DDP module runs under ``no_sync()``: one gradient
all-reduce per step. Every rank must run the same number of chunks; ``check_ranks`` compares
the counts (one tiny collective and host read per ``embed`` of a DDP module) and raises
:class:`GradCacheError` instead of hanging. Embeddings that meet other ranks' embeddings in
the loss are gathered with :func:`vissl_neg.runtime.distributed.all_gather_with_grad`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel


class GradCacheError(RuntimeError):
    """A cached step that cannot be replayed as asked (a misuse, not bad user input)."""


@dataclass
class RngState:
    """The CPU generator's state and the CUDA generator states of ``devices``."""

    cpu: torch.Tensor
    devices: list[int]
    cuda: list[torch.Tensor]

    @classmethod
    def capture(cls, devices: Sequence[int]) -> RngState:
        return cls(torch.get_rng_state(), list(devices), [torch.cuda.get_rng_state(d) for d in devices])

    @contextlib.contextmanager
    def replayed(self) -> Iterator[None]:
        """Inside: the generators as captured; after: as they were before entering."""
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu)
            for device, state in zip(self.devices, self.cuda):
                torch.cuda.set_rng_state(state, device)
            yield


def owner(fn: Callable) -> nn.Module | None:
    """The module whose parameters and buffers a call of ``fn`` uses: ``fn`` itself, or the module
    a bound method belongs to (``model.project``); None for other callables."""
    if isinstance(fn, nn.Module):
        return fn
    bound = getattr(fn, "__self__", None)
    return bound if isinstance(bound, nn.Module) else None


def cuda_devices(fn: Callable, tensors: Sequence[torch.Tensor]) -> list[int]:
    """The CUDA device indices a call of ``fn`` on ``tensors`` may draw random numbers on."""
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return []
    found = {t.device.index for t in tensors if t.is_cuda}
    module = owner(fn)
    if module is not None:
        found.update(p.device.index for p in module.parameters() if p.is_cuda)
    found.add(torch.cuda.current_device())
    return sorted(d for d in found if d is not None)


def autocast_state() -> list[tuple[str, bool, torch.dtype]]:
    """(device type, enabled, dtype) of autocast for the CPU and, where present, CUDA."""
    types = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [(t, torch.is_autocast_enabled(t), torch.get_autocast_dtype(t)) for t in types]


@contextlib.contextmanager
def autocast_as(state: list[tuple[str, bool, torch.dtype]]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for device_type, enabled, dtype in state:
            stack.enter_context(torch.autocast(device_type, dtype=dtype, enabled=enabled))
        yield


def ddp_of(fn: Callable) -> DistributedDataParallel | None:
    """The DistributedDataParallel wrapper ``fn`` is (or that a torch.compile wrapper holds), or None."""
    inner = getattr(fn, "_orig_mod", fn)
    return inner if isinstance(inner, DistributedDataParallel) else None


def split_rows(args: tuple, chunk_size: int) -> tuple[list[int], list[tuple]]:
    """Positional tensors split along dim 0 into chunks of ``chunk_size`` rows (the last may be
    shorter; 0 = one chunk); other arguments repeated -> (rows per chunk, argument tuples)."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if not tensors:
        raise GradCacheError("embed() needs at least one tensor argument to split into chunks")
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise GradCacheError(
            f"embed()'s tensor arguments differ in their first dimension: {[t.shape[0] for t in tensors]}"
        )
    if chunk_size < 0:
        raise GradCacheError(f"chunk_size must be >= 0 (0 = the whole batch), got {chunk_size}")
    size = chunk_size or n
    starts = list(range(0, n, size)) or [0]
    rows = [min(size, n - s) for s in starts]
    chunks = [tuple(a[s : s + r] if isinstance(a, torch.Tensor) else a for a in args) for s, r in zip(starts, rows)]
    return rows, chunks


def _as_tuple(out: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(out, torch.Tensor):
        return (out,)
    if isinstance(out, (tuple, list)) and out and all(isinstance(o, torch.Tensor) for o in out):
        return tuple(out)
    raise GradCacheError(f"a cached encoder must return a tensor or a tuple of tensors, got {type(out).__name__}")


@dataclass
class _Call:
    """One ``embed`` call: what its replay needs."""

    module: Callable
    chunks: list[tuple]
    rows: list[int]
    kwargs: dict
    rng: list[RngState]
    autocast: list[tuple[str, bool, torch.dtype]]
    leaves: tuple[torch.Tensor, ...]
    buffers: list[torch.Tensor]
    buffers_before: list[torch.Tensor]


class GradCache:
    """One cached step: :meth:`embed` (first pass) any number of times, a loss over the returned
    embeddings, then :meth:`backward` once (loss, then the replays). A new step starts after it."""

    def __init__(self, check_ranks: bool = True):
        self.check_ranks = check_ranks
        self._calls: list[_Call] = []

    def embed(self, module: Callable, *args: Any, chunk_size: int = 0, **kwargs: Any) -> Any:
        """``module(*args, **kwargs)`` run chunk by chunk without a graph: positional tensors are
        split along dim 0 into chunks of ``chunk_size`` rows (0 = one chunk), everything else goes
        to every chunk as it is. -> the chunks' outputs concatenated (a tensor, or a tuple of
        tensors as the module returns), leaves that take the loss's gradient. ``module`` is an
        ``nn.Module``, a bound method of one, or any callable (whose buffers, if it has modules
        inside, are then not restored: pass the module)."""
        rows, chunks = split_rows(args, chunk_size)
        if self.check_ranks and ddp_of(module) is not None and torch_dist.is_initialized():
            self._check_rank_counts(len(chunks), chunks[0])
        holder = owner(module)
        buffers = list(holder.buffers()) if holder is not None else []
        before = [b.clone() for b in buffers]
        devices = cuda_devices(module, [a for a in chunks[0] if isinstance(a, torch.Tensor)])
        states: list[RngState] = []
        outs: list[tuple[torch.Tensor, ...]] = []
        with torch.no_grad():
            for chunk in chunks:
                states.append(RngState.capture(devices))
                out = _as_tuple(module(*chunk, **kwargs))
                n = rows[len(outs)]
                if any(o.dim() == 0 or o.shape[0] != n for o in out):
                    raise GradCacheError(
                        f"a cached encoder must return one row per input row; got {[tuple(o.shape) for o in out]} "
                        f"for {n} rows"
                    )
                outs.append(out)
        leaves = tuple(
            (torch.cat(parts) if len(parts) > 1 else parts[0]).detach().requires_grad_() for parts in zip(*outs)
        )
        self._calls.append(
            _Call(
                module,
                chunks,
                rows,
                kwargs,
                states,
                autocast_state(),
                leaves,
                buffers,
                before,
            )
        )
        return leaves[0] if len(leaves) == 1 else leaves

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagates ``loss`` (already scaled by a GradScaler if one is used: the scale then
        reaches every parameter exactly once) to the embeddings and the loss's own parameters,
        then replays every chunk of every :meth:`embed` call with a graph and back-propagates
        its rows of the cached gradient. Gradients accumulate in ``.grad`` as ``loss.backward()``
        would leave them; zero them before, step the optimizer after."""
        calls, self._calls = self._calls, []
        if not calls:
            raise GradCacheError("backward() before any embed(): nothing to replay")
        loss.backward()
        grads = []
        for i, call in enumerate(calls):
            g = [leaf.grad for leaf in call.leaves]
            if all(x is None for x in g):
                raise GradCacheError(
                    f"the loss does not depend on the embeddings of embed() call {i + 1} of {len(calls)}; "
                    "embed only what the loss uses"
                )
            grads.append(g)
        last_of: dict[int, tuple[int, int]] = {}  # DDP module -> (call, chunk) whose backward all-reduces
        for i, call in enumerate(calls):
            ddp = ddp_of(call.module)
            if ddp is not None:
                last_of[id(ddp)] = (i, len(call.chunks) - 1)
        for i, (call, g) in enumerate(zip(calls, grads)):
            ddp = ddp_of(call.module)
            with torch.no_grad():
                for buf, value in zip(call.buffers, call.buffers_before):
                    buf.copy_(value)
            used = [k for k, x in enumerate(g) if x is not None]  # outputs the loss reached
            pieces = {k: g[k].split(call.rows) for k in used}  # type: ignore[union-attr]
            for j, (chunk, state) in enumerate(zip(call.chunks, call.rng)):
                last = ddp is None or last_of[id(ddp)] == (i, j)
                with contextlib.nullcontext() if last or ddp is None else ddp.no_sync():
                    with state.replayed(), autocast_as(call.autocast), torch.enable_grad():
                        out = _as_tuple(call.module(*chunk, **call.kwargs))
                    torch.autograd.backward([out[k] for k in used], [pieces[k][j].to(out[k].dtype) for k in used])

    def _check_rank_counts(self, count: int, chunk: tuple) -> None:
        device = next((a.device for a in chunk if isinstance(a, torch.Tensor)), torch.device("cpu"))
        if torch_dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        counts = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(torch_dist.get_world_size())]
        torch_dist.all_gather(counts, torch.tensor([count], dtype=torch.long, device=device))
        seen = [int(c) for c in torch.cat(counts).tolist()]
        if len(set(seen)) > 1:
            raise GradCacheError(
                f"the ranks split this batch into different numbers of chunks ({seen}); DDP needs the same number "
                "of chunks on every rank (give every rank the same batch size)"
            )


def forward_in_chunks(module: Callable[..., torch.Tensor], x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """``module(x)`` without a graph, ``chunk_size`` rows at a time (0 = at once), concatenated:
    the key side of a cached step, whose activations are freed chunk by chunk."""
    with torch.no_grad():
        if not chunk_size or chunk_size >= x.shape[0]:
            return module(x)
        return torch.cat([module(c) for c in x.split(chunk_size)])
