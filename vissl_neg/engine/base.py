"""What the MoCo and cross-view trainers share around their loops: the checkpoint path, the
stop flag a signal sets, evaluation at epoch ends, and the final result / metrics.json /
report.png."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from vissl_neg.engine.run_dir import diverged, install_stop_handlers, restore_handlers
from vissl_neg.errors import one_line
from vissl_neg.runtime import checkpoint as ckpt
from vissl_neg.runtime import distributed as dist
from vissl_neg.runtime.device import autocast, use_deterministic_kernels


class TrainerBase:
    """The loop and what surrounds it. A task's trainer sets cfg, out_dir, device, amp_dtype,
    train_set, loader_set, batch_sampler, model, notes, step, resumed_from, steps_per_epoch,
    total_steps, metrics (list of dicts with epoch and step), train_seconds, last_scalars,
    stop_signal, and defines:

    - ``unit`` (what a sample is called), ``rate_key`` (its rate in the result, also the
      TensorBoard tag ``train/<rate_key>``), ``averaged`` (the ``train_step`` outputs whose
      means are logged as ``train/<key>``, by ``LOGGED``'s name where it has one);
    - ``start_epoch(epoch, start_batch, log) -> seconds`` (set the batch order; a pause such
      as mining, kept out of the training rate), ``train_batch(batch, diagnose) -> out``
      (one step on a loader batch; ``out`` holds detached device tensors, ``loss`` first);
    - ``step_scalars(out) -> dict`` (task scalars of a log step), ``after_log(log, scalars, out)``,
      ``histograms(log, out)``, ``final() -> dict``;
    - ``evaluate_metrics() -> dict``, ``eval_every`` (epochs; 0 = at the end only, -1 never),
      ``describe_metrics``, ``save()``.
    """

    is_main = True
    unit = "samples"
    rate_key = "samples_per_s"
    averaged: tuple[str, ...] = ("loss",)
    LOGGED = {"pos": "pos_cos", "neg": "neg_cos", "hardest_neg": "hardest_neg_cos"}

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
            self.notes.append(
                "model.channels_last is meant for CUDA tensor cores; kept, but it rarely helps on the CPU"
            )
        return module

    @staticmethod
    def _grad_cache_note(backbone: torch.nn.Module, name: str, chunk: int, batch: int) -> str:
        """train.grad_cache_chunk's note: whether the cached step is the full-batch step (no
        batch statistics in the backbone) or per-chunk BatchNorm."""
        from vissl_neg.models import count_batch_norms

        head = f"train.grad_cache_chunk={chunk}: the backbone runs {chunk} samples at a time, the loss sees all {batch}"
        n_bn = count_batch_norms(backbone)
        if n_bn:
            return (
                f"{head}; '{name}' has {n_bn} BatchNorm layers, which normalise each chunk of {chunk} on its own, "
                "so the step is not the full-batch step (it is one only for backbones without batch statistics)"
            )
        return (
            f"{head}; '{name}' has no batch statistics, so the step equals the full-batch step up to float "
            "rounding (it would not with BatchNorm in the backbone)"
        )

    def _start_watch(self) -> None:
        """Before a fit loop: no NaN/inf step seen yet; the last good checkpoint is the one this
        run resumed from (of this step), or none yet for a new run."""
        self._bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        self._last_good: int | None = self.step if self.resumed_from is not None else None

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
        log = RunLogger(
            self.out_dir, enabled=self.is_main, progress=cfg.train.progress, total=self.total_steps, initial=self.step
        )
        for note in self.notes:
            log.info(f"note: {note}")
        if self.resumed_from is not None:
            log.info(f"resuming {self.out_dir} at step {self.step}/{self.total_steps}")
        else:
            log.info(
                f"training {self.out_dir}: {len(self.train_set)} {unit}, {self.steps_per_epoch} steps/epoch, "
                f"{cfg.train.epochs} epochs on {self.device}"
                + (f" with {str(self.amp_dtype).removeprefix('torch.')} autocast" if self.amp_dtype else "")
            )
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

    def _agree_stop(self, now: bool) -> bool:
        """Whether to stop after this step. One process: as soon as a signal came. Under DDP
        the ranks agree (any rank's signal stops all) at log steps and epoch ends only, so
        they stop at the same step without a collective on every step."""
        if not dist.is_dist():
            return self.stop_signal is not None
        if not now:
            return False
        flag = torch.tensor([float(self.stop_signal is not None)], device=self.device)
        if dist.all_reduce_mean(flag).item() > 0:
            self.stop_signal = self.stop_signal or "a signal to another rank"
            return True
        return False

    # ---------------------------------------------------------------- task hooks
    def start_epoch(self, epoch: int, start_batch: int, log) -> float:
        raise NotImplementedError

    def train_batch(self, batch, diagnose: bool) -> dict:
        raise NotImplementedError

    def step_scalars(self, out: dict) -> dict:
        return {}

    def after_log(self, log, scalars: dict, out: dict) -> None:
        pass

    def histograms(self, log, out: dict) -> None:
        pass

    def final(self) -> dict:
        return {}

    # ---------------------------------------------------------------- the loop
    def fit(self) -> dict:
        """Train (from the step the run directory's checkpoint holds) to the end, or to
        ``train.max_steps``, or to a stop signal; -> the result (also in metrics.json)."""
        from vissl_neg.data import make_loader

        cfg, t = self.cfg, self.cfg.train
        log = self._open_log(self.unit)
        previous = install_stop_handlers(self._on_signal)
        self.model.train()
        self._start_watch()
        acc = {key: torch.zeros((), device=self.device) for key in self.averaged}
        n_acc = 0
        t_last, step_last = time.perf_counter(), self.step
        stop_at = min(self.total_steps, t.max_steps or self.total_steps)
        try:
            d = cfg.data
            loader = make_loader(
                self.loader_set,
                self.batch_sampler,
                d.num_workers,
                d.pin_memory,
                seed=t.seed,
                prefetch_factor=d.prefetch_factor,
                persistent_workers=d.persistent_workers,
            )
            stopped = False
            while self.step < stop_at and not stopped:
                t_last += self.start_epoch(*divmod(self.step, self.steps_per_epoch), log)
                for batch in loader:
                    diagnose = (self.step + 1) % t.log_every == 0 or self.step + 1 == stop_at
                    out = self.train_batch(batch, diagnose)
                    self._watch_loss(out["loss"])
                    for key in self.averaged:
                        acc[key] += out[key].mean()
                    n_acc += 1
                    log.advance(1)
                    at_end = self.step >= stop_at
                    if self.step % t.log_every == 0 or at_end:
                        self._check_finite()
                        now = time.perf_counter()
                        rate = (self.step - step_last) * cfg.optim.batch_size / max(now - t_last, 1e-9)
                        self.train_seconds += now - t_last
                        t_last, step_last = now, self.step
                        means = dist.all_reduce_mean(torch.stack([acc[k] for k in self.averaged]) / n_acc).tolist()
                        scalars = {f"train/{self.LOGGED.get(k, k)}": v for k, v in zip(self.averaged, means)}
                        scalars.update({"train/lr": out["lr"], f"train/{self.rate_key}": rate})
                        scalars.update(self.step_scalars(out))
                        log.scalars(scalars, self.step)
                        self.after_log(log, scalars, out)
                        self.last_scalars = scalars
                        log.postfix(
                            loss=f"{scalars['train/loss']:.3f}",
                            lr=f"{out['lr']:.3g}",
                            **{self.rate_key.replace("_per_", "_"): f"{rate:.0f}"},
                        )
                        for value in acc.values():
                            value.zero_()
                        n_acc = 0
                    if self.step % t.hist_every == 0:
                        self.histograms(log, out)
                    stopping = self._agree_stop(self.step % t.log_every == 0 or at_end)
                    if self.step % t.ckpt_every == 0 or at_end or stopping:
                        self._save_checked()
                    if at_end or stopping:
                        break
                stopped = self._agree_stop(True)
                if not stopped:
                    t_last += self._evaluate_if_due(log)
            if self.step >= self.total_steps:  # a kill between the last save and its eval
                self._evaluate_if_due(log)
        finally:
            restore_handlers(previous)
            log.close()
        return self._finish(log, self.rate_key, self.final())

    def describe_metrics(self, values: dict) -> str:
        return "  ".join(f"{k} {v:.2f}" for k, v in values.items())

    def _finish(self, log, rate_key: str, final: dict) -> dict:
        """-> the stop notice, or the run's result (also written to metrics.json)."""
        if self.stop_signal:
            log.info(
                f"stopped by {self.stop_signal} at step {self.step}; checkpoint saved to {self.ckpt_path}; "
                "run the same command again to resume"
            )
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
            if self.cfg.train.report:
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
