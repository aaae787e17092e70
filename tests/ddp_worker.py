"""Run by torchrun from test_distributed.py: train a few steps as one rank and save what
the test compares across ranks (queue, weights, the keys each step enqueued, the sample
indices each step saw, and a shuffle-BN round trip).

    torchrun --nproc_per_node=2 tests/ddp_worker.py OUT_DIR [overrides...]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from vissl_neg.config import load_config  # noqa: E402
from vissl_neg.engine.trainer import Trainer  # noqa: E402
from vissl_neg.models.shuffle_bn import batch_shuffle_ddp, batch_unshuffle_ddp  # noqa: E402
from vissl_neg.runtime import distributed as dist  # noqa: E402

import helpers  # noqa: E402,F401  (one thread per process)


def main() -> None:
    out = Path(sys.argv[1])
    trainer = Trainer(load_config(None, sys.argv[2:]))
    record = {"keys": [], "indices": [], "queue_before": trainer.model.queue.keys.clone()}
    source = trainer.model.source
    add = source.add

    def spy(keys, labels, indices):
        record["keys"].append(keys[0].detach().clone())
        record["indices"].append(indices.clone())
        add(keys, labels, indices)

    source.add = spy
    trainer.fit()
    rank = dist.rank()
    x = torch.arange(6, dtype=torch.float32).unsqueeze(1) + 100 * rank
    shuffled, unshuffle = batch_shuffle_ddp(x)
    back = batch_unshuffle_ddp(shuffled, unshuffle)
    torch.save(
        {
            "rank": rank,
            "world": dist.world_size(),
            "queue": trainer.model.queue.keys.clone(),
            "ptr": int(trainer.model.queue.ptr),
            "params": {n: p.detach().clone() for n, p in trainer.model.encoder_q.named_parameters()},
            "key_params": {n: p.detach().clone() for n, p in trainer.model.encoder_k.named_parameters()},
            "x": x,
            "shuffled": shuffled,
            "back": back,
            **record,
        },
        out / f"rank{rank}.pt",
    )


if __name__ == "__main__":
    main()
