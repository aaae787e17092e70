"""Run logging on the main process: a tqdm bar, TensorBoard scalars and histograms."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm


class RunLogger:
    """Disabled (every call a no-op) on ranks other than 0."""

    def __init__(self, out_dir: Path, enabled: bool = True, progress: bool = True, total: int = 0, initial: int = 0):
        self.enabled = enabled
        self.writer = None
        self.bar = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(out_dir) / "tb"))
        if progress:
            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, smoothing=0.1)

    def info(self, msg: str) -> None:
        if self.enabled:
            (self.bar.write if self.bar is not None else print)(msg)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def postfix(self, **values) -> None:
        if self.bar is not None:
            self.bar.set_postfix(values, refresh=False)

    def scalars(self, values: dict, step: int) -> None:
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        if self.writer is not None:
            self.writer.add_histogram(tag, values.float().cpu(), step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
