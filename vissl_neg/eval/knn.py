"""Weighted kNN classifier on cosine similarity (Wu et al. 2018): the rule of the kNN monitor
in MoCo's CIFAR-10 demo, which scores the encoder's 128-d embedding (after the head); vissl_neg
scores the features it is given, and its trainer and evaluation pass backbone features.

score(c) = Σ_{j ∈ top-k} exp(s_j / T) · [y_j = c], s_j = cos(x, x_j); predict argmax_c.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(
    query: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """query (Q, F), bank (N, F), bank_labels (N,) -> predicted labels (Q,).
    Chunked over queries: memory O(chunk · N)."""
    query = F.normalize(query.float(), dim=1)
    bank = F.normalize(bank.float(), dim=1)
    k = min(k, bank.shape[0])
    preds = []
    for start in range(0, query.shape[0], chunk_size):
        sim = query[start : start + chunk_size] @ bank.t()
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        scores = torch.zeros(sim.shape[0], num_classes, device=sim.device, dtype=weights.dtype)
        scores.scatter_add_(1, bank_labels[top_idx], weights)
        preds.append(scores.argmax(dim=1))
    return torch.cat(preds)


def knn_top1(train_feats, train_labels, test_feats, test_labels, k=200, temperature=0.1, chunk_size=1024) -> float:
    """Top-1 accuracy in percent of the weighted kNN classifier."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    pred = knn_predict(test_feats, train_feats, train_labels, num_classes, k, temperature, chunk_size)
    return 100.0 * (pred == test_labels).float().mean().item()
