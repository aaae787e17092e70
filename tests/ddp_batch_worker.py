"""Run under torchrun (gloo): a trainer with negatives.source=batch contrasts known per-rank
queries and keys; each rank saves the negatives it saw and its loss for the test to check."""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vissl_neg.config import load_config  # noqa: E402
from vissl_neg.engine.trainer import Trainer  # noqa: E402
from vissl_neg.runtime import distributed as dist  # noqa: E402


def per_rank(rank: int, b: int = 8, d: int = 16):
    g = torch.Generator().manual_seed(100 + rank)
    return F.normalize(torch.randn(b, d, generator=g), dim=1), F.normalize(torch.randn(b, d, generator=g), dim=1)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    trainer = Trainer(load_config(None, sys.argv[2:]))
    rank = dist.rank()
    q, k = per_rank(rank)
    labels = torch.arange(8) + 10 * rank
    loss, negs, *_ = trainer.contrast(q, k, torch.arange(8), labels)
    trainer.fit()  # a couple of real steps on the batch source under DDP
    torch.save(
        {
            "rank": rank,
            "source": negs.source,
            "index": negs.index,
            "labels": negs.labels,
            "loss": loss.detach(),
            "step": trainer.step,
        },
        out / f"rank{rank}.pt",
    )
    dist.barrier()  # both ranks done before either tears gloo down
    torch.distributed.destroy_process_group()
