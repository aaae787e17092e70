"""Run by torchrun from test_grad_cache.py (2 ranks, gloo).

1. The building block: a cached step of a DDP-wrapped ViT on this rank's half of a global batch,
   embeddings gathered before the loss; saves the averaged gradient, the loss, how many all-reduce
   rounds the cached and a plain DDP step make, and the error a rank gets when the ranks would run
   different numbers of chunks.
2. The MoCo v3 trainer (negatives.source=batch, BN heads, symmetric loss) for two steps, plain and
   with train.grad_cache_chunk (backbone and heads in DDP wrappers of their own); saves both
   final states.

    torchrun --nproc_per_node=2 tests/grad_cache_ddp_worker.py OUT_DIR DATA_ROOT
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

from vissl_neg.config import load_config  # noqa: E402
from vissl_neg.engine.trainer import Trainer  # noqa: E402
from vissl_neg.losses import symmetric_info_nce  # noqa: E402
from vissl_neg.runtime.distributed import all_gather_with_grad  # noqa: E402
from vissl_neg.runtime.grad_cache import GradCache, GradCacheError  # noqa: E402

import helpers  # noqa: E402,F401  (one thread per process)
from helpers import MOCOV3_TINY, tiny_overrides  # noqa: E402

ROWS, CHUNK = 4, 2  # per rank
MOCOV3 = [*MOCOV3_TINY, "optim.batch_size=16", "train.max_steps=2"]


class Normalised(nn.Module):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return F.normalize(self.backbone(x), dim=1)


def build() -> nn.Module:
    torch.manual_seed(0)
    return Normalised(timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8))


def global_batch(world: int = 2):
    g = torch.Generator().manual_seed(3)
    return tuple(torch.randn(world * ROWS, 3, 32, 32, generator=g) for _ in range(2))


def pair_loss(fa, fb):
    return symmetric_info_nce(fa, fb, torch.tensor(2.5), label_smoothing=0.1)


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = DDP(build())
    calls = [0]

    def counting(state, bucket):
        calls[0] += 1
        return allreduce_hook(state, bucket)

    model.register_comm_hook(dist.group.WORLD, counting)
    a, b = (t[rank * ROWS : (rank + 1) * ROWS] for t in global_batch())

    for _ in range(2):  # plain DDP steps; the second's rounds count (DDP rebuilds its buckets after the first)
        calls[0] = 0
        model.zero_grad(set_to_none=True)
        pair_loss(model(a), model(b)).backward()
    plain = calls[0]
    model.zero_grad(set_to_none=True)
    calls[0] = 0
    cache = GradCache()
    fa, fb = cache.embed(model, a, chunk_size=CHUNK), cache.embed(model, b, chunk_size=CHUNK)
    loss = pair_loss(all_gather_with_grad(fa), all_gather_with_grad(fb))
    cache.backward(loss)
    record = {
        "loss": loss.detach(),
        "grads": {n.removeprefix("module."): p.grad.clone() for n, p in model.named_parameters()},
        "reductions_cached": calls[0],
        "reductions_plain": plain,
    }
    try:  # rank 1 has one row more: 3 chunks against rank 0's 2
        GradCache().embed(model, torch.cat([a, a[:1]]) if rank else a, chunk_size=CHUNK)
        record["unequal"] = ""
    except GradCacheError as exc:
        record["unequal"] = str(exc)
    torch.save(record, out / f"rank{rank}.pt")
    for chunk in (0, 4):  # 8 rows per rank: 2 chunks of the backbone per view
        overrides = tiny_overrides(sys.argv[2], out / f"moco{chunk}") + [*MOCOV3, f"train.grad_cache_chunk={chunk}"]
        trainer = Trainer(load_config(None, overrides), resume=False)
        trainer.fit()
        state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        torch.save(state, out / f"moco{chunk}_rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
