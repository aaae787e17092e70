"""Cross-view training (Sample4Geo, Deuser et al. ICCV 2023): one shared encoder for ground
panoramas and satellite tiles, symmetric InfoNCE with a learnable scale, AdamW with warm-up
+ cosine, gradient clipping by value, AMP on CUDA; each epoch's batches are hard-negative
batches built from GPS neighbours first and from mined embedding neighbours later. Recall
is evaluated every ``eval.every`` epochs; checkpoints are atomic and resume exactly."""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path

import torch

from vissl_neg.augment.cross_view import CrossViewAugment, EvalPairTransform
from vissl_neg.config import to_dict
from vissl_neg.config.geo_schema import GeoConfig
from vissl_neg.data.loader import FixedBatchSampler, to_device
from vissl_neg.engine.base import TrainerBase
from vissl_neg.engine.logging import RunLogger
from vissl_neg.engine.run_dir import open_run_dir
from vissl_neg.engine.schedule import warmup_cosine
from vissl_neg.errors import ConfigError
from vissl_neg.geo.embed import embed_pairs
from vissl_neg.geo.m2mix import m2_mix_negatives, m2mix_symmetric_info_nce, m2mix_weight, sample_m2mix_lambda
from vissl_neg.geo.retrieval import evaluate_retrievals
from vissl_neg.geo.sampling import MINERS, SAMPLERS, gps_table
from vissl_neg.losses import symmetric_info_nce
from vissl_neg.models.cross_view import build_cross_view_model
from vissl_neg.runtime import checkpoint as ckpt
from vissl_neg.runtime.device import resolve_amp, resolve_device, seed_everything, use_fused
from vissl_neg.runtime.grad_cache import GradCache


