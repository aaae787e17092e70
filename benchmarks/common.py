"""Shared by the benchmark scripts: write results and splice them into the README."""

from __future__ import annotations

import json
import resource
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb(peak: bool = False) -> float:
    """This process's resident memory now (VmRSS), or its high-water mark (VmHWM), in MiB."""
    key = "VmHWM:" if peak else "VmRSS:"
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def reset_peak_rss() -> None:
    """Reset the high-water mark of resident memory to the current value (Linux >= 4.0), so
    that ``rss_mb(peak=True)`` measures what comes after."""
    Path("/proc/self/clear_refs").write_text("5")


def write_results(out: str | Path, text: str, data) -> None:
    """``text`` to ``out`` (markdown) and ``data`` beside it as JSON."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(data, indent=2))


def publish(
    lines: list[str], data, out: str | Path, readme: str | Path | None, name: str, readme_extra: str = ""
) -> str:
    """Join ``lines`` into the results text, print it, write it (and ``data`` as JSON) to
    ``out``, and splice it (plus ``readme_extra``) into ``readme`` between the ``name``
    markers when a README is given. Returns the text."""
    text = "\n".join(lines) + "\n"
    print(text)
    write_results(out, text, data)
    if readme:
        splice_readme(readme, name, text + readme_extra)
    return text


def splice_readme(readme: str | Path, name: str, text: str) -> None:
    """Replace what lies between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    readme = Path(readme)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    body = readme.read_text()
    if start not in body or end not in body:
        raise SystemExit(f"{readme} has no {start} ... {end} markers")
    head, rest = body.split(start, 1)
    readme.write_text(head + start + "\n" + text + end + rest.split(end, 1)[1])


class LightlyMoCo:
    """MoCo v2 from lightly's own building blocks (MoCoProjectionHead, NTXentLoss with its
    memory bank, update_momentum) on vissl_neg's device views, for same-process comparisons;
    on ``device`` with ``amp_dtype`` autocast, channels_last and torch.compile when asked."""

    def __init__(
        self,
        cfg,
        backbone,
        in_chans: int,
        device=None,
        amp_dtype=None,
        channels_last: bool = False,
        compile: bool = False,
    ):
        import copy

        import torch
        from lightly.loss import NTXentLoss
        from lightly.models.modules import MoCoProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        from vissl_neg.augment import ViewAugment

        size = cfg.augment.size
        device = torch.device(device or "cpu")
        self.device, self.amp_dtype, self.channels_last = device, amp_dtype, channels_last
        self.augment = ViewAugment(cfg.augment, in_chans).to(device)
        with torch.no_grad():
            feat_dim = backbone.eval()(torch.zeros(2, in_chans, size, size)).shape[1]
        backbone.train()
        head = MoCoProjectionHead(feat_dim, cfg.model.head_hidden or feat_dim, cfg.model.dim)
        self.query = torch.nn.Sequential(backbone, head).to(device)
        self.key = copy.deepcopy(self.query)
        if channels_last and not compile:  # as vissl_neg: inductor picks the weights' layout
            self.query.to(memory_format=torch.channels_last)
            self.key.to(memory_format=torch.channels_last)
        deactivate_requires_grad(self.key)
        self.criterion = NTXentLoss(
            temperature=cfg.loss.temperature, memory_bank_size=(cfg.negatives.size, cfg.model.dim)
        ).to(device)
        self.opt = torch.optim.SGD(
            self.query.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay
        )
        self.forward_q = torch.compile(self.query) if compile else self.query

    def step(self, images, lr: float, momentum: float):
        """One step on a uint8 batch; returns the loss tensor."""
        import torch
        from lightly.models.utils import update_momentum

        for g in self.opt.param_groups:
            g["lr"] = lr
        from vissl_neg.runtime.device import autocast

        update_momentum(self.query, self.key, momentum)
        x_q, x_k = self.augment(images), self.augment(images)
        if self.channels_last:
            x_q, x_k = (
                x_q.contiguous(memory_format=torch.channels_last),
                x_k.contiguous(memory_format=torch.channels_last),
            )
        with autocast(self.device, self.amp_dtype):
            q = self.forward_q(x_q)
            with torch.no_grad():
                k = self.key(x_k)
        loss = self.criterion(q.float(), k.float())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()
