"""MoCo training loop: device views, AMP, warm-up + cosine SGD, momentum encoder, queue or
memory bank, hard-negative strategies, atomic checkpoints with exact resume, TensorBoard,
tqdm, kNN monitor."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from vissl_neg.augment import EvalTransform, ViewAugment
from vissl_neg.config import Config, build_strategies, config_from_dict, to_dict
from vissl_neg.data import ResumableBatchSampler, build_dataset, make_loader, to_device
from vissl_neg.engine import checkpoint as ckpt
from vissl_neg.engine import distributed as dist
from vissl_neg.engine.base import TrainerBase
from vissl_neg.engine.device import resolve_amp, resolve_device, seed_everything, use_fused
from vissl_neg.engine.distributed import concat_all_gather
from vissl_neg.engine.run_dir import install_stop_handlers, open_run_dir, restore_handlers
from vissl_neg.engine.schedule import warmup_cosine
from vissl_neg.errors import ConfigError
from vissl_neg.eval import extract_features, knn_top1
from vissl_neg.losses import (
    debiased_clamped_from_similarities,
    debiased_from_similarities,
    false_negative_from_similarities,
    info_nce_from_similarities,
    tau_plus_below_half,
)
from vissl_neg.models import MoCo, build_encoder, count_batch_norms, momentum_at
from vissl_neg.negatives import FalseNegatives, NegativeSet
from vissl_neg.negatives.diagnostics import false_negative_rate, same_class_rate, synthetic_harder_fraction


class Trainer(TrainerBase):
    """Build with a validated :class:`Config`; ``fit()`` trains (resuming if the run
    directory holds a checkpoint) and returns the final metrics."""

    def __init__(self, cfg: Config, resume: bool | None = None):
        self.cfg = cfg
        self.out_dir = Path(cfg.train.out_dir)
        self.device = resolve_device(cfg.train.device)
        if dist.init_from_env(self.device.type) and self.device.type == "cuda":
            self.device = torch.device("cuda", torch.cuda.current_device())  # torchrun's LOCAL_RANK
        self.amp_dtype = resolve_amp(cfg.train.amp, self.device)
        self.stop_signal: str | None = None
        self.is_main = dist.is_main()

        self.train_set = build_dataset(cfg.data, "train")
        self.test_set = build_dataset(cfg.data, "test") if cfg.eval.knn_every >= 0 else None
        global_batch = cfg.optim.batch_size
        if global_batch > len(self.train_set):
            raise ConfigError(
                f"optim.batch_size={global_batch} is larger than the training set ({len(self.train_set)} images)"
            )
        if global_batch % dist.world_size():
            raise ConfigError(f"optim.batch_size={global_batch} must be divisible by the {dist.world_size()} processes")
        self.sampler = ResumableBatchSampler(
            len(self.train_set), global_batch // dist.world_size(), cfg.train.seed, dist.rank(), dist.world_size()
        )
        self.steps_per_epoch = self.sampler.batches_per_epoch()
        self.total_steps = cfg.train.epochs * self.steps_per_epoch

        seed_everything(cfg.train.seed)
        in_chans = self.train_set.in_chans
        self.augment = ViewAugment(cfg.augment, in_chans).to(self.device)
        self.eval_transform = EvalTransform(cfg.augment, in_chans).to(self.device)
        self.notes: list[str] = []
        shuffle_bn = cfg.model.shuffle_bn
        if shuffle_bn == "auto":
            shuffle_bn = "ddp" if dist.world_size() > 1 else "split"
        if shuffle_bn == "ddp" and dist.world_size() == 1:
            raise ConfigError("model.shuffle_bn=ddp needs several processes (torchrun); use split on one process")
        encoder = build_encoder(cfg.model, in_chans, cfg.augment.size)
        n_bn = count_batch_norms(encoder.backbone)
        if n_bn == 0 and cfg.model.shuffle_bn in ("auto", "split"):
            shuffle_bn = "none"
            self.notes.append(f"'{cfg.model.backbone}' has no BatchNorm, so there are no batch statistics to leak; "
                              f"model.shuffle_bn={cfg.model.shuffle_bn} is skipped")
        neg = cfg.negatives
        bank_items = len(self.train_set) if neg.source == "memory_bank" else 0
        if bank_items and neg.size >= bank_items:
            raise ConfigError(f"negatives.size={neg.size} must be below the {bank_items} training images of the memory bank")
        self.model = MoCo(encoder, neg.size, shuffle_bn, cfg.model.bn_splits, bank_items, neg.bank_momentum,
                          neg.bank_dtype).to(self.device)
        if shuffle_bn == "split" and self.model.split_bn_layers < n_bn:
            self.notes.append(f"split shuffle-BN covers {self.model.split_bn_layers} of the {n_bn} BatchNorm layers "
                              f"of '{cfg.model.backbone}'; the others keep whole-batch statistics")
        self.strategies = build_strategies(neg.strategies, neg.size)
        self.cancel_mode = next((s.mode for s in self.strategies if isinstance(s, FalseNegatives)), None)
        self.clamp_checked = False
        if dist.world_size() > 1:  # same initial weights everywhere; each rank its own views
            seed_everything(cfg.train.seed + 7919 * dist.rank())
        if cfg.loss.name == "debiased":
            self.loss_fn = functools.partial(debiased_from_similarities, temperature=cfg.loss.temperature,
                                             tau_plus=cfg.loss.tau_plus, beta=cfg.loss.beta)
        else:
            self.loss_fn = functools.partial(info_nce_from_similarities, temperature=cfg.loss.temperature)
        if cfg.model.channels_last and not self._compiles():
            self.model.to(memory_format=torch.channels_last)
        self.query_encoder = self.model.encoder_q
        if dist.is_dist():
            self.query_encoder = DDP(self.model.encoder_q, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.loader_set, self.decoder = self.train_set, None
        if cfg.data.decode_on == "device":
            from vissl_neg.data.device_decode import DeviceJpegDecoder

            self.loader_set = self.train_set.encoded_view()
            self.decoder = DeviceJpegDecoder(self.train_set, cfg.data.decode_size, self.device)
            if self.device.type != "cuda":
                self.notes.append("data.decode_on=device decodes JPEGs with libjpeg-turbo in the main process here "
                                  "(nvJPEG needs CUDA); data.decode_on=workers spreads that over the loader workers")
        self.query_encoder = self._cuda_options(self.query_encoder, "the query encoder")
        o = cfg.optim
        self.base_lr = o.lr * (o.batch_size / o.base_batch if o.lr_scaling == "linear" else 1.0)
        self.optimizer = torch.optim.SGD(
            self.model.encoder_q.parameters(),
            lr=self.base_lr,
            momentum=cfg.optim.momentum,
            weight_decay=cfg.optim.weight_decay,
        )
        use_fused(self.optimizer, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.warmup_steps = round(cfg.optim.warmup_epochs * self.steps_per_epoch)
        self.step = 0
        self.metrics: list[dict] = []
        self.train_seconds = 0.0
        self.resumed_from: int | None = None
        self.last_scalars: dict = {}
        self._prepare_run_dir(resume)

    # ---------------------------------------------------------------- run directory
    def _prepare_run_dir(self, resume: bool | None) -> None:
        state = open_run_dir(self.cfg, resume, dist.is_main())
        if state is not None:
            self._restore(state)

    def _state(self) -> dict:
        rng = dist.all_gather_object(ckpt.rng_state())
        return {
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "batch_in_epoch": self.step % self.steps_per_epoch,
            "config": to_dict(self.cfg),
            "in_chans": self.train_set.in_chans,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng[0],
            "rng_per_rank": rng,
            "metrics": self.metrics,
            "train_seconds": self.train_seconds,
        }

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        use_fused(self.optimizer, self.device)
        self.scaler.load_state_dict(state["scaler"])
        per_rank = state.get("rng_per_rank", [state["rng"]])
        if len(per_rank) != dist.world_size() and dist.is_main():
            print(f"note: '{self.ckpt_path}' was written by {len(per_rank)} processes, resumed on "
                  f"{dist.world_size()}: same sample order, but the random views differ from an uninterrupted run",
                  flush=True)
        ckpt.set_rng_state(per_rank[dist.rank() % len(per_rank)])
        self.step = state["step"]
        self.metrics = state["metrics"]
        self.train_seconds = state.get("train_seconds", 0.0)
        self.resumed_from = self.step

    def save(self) -> None:
        state = self._state()  # every rank takes part in gathering the RNG states
        if dist.is_main():
            ckpt.save_atomic(state, self.ckpt_path)

    # ---------------------------------------------------------------- training
    def _views(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v1, v2 = self.augment(images), self.augment(images)
        if self.cfg.model.channels_last:
            v1 = v1.contiguous(memory_format=torch.channels_last)
            v2 = v2.contiguous(memory_format=torch.channels_last)
        return v1, v2

    def negative_set(self, q: torch.Tensor, k: torch.Tensor, indices: torch.Tensor) -> NegativeSet:
        """The step's negatives after every strategy active in the current epoch."""
        if self.model.bank is not None:
            bank = self.model.bank
            negs = NegativeSet(q, k, bank.bank, bank.labels, bank.sample(indices, self.cfg.negatives.size))
        else:
            negs = NegativeSet(q, k, self.model.queue.keys, self.model.queue.labels)
        for strategy in self.strategies:
            if self.step >= strategy.start_epoch * self.steps_per_epoch:
                negs = strategy(negs)
        return negs

    def contrast(self, q: torch.Tensor, k: torch.Tensor, indices: torch.Tensor):
        """-> (loss, negative set, pos (B,), real (B, K), synthetic (B, S) or None)."""
        negs = self.negative_set(q, k, indices)
        pos = (negs.q * negs.k).sum(dim=1)
        real = negs.real_similarities()
        syn = negs.synthetic_similarities()
        sims = real if syn is None else torch.cat([real, syn], dim=1)
        if negs.suspected is None:
            loss = self.loss_fn(pos, sims)
        else:  # false negative cancellation; synthetic negatives are never suspected
            marks = negs.suspected
            if syn is not None:
                marks = torch.cat([marks, torch.zeros_like(syn, dtype=torch.bool)], dim=1)
            loss = false_negative_from_similarities(pos, sims, self.cfg.loss.temperature, marks, self.cancel_mode)
        return loss, negs, pos, real, syn

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor | None = None,
                   diagnose: bool = False) -> dict[str, torch.Tensor]:
        """One MoCo step on a uint8 batch already on the device. ``indices`` address the
        memory bank; ``labels`` feed only the diagnostics. Returns detached device tensors
        (no host sync): loss, pos (B,), neg (B, K) real, syn (B, S) or None, and with
        ``diagnose`` the false-negative rate and the synthetic-harder fraction."""
        cfg = self.cfg
        lr = warmup_cosine(self.step, self.total_steps, self.warmup_steps, self.base_lr, cfg.optim.min_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        m = momentum_at(cfg.model.momentum, self.step, self.total_steps, cfg.model.momentum_schedule)
        if indices is None:
            indices = torch.arange(images.shape[0], device=images.device)
        v1, v2 = self._views(images)
        with self._autocast():
            q = self.query_encoder(v1)
            self.model.update_key_encoder(m)
            k = self.model.keys(v2)
            if cfg.loss.dual_view:
                q2 = self.query_encoder(v2)
                k1 = self.model.keys(v1)
        loss, negs, pos, real, syn = self.contrast(q, k, indices)
        if cfg.loss.dual_view:
            loss = 0.5 * (loss + self.contrast(q2, k1, indices)[0])
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        out = {"loss": loss.detach(), "pos": pos.detach(), "neg": real.detach(),
               "syn": None if syn is None else syn.detach(), "lr": lr, "momentum": m}
        if diagnose:
            out.update(self._diagnostics(negs, real.detach(), out["syn"], labels))
        self._update_negatives(k, k1 if cfg.loss.dual_view else None, labels, indices)
        self.step += 1
        return out

    @torch.no_grad()
    def _update_negatives(self, k: torch.Tensor, k1: torch.Tensor | None, labels: torch.Tensor,
                          indices: torch.Tensor) -> None:
        """Enqueue the keys of every rank (both views' keys with the dual-view loss), or
        write them into the memory bank rows of their images."""
        if self.model.bank is not None:
            feats = k if k1 is None else torch.nn.functional.normalize(k + k1, dim=1)
            self.model.bank.update(concat_all_gather(indices), concat_all_gather(feats), concat_all_gather(labels))
            return
        if k1 is not None:
            k, labels = torch.cat([k, k1]), torch.cat([labels, labels])
        self.model.queue.enqueue(concat_all_gather(k), concat_all_gather(labels))

    def _diagnostics(self, negs: NegativeSet, real: torch.Tensor, syn: torch.Tensor | None,
                     labels: torch.Tensor) -> dict[str, torch.Tensor]:
        neg_labels = negs.real_labels()
        top = self.cfg.negatives.diag_top
        out = {"fnr": false_negative_rate(real, neg_labels, labels, top),
               "fnr_chance": same_class_rate(neg_labels, labels)}
        if syn is not None:
            out["syn_harder"] = synthetic_harder_fraction(real, syn)
        if self.cfg.loss.name == "debiased":
            l = self.cfg.loss
            pos = (negs.q * negs.k).sum(dim=1).detach()
            sims = real if syn is None else torch.cat([real, syn], dim=1)
            out["debiased_clamped"] = debiased_clamped_from_similarities(pos, sims, l.temperature, l.tau_plus, l.beta)
        return out

    def _note_clamp(self, log, fraction: float | None, out: dict) -> None:
        """At the first log step: a note when the debiased loss clamps most queries' Ng, with
        the τ⁺ that keeps fewer than half clamped on this batch at this queue size."""
        if self.clamp_checked or fraction is None:
            return
        self.clamp_checked = True
        if fraction <= 0.5 or not self.is_main:
            return
        l = self.cfg.loss
        sims = out["neg"] if out["syn"] is None else torch.cat([out["neg"], out["syn"]], dim=1)
        below = tau_plus_below_half(out["pos"], sims, l.temperature, l.beta)
        log.info(f"note: the debiased loss clamps Ng to N·e^(-1/T) for {100 * fraction:.0f}% of the queries at "
                 f"loss.tau_plus={l.tau_plus} with {sims.shape[1]} negatives per query (its τ⁺ correction then does "
                 f"nothing); on this batch loss.tau_plus below {below:.3g} keeps fewer than half clamped")

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

    def evaluate_knn(self) -> float:
        backbone = self.model.encoder_q.backbone
        cl = self.cfg.model.channels_last
        bs = self.cfg.eval.batch_size
        train_f, train_y = extract_features(backbone, self.train_set, self.eval_transform, self.device, bs, cl)
        test_f, test_y = extract_features(backbone, self.test_set, self.eval_transform, self.device, bs, cl)
        e = self.cfg.eval
        return knn_top1(train_f, train_y, test_f, test_y, e.knn_k, e.knn_temperature, e.chunk_size)

    def fit(self) -> dict:
        cfg = self.cfg
        log = self._open_log("images")
        previous = install_stop_handlers(self._on_signal)
        self.model.train()
        self._start_watch()
        acc = {"loss": torch.zeros((), device=self.device), "pos": torch.zeros((), device=self.device),
               "neg": torch.zeros((), device=self.device), "n": 0}
        t_last, step_last = time.perf_counter(), self.step
        stop_at = min(self.total_steps, cfg.train.max_steps or self.total_steps)
        try:
            d = cfg.data
            loader = make_loader(self.loader_set, self.sampler, d.num_workers, d.pin_memory, seed=cfg.train.seed,
                                 prefetch_factor=d.prefetch_factor, persistent_workers=d.persistent_workers)
            stopped = False
            while self.step < stop_at and not stopped:
                epoch, start_batch = divmod(self.step, self.steps_per_epoch)
                self.sampler.set_epoch(epoch, start_batch)
                for batch in loader:
                    images, labels, indices = to_device(batch, self.device)
                    if self.decoder is not None:
                        images = self.decoder(images, indices)
                    diagnose = (self.step + 1) % cfg.train.log_every == 0 or self.step + 1 == stop_at
                    out = self.train_step(images, labels, indices, diagnose)
                    self._watch_loss(out["loss"])
                    acc["loss"] += out["loss"]
                    acc["pos"] += out["pos"].mean()
                    acc["neg"] += out["neg"].mean()
                    acc["n"] += 1
                    log.advance(1)
                    at_end = self.step >= stop_at
                    if self.step % cfg.train.log_every == 0 or at_end:
                        self._check_finite()
                        now = time.perf_counter()
                        ips = (self.step - step_last) * cfg.optim.batch_size / max(now - t_last, 1e-9)
                        self.train_seconds += now - t_last
                        t_last, step_last = now, self.step
                        means = dist.all_reduce_mean(torch.stack([acc["loss"], acc["pos"], acc["neg"]]) / acc["n"])
                        loss_mean, pos_mean, neg_mean = means.tolist()
                        scalars = {"train/loss": loss_mean, "train/lr": out["lr"],
                                   "train/img_per_s": ips, "train/momentum": out["momentum"],
                                   "train/pos_cos": pos_mean, "train/neg_cos": neg_mean}
                        for key, tag in (("fnr", f"negatives/false_negative_rate@{cfg.negatives.diag_top}"),
                                         ("fnr_chance", "negatives/same_class_rate"),
                                         ("syn_harder", "negatives/synthetic_harder_than_hardest_real"),
                                         ("debiased_clamped", "loss/debiased_clamped_fraction")):
                            if key in out:
                                scalars[tag] = dist.all_reduce_mean(out[key].float()).item()
                        skipped = getattr(self.train_set, "skipped", None)
                        if skipped is not None and skipped.value:
                            scalars["data/skipped_images"] = float(skipped.value)
                        log.scalars(scalars, self.step)
                        self._note_clamp(log, scalars.get("loss/debiased_clamped_fraction"), out)
                        self.last_scalars = scalars
                        log.postfix(loss=f"{scalars['train/loss']:.3f}", lr=f"{out['lr']:.3g}", img_s=f"{ips:.0f}")
                        for key in ("loss", "pos", "neg"):
                            acc[key].zero_()
                        acc["n"] = 0
                    if self.step % cfg.train.hist_every == 0:
                        log.histogram("scores/positive", out["pos"], self.step)
                        log.histogram("scores/negative", out["neg"][:16].flatten(), self.step)
                        if out["syn"] is not None:
                            log.histogram("scores/synthetic", out["syn"][:16].flatten(), self.step)
                    stopping = self._agree_stop(self.step % cfg.train.log_every == 0 or at_end)
                    if self.step % cfg.train.ckpt_every == 0 or at_end or stopping:
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
        final = {"knn_top1": self.metrics[-1]["knn_top1"] if self.metrics else None}
        return self._finish(log, "img_per_s", final)

    @property
    def eval_every(self) -> int:
        return self.cfg.eval.knn_every

    def evaluate_metrics(self) -> dict:
        return {"knn_top1": self.evaluate_knn()}

    def describe_metrics(self, values: dict) -> str:
        return f"kNN top-1 {values['knn_top1']:.2f}%"


def build_trainer(values: dict, resume: bool | None = None) -> Trainer:
    return Trainer(config_from_dict(values), resume)
