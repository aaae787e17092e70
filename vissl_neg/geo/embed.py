"""Embed a cross-view split with the shared encoder (for mining and evaluation): its pairs, or
one list of labelled images."""

from __future__ import annotations

import torch
from torch.utils.data import BatchSampler, SequentialSampler
from tqdm.auto import tqdm

from vissl_neg.data.loader import make_loader, to_device
from vissl_neg.runtime.device import autocast


@torch.no_grad()
def _embed(model, dataset, transform, device, batch_size, num_workers, amp_dtype, progress, desc, embedded, kept=()):
    """One eval-mode pass over ``dataset`` in order: batch columns ``embedded`` through the model,
    columns ``kept`` as they are -> one concatenated tensor per column, on ``device``."""
    was_training = model.training
    model.eval()
    loader = make_loader(
        dataset,
        BatchSampler(SequentialSampler(range(len(dataset))), batch_size, drop_last=False),
        num_workers,
        pin_memory=True,
    )
    out: list[list[torch.Tensor]] = [[] for _ in (*embedded, *kept)]
    try:
        for batch in tqdm(loader, desc=desc, unit="batch", leave=False, disable=not progress):
            columns = to_device([batch[c] for c in (*embedded, *kept)], device)
            with autocast(device, amp_dtype):
                for i in range(len(embedded)):
                    out[i].append(model(transform(columns[i])))
            for i in range(len(embedded), len(columns)):
                out[i].append(columns[i])
    finally:
        model.train(was_training)
    return [torch.cat(parts) for parts in out]


def embed_pairs(
    model: torch.nn.Module,
    dataset,
    transform: torch.nn.Module,
    device: torch.device,
    batch_size: int = 128,
    num_workers: int = 0,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "embed",
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (panorama (N, F), satellite (N, F)) unit rows in float32 on ``device``, in dataset
    order; ``transform`` turns uint8 images into model inputs. The model is put in eval mode
    for the pass and restored after."""
    pano, sat = _embed(model, dataset, transform, device, batch_size, num_workers, amp_dtype, progress, desc, (0, 1))
    return pano, sat


def embed_images(
    model: torch.nn.Module,
    dataset,
    transform: torch.nn.Module,
    device: torch.device,
    batch_size: int = 128,
    num_workers: int = 0,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "embed",
) -> tuple[torch.Tensor, torch.Tensor]:
    """An ``ImageListDataset`` -> (embeddings (N, F) unit rows in float32 on ``device``, labels
    (N,) long on ``device``), in dataset order; the model is in eval mode for the pass."""
    images, labels = _embed(
        model, dataset, transform, device, batch_size, num_workers, amp_dtype, progress, desc, (0,), (1,)
    )
    return images, labels.long()