class GeoTrainer(TrainerBase):
    """Build with a validated :class:`GeoConfig`; ``fit()`` trains (resuming if the run
    directory holds a checkpoint) and returns the final metrics. One process. What differs
    between benchmarks comes from the data section (``vissl_neg.data.section.GeoDataConfig``):
    its training pairs, GPS source, batch sampler, mining and evaluations."""

    def __init__(self, cfg: GeoConfig, resume: bool | None = None):
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("cross-view training runs in one process; start tools/train.py without torchrun")
        self.cfg = cfg
        data = cfg.data
        self.out_dir = Path(cfg.train.out_dir)
        self.device = resolve_device(cfg.train.device)
        self.amp_dtype = resolve_amp(cfg.train.amp, self.device)
        self.stop_signal: str | None = None
        self.train_set = data.build("train")
        self.notes: list[str] = [note for note in (getattr(self.train_set, "note", None),) if note]
        self.monitor = data.retrievals(data.monitor_split) if cfg.eval.every >= 0 else []
        for retrieval in self.monitor:
            for side in (retrieval.pairs, retrieval.queries):
                if getattr(side, "note", None):
                    self.notes.append(side.note)
        n, batch = len(self.train_set), cfg.optim.batch_size
        if batch > n:
            raise ConfigError(f"optim.batch_size={batch} is larger than the training set ({n} pairs)")
        if data.sampler == "classes" and batch > len(set(self.train_set.labels)):
            raise ConfigError(
                f"optim.batch_size={batch} exceeds the {len(set(self.train_set.labels))} training classes of "
                f"{data.title}: a batch holds one pair per class"
            )
        s = cfg.sampling
        self.sample = SAMPLERS[data.sampler]
        self.gps = gps_table(data.gps(self.train_set), s.neighbour_range)
        if self.gps is None and data.sampler == "neighbours" and s.gps_epochs > 0:
            self.notes.append(
                f"no GPS neighbours for {data.title} (data.neighbours={getattr(data, 'neighbours', 'none')}): "
                f"the first {s.gps_epochs} epochs use random batches"
            )
        if data.miner is None and s.mine_every > 0:
            self.notes.append(f"{data.title} batches use no mined neighbours: sampling.mine_every is not used")
        self.steps_per_epoch = n // batch  # every id lands in a batch; only the partial last one is dropped
        self.total_steps = cfg.train.epochs * self.steps_per_epoch
        self.warmup_steps = round(cfg.optim.warmup_epochs * self.steps_per_epoch)
        mix_t = cfg.mixup.temperature
        self.mix_logit_scale = math.log(1 / mix_t) if mix_t > 0 else None  # None: the learnable scale

        seed_everything(cfg.train.seed)
        a = cfg.augment
        self.augment = CrossViewAugment(
            a.flip_p,
            a.rotate_p,
            a.jpeg_p,
            a.jpeg_quality,
            a.jitter,
            a.hue,
            a.jitter_p,
            a.blur_p,
            a.sharpen_p,
            a.grid_dropout_p,
            a.coarse_dropout_p,
            a.mean,
            a.std,
            sat_rotate90_p=a.sat_rotate90_p,
            pano_grid_ratio=a.pano_grid_ratio,
        ).to(self.device)
        self.eval_transform = EvalPairTransform(a.mean, a.std).to(self.device)
        self.model = build_cross_view_model(cfg.model, data.sat_size, data.ground_size).to(self.device)
        if cfg.model.channels_last and not self._compiles():
            self.model.to(memory_format=torch.channels_last)
        self.forward = self._cuda_options(self.model, "the encoder")
        if cfg.train.grad_cache_chunk:
            self.notes.append(
                self._grad_cache_note(self.model.backbone, cfg.model.backbone, cfg.train.grad_cache_chunk, batch)
            )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
        )
        use_fused(self.optimizer, self.device)
        # fp16: the reference's GradScaler(init_scale=2.**10) (Sample4Geo train_cvusa.py:293-294)
        self.scaler = torch.amp.GradScaler(
            self.device.type, init_scale=2.0**10, enabled=self.amp_dtype == torch.float16
        )
        self.batch_sampler, self.loader_set = FixedBatchSampler(), self.train_set
        self.mined: torch.Tensor | None = None  # (N, neighbour_range) dataset indices, nearest first
        self.mined_keys: list[int] | None = None  # the table's row keys when they are not 0..N-1 (VIGOR: satellites)
        self.mined_epoch = -1
        self.step = 0
        self.metrics: list[dict] = []
        self.train_seconds = 0.0
        self.resumed_from: int | None = None
        self.last_scalars: dict = {}
        state = open_run_dir(cfg, resume)
        if state is not None:
            self._restore(state)

    # ---------------------------------------------------------------- checkpoints
    def save(self) -> None:
        ckpt.save_atomic(
            {
                "step": self.step,
                "epoch": self.step // self.steps_per_epoch,
                "config": to_dict(self.cfg),
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": ckpt.rng_state(),
                "mined": self.mined,
                "mined_keys": self.mined_keys,
                "mined_epoch": self.mined_epoch,
                "metrics": self.metrics,
                "train_seconds": self.train_seconds,
            },
            self.ckpt_path,
        )

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        use_fused(self.optimizer, self.device)
        self.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        self.mined = state["mined"]
        self.mined_keys = state.get("mined_keys")
        self.mined_epoch = state["mined_epoch"]
        self.step = state["step"]
        self.metrics = state["metrics"]
        self.train_seconds = state["train_seconds"]
        self.resumed_from = self.step

    # ---------------------------------------------------------------- batches
    def refresh_epoch(self, epoch: int) -> int | None:
        """The epoch whose start mined the neighbours ``epoch`` uses; None while GPS (or random) batches apply."""
        s = self.cfg.sampling
        if epoch < s.gps_epochs or s.mine_every == 0 or self.cfg.data.miner is None:
            return None
        return s.gps_epochs + (epoch - s.gps_epochs) // s.mine_every * s.mine_every

    def mine(self, log: RunLogger) -> None:
        """Embed every training pair and keep the data set's mined neighbour table (for pairs:
        each panorama's ``neighbour_range`` most similar other satellites, dataset indices)."""
        t0 = time.perf_counter()
        s = self.cfg.sampling
        pano, sat = embed_pairs(
            self.model,
            self.train_set,
            self.eval_transform,
            self.device,
            self.cfg.eval.batch_size,
            self.cfg.data.num_workers,
            self.amp_dtype,
            self.cfg.train.progress,
            "mine",
        )
        miner = MINERS[self.cfg.data.miner]
        self.mined_keys, mined = miner(pano, sat, self.train_set, self.cfg.data, s.neighbour_range, s.chunk_size)
        self.mined = mined.int()
        log.info(
            f"mined {self.mined.shape[1]} neighbours for {len(self.train_set)} pairs ({time.perf_counter() - t0:.0f}s)"
        )

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The hard-negative batches of ``epoch`` (dataset indices): a pure function of the
        seed, the epoch and the neighbour table in use."""
        if self.refresh_epoch(epoch) is None:
            neighbours = self.gps
        else:
            rows = self.mined.tolist()
            neighbours = dict(zip(self.mined_keys or range(len(rows)), rows))
        rng = random.Random(self.cfg.train.seed * 100_003 + epoch)
        batches = self.sample(self.train_set, self.cfg.optim.batch_size, neighbours, self.cfg.sampling, rng)
        while len(batches) < self.steps_per_epoch:  # a sampler that left pairs out: more from a fresh pass
            more = self.sample(self.train_set, self.cfg.optim.batch_size, neighbours, self.cfg.sampling, rng)
            if not more:
                raise ConfigError(
                    f"the {self.cfg.data.sampler} sampler builds no full batch of {self.cfg.optim.batch_size}"
                )
            batches += more
        return batches[: self.steps_per_epoch]

    # ---------------------------------------------------------------- training
    def train_step(self, pano_u8: torch.Tensor, sat_u8: torch.Tensor) -> dict:
        """One step on uint8 pairs already on the device; returns detached device tensors
        (with m²-mix on: its λ, weight and each panorama's highest score against another pair's mix)."""
        cfg, m = self.cfg, self.cfg.mixup
        lr = warmup_cosine(self.step, self.total_steps, self.warmup_steps, cfg.optim.lr, cfg.optim.min_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        pano, sat = self.augment(pano_u8, sat_u8)
        if cfg.model.channels_last:
            pano = pano.contiguous(memory_format=torch.channels_last)
            sat = sat.contiguous(memory_format=torch.channels_last)
        chunk = cfg.train.grad_cache_chunk
        cache = GradCache() if chunk else None  # gradient caching: the encoder runs chunk pairs at a time
        with self._autocast():
            if cache is None:
                f_pano, f_sat = self.forward(pano), self.forward(sat)
            else:  # leaves without a graph; the loss below sees the whole batch
                f_pano, f_sat = (
                    cache.embed(self.forward, pano, chunk_size=chunk),
                    cache.embed(self.forward, sat, chunk_size=chunk),
                )
        epoch = self.step // self.steps_per_epoch
        weight = m2mix_weight(m.weight, epoch, m.start_epoch, m.epoch_decay) if m.enabled else 0.0
        if weight > 0:
            lam = sample_m2mix_lambda(m.alpha, self.device)
            loss = m2mix_symmetric_info_nce(
                f_pano,
                f_sat,
                self.model.logit_scale,
                lam,
                weight,
                self.mix_logit_scale,
                cfg.loss.label_smoothing,
                m.label_smoothing,
            )
        else:
            loss = symmetric_info_nce(f_pano, f_sat, self.model.logit_scale, cfg.loss.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        if cache is None:
            self.scaler.scale(loss).backward()
        else:  # logit_scale's gradient and the embeddings', then each chunk replayed with a graph
            cache.backward(self.scaler.scale(loss))
        if cfg.optim.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_value_(self.model.parameters(), cfg.optim.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        with torch.no_grad():
            sims = f_pano.detach() @ f_sat.detach().t()
            pos = sims.diagonal().clone()
            hardest = sims.fill_diagonal_(-2.0).amax(dim=1)
            mix = {}
            if weight > 0:
                mixes = m2_mix_negatives(f_pano.detach(), f_sat.detach(), lam)
                mix_sims = f_pano.detach().to(mixes.dtype) @ mixes.t()
                mix = {
                    "m2mix_lambda": lam,
                    "m2mix_weight": weight,
                    "hardest_mix": mix_sims.fill_diagonal_(-2.0).amax(dim=1),
                }
        return {
            "loss": loss.detach(),
            "pos": pos,
            "hardest_neg": hardest,
            "lr": lr,
            "scale": self.model.logit_scale.detach().exp(),
            **mix,
        }

    @property
    def eval_every(self) -> int:
        return self.cfg.eval.every

    def evaluate_metrics(self) -> dict[str, float]:
        """The data set's evaluations of its monitored split (``data.monitor_split``)."""
        e = self.cfg.eval
        out = evaluate_retrievals(
            self.model,
            self.monitor,
            self.eval_transform,
            self.device,
            e.batch_size,
            self.cfg.data.num_workers,
            e.chunk_size or None,
            self.amp_dtype,
            self.cfg.train.progress,
        )
        if e.keep_best:
            self._keep_if_best(out)
        return out

    def _keep_if_best(self, values: dict[str, float]) -> None:
        """eval.keep_best: the weights of the best first R@1 so far go to RUN/best.ckpt (atomically)."""
        key = next(k for k in values if k.endswith("R@1"))
        if all(values[key] > m.get(key, -1.0) for m in self.metrics if m["step"] != self.step):
            state = {"step": self.step, "model": self.model.state_dict(), "metric": key, "value": values[key]}
            ckpt.save_atomic(state, self.out_dir / ckpt.BEST)

    # ---------------------------------------------------------------- the loop's hooks
    unit = "pairs"
    rate_key = "pairs_per_s"
    averaged = ("loss", "pos", "hardest_neg")

    def start_epoch(self, epoch: int, start_batch: int, log) -> float:
        """Mine fresh neighbours when the epoch starts a refresh, then set its batches."""
        pause = 0.0
        refresh = self.refresh_epoch(epoch)
        if refresh is not None and self.mined_epoch != refresh:
            self._check_finite()  # never save (or mine with) weights a NaN step has touched
            t0 = time.perf_counter()
            self.mine(log)
            self.mined_epoch = refresh
            self._save_good()
            pause = time.perf_counter() - t0
        self.batch_sampler.set_batches(self.epoch_batches(epoch), start_batch)
        return pause

    def train_batch(self, batch, diagnose: bool) -> dict:
        pano, sat, _, _ = to_device(batch, self.device)
        return self.train_step(pano, sat)

    def step_scalars(self, out: dict) -> dict:
        scalars = {"train/logit_scale": float(out["scale"])}
        if "m2mix_lambda" in out:  # m²-mix on: its draw, its weight and the hardest mix per panorama
            scalars.update(
                {
                    "train/m2mix_lambda": float(out["m2mix_lambda"]),
                    "train/m2mix_weight": out["m2mix_weight"],
                    "train/hardest_mix_cos": float(out["hardest_mix"].mean()),
                }
            )
        return scalars

    def histograms(self, log, out: dict) -> None:
        log.histogram("scores/positive", out["pos"], self.step)
        log.histogram("scores/hardest_negative", out["hardest_neg"], self.step)

    def final(self) -> dict:
        last = {k: v for k, v in self.metrics[-1].items() if k not in ("epoch", "step")} if self.metrics else None
        return {"recall": last}
