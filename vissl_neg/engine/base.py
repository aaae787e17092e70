"""What the MoCo and cross-view trainers share around their loops: the checkpoint path, the
stop flag a signal sets, evaluation at epoch ends, and the final result / metrics.json /
report.png."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from vissl_neg.engine import checkpoint as ckpt
from vissl_neg.engine import distributed as dist
from vissl_neg.engine.device import autocast, use_deterministic_kernels
from vissl_neg.engine.run_dir import diverged
from vissl_neg.errors import one_line


class TrainerBase:
    """Subclasses set cfg, out_dir, device, amp_dtype, train_set, notes, step, resumed_from,
    steps_per_epoch, total_steps, metrics (list of dicts with epoch and step), train_seconds,
    last_scalars, stop_signal, and define
    ``evaluate_metrics() -> dict``, ``eval_every`` (epochs; 0 = at the end only, -1 never),
    ``save()``."""

    is_main = True

    @property
    def ckpt_path(self) -> Path:
        return self.out_dir / ckpt.CHECKPOINT

    def _on_signal(self, name: str) -> None:
        self.stop_signal = name

    def _autocast(self):
        return autocast(self.device, self.amp_dtype)

    def _compiles(self) -> bool:
        """train.compile on CUDA. Weights then stay in the default layout (inductor picks conv layouts
        itself; channels_last weights broke its convolution backward on torch 2.11); inputs still
        go channels_last when asked."""
        return self.cfg.train.compile and self.device.type == "cuda"

    def _cuda_options(self, module: torch.nn.Module, name: str) -> torch.nn.Module:
        """train.cudnn_benchmark, train.deterministic and train.compile on CUDA -> ``module``, compiled if asked; elsewhere
        notes that compile and model.channels_last (cfg.model) are for CUDA, and ``module`` as is."""
        cfg, cuda = self.cfg, self.device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = cfg.train.cudnn_benchmark and not cfg.train.deterministic
        if cfg.train.deterministic:
            use_deterministic_kernels()
        if cfg.train.compile:
            if cuda:
                return torch.compile(module)
            self.notes.append(f"train.compile applies on CUDA only; {name} runs eagerly here")
        if cfg.model.channels_last and not cuda:
            self.notes.append("model.channels_last is meant for CUDA tensor cores; kept, but it rarely helps on the CPU")
        return module

    def _start_watch(self) -> None:
        """Before a fit loop: no NaN/inf step seen yet; the checkpoint on disk (if any) is of this step."""
        self._bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        self._last_good = self.step

    def _watch_loss(self, loss: torch.Tensor) -> None:
        """After a step (``self.step`` advanced): remembers the first step whose loss is NaN/inf, on the device."""
        bad = self._bad_step
        self._bad_step = torch.where((bad < 0) & ~torch.isfinite(loss), torch.full_like(bad, self.step - 1), bad)

    def _check_finite(self) -> None:
        """Raises (on every rank, a collective under DDP) if any rank saw a NaN/inf loss since the watch began."""
        local = int(self._bad_step)
        flags = torch.tensor([float(local >= 0), float(max(local, 0))], device=self.device)
        any_bad, step_sum = dist.all_reduce_mean(flags).tolist()
        if any_bad > 0:
            bad = local if local >= 0 else round(step_sum * dist.world_size())
            raise diverged(bad, self._last_good, self.ckpt_path)

    def _save_good(self) -> None:
        """Saves a checkpoint that :meth:`_check_finite` has just cleared."""
        self.save()
        self._last_good = self.step

    def _save_checked(self) -> None:
        self._check_finite()
        self._save_good()

    def _open_log(self, unit: str):
        """A RunLogger (bar, TensorBoard) that has announced the run or its resumption."""
        from vissl_neg.engine.logging import RunLogger

        cfg = self.cfg
        log = RunLogger(self.out_dir, enabled=self.is_main, progress=cfg.train.progress, total=self.total_steps,
                        initial=self.step)
        for note in self.notes:
            log.info(f"note: {note}")
        if self.resumed_from is not None:
            log.info(f"resuming {self.out_dir} at step {self.step}/{self.total_steps}")
        else:
            log.info(f"training {self.out_dir}: {len(self.train_set)} {unit}, {self.steps_per_epoch} steps/epoch, "
                     f"{cfg.train.epochs} epochs on {self.device}"
                     + (f" with {str(self.amp_dtype).removeprefix('torch.')} autocast" if self.amp_dtype else ""))
        return log

    def _eval_due(self) -> bool:
        """At an epoch boundary every ``eval_every`` epochs and at the end, once per step."""
        if self.eval_every < 0 or self.step % self.steps_per_epoch:
            return False
        if self.metrics and self.metrics[-1]["step"] == self.step:
            return False
        every = self.eval_every
        return self.step >= self.total_steps or (every > 0 and (self.step // self.steps_per_epoch) % every == 0)

    def _evaluate_if_due(self, log) -> float:
        """At an epoch end: evaluates and saves if due; -> the seconds it took (kept out of the training rate)."""
        if not self._eval_due():
            return 0.0
        t0 = time.perf_counter()
        self._check_finite()  # never evaluate, or save, weights a NaN step has touched
        values = self.evaluate_metrics()
        epoch = self.step // self.steps_per_epoch
        self.metrics.append({"epoch": epoch, "step": self.step, **values})
        log.scalars({f"eval/{k}": v for k, v in values.items()}, self.step)
        log.info(f"epoch {epoch}: {self.describe_metrics(values)} ({time.perf_counter() - t0:.0f}s)")
        self._save_good()
        return time.perf_counter() - t0

    def describe_metrics(self, values: dict) -> str:
        return "  ".join(f"{k} {v:.2f}" for k, v in values.items())

    def _finish(self, log, rate_key: str, final: dict) -> dict:
        """-> the stop notice, or the run's result (also written to metrics.json)."""
        if self.stop_signal:
            log.info(f"stopped by {self.stop_signal} at step {self.step}; checkpoint saved to {self.ckpt_path}; "
                     "run the same command again to resume")
            return {"stopped": self.stop_signal, "step": self.step}
        result = {
            "step": self.step,
            "epochs": self.step / self.steps_per_epoch,
            "train_seconds": round(self.train_seconds, 1),
            rate_key: round(self.step * self.cfg.optim.batch_size / max(self.train_seconds, 1e-9), 1),
            **final,
            "last_log": {k: round(v, 6) for k, v in self.last_scalars.items()},
            "history": self.metrics,
        }
        if self.is_main:
            (self.out_dir / "metrics.json").write_text(json.dumps(result, indent=2))
            self._write_report()
        return result

    def _write_report(self) -> None:
        """RUN_DIR/report.png from the run's TensorBoard logs; a picture that cannot be drawn
        is a note, never a failed run."""
        from vissl_neg.engine.report import REPORT, write_report

        try:
            write_report(self.out_dir)
        except Exception as exc:  # noqa: BLE001 (whatever went wrong, the trained weights are saved)
            print(f"note: no {self.out_dir / REPORT} ({type(exc).__name__}: {one_line(exc)})", flush=True)
