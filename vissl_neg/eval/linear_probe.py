"""Linear probe on frozen features: standardise with the training statistics, fit a
multinomial logistic regression (L-BFGS, L2 penalty), report test top-1."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = train.mean(0, keepdim=True)
    std = train.std(0, keepdim=True).clamp_min(1e-6)
    return (train - mean) / std, (test - mean) / std


def linear_probe(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    weight_decay: float = 1e-4,
    max_iter: int = 300,
    seed: int = 0,
) -> float:
    """Top-1 accuracy (percent) of a linear classifier trained on standardised features."""
    torch.manual_seed(seed)
    x_train, x_test = standardise(train_feats.float(), test_feats.float())
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    linear = torch.nn.Linear(x_train.shape[1], num_classes).to(x_train.device)
    opt = torch.optim.LBFGS(
        linear.parameters(),
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
    )

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(linear(x_train), train_labels) + 0.5 * weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = linear(x_test).argmax(1)
    return 100.0 * (pred == test_labels).float().mean().item()
