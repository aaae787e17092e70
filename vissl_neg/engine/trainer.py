"""The MoCo family as a task of the one training loop (``engine/base.py``): device views, AMP,
warm-up + cosine SGD or AdamW, momentum encoder (+ MoCo v3's predictor), a negative source
(queue, memory bank, the batch's keys), hard-negative strategies and a registered loss,
atomic checkpoints with exact resume, TensorBoard, tqdm, kNN monitor."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from vissl_neg.augment import EvalTransform, ViewAugment, second_view
from vissl_neg.config import Config, build_strategies, config_from_dict, to_dict
from vissl_neg.config.schema import check_grad_cache_chunk
from vissl_neg.data import ResumableBatchSampler, build_dataset, to_device
from vissl_neg.engine.base import TrainerBase
from vissl_neg.engine.run_dir import open_run_dir
from vissl_neg.engine.schedule import warmup_cosine
from vissl_neg.errors import ConfigError
from vissl_neg.eval import extract_features, knn_top1
from vissl_neg.models import MoCo, QueryHead, build_encoder, build_predictor, count_batch_norms, momentum_at
from vissl_neg.negatives import SOURCES, NegativeSet
from vissl_neg.negatives.diagnostics import false_negative_rate, same_class_rate, synthetic_harder_fraction
from vissl_neg.negatives.functional import contrast
from vissl_neg.runtime import checkpoint as ckpt
from vissl_neg.runtime import distributed as dist
from vissl_neg.runtime.device import resolve_amp, resolve_device, seed_everything, use_fused
from vissl_neg.runtime.grad_cache import GradCache


def sync_batch_norms(model: torch.nn.Module, world_size: int, device_type: str) -> tuple[torch.nn.Module, str | None]:
    """``model.sync_bn``: under DDP on CUDA every BatchNorm of the model (both encoders' heads, the
    predictor, any backbone BN) becomes a SyncBatchNorm over the global batch, as MoCo v3 converts its
    whole model (moco-v3 main_moco.py:195-196) -> (model, a note or None). One process: nothing to sync."""
    if world_size <= 1:
        return model, None
    if device_type != "cuda":  # torch's SyncBatchNorm runs on GPUs only
        return model, (
            "model.sync_bn needs CUDA (torch's SyncBatchNorm); each process keeps its own BatchNorm statistics here"
        )
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model), None


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
        self.chunk = cfg.train.grad_cache_chunk
        per_rank = global_batch // dist.world_size()
        check_grad_cache_chunk(self.chunk, global_batch, dist.world_size())
        self.whole_image_crops = cfg.data.whole_image_crops and hasattr(self.train_set, "cropped_view")
        self.sampler = ResumableBatchSampler(
            len(self.train_set),
            per_rank,
            cfg.train.seed,
            dist.rank(),
            dist.world_size(),
            keyed=self.whole_image_crops,
        )
        self.steps_per_epoch = self.sampler.batches_per_epoch()
        self.total_steps = cfg.train.epochs * self.steps_per_epoch

        seed_everything(cfg.train.seed)
        in_chans = self.train_set.in_chans
        self.augment = ViewAugment(cfg.augment, in_chans).to(self.device)
        # the second view's own values (BYOL / MoCo v3's asymmetric views), else the same pipeline
        self.augment2 = (
            ViewAugment(second_view(cfg.augment), in_chans).to(self.device) if cfg.augment.view2 else self.augment
        )
        self.eval_transform = EvalTransform(cfg.augment, in_chans).to(self.device)
        self.notes: list[str] = []
        shuffle_bn = cfg.model.shuffle_bn
        if shuffle_bn == "auto":
            shuffle_bn = "none" if cfg.model.sync_bn else "ddp" if dist.world_size() > 1 else "split"
        if shuffle_bn == "ddp" and dist.world_size() == 1:
            raise ConfigError("model.shuffle_bn=ddp needs several processes (torchrun); use split on one process")
        encoder = build_encoder(cfg.model, in_chans, cfg.augment.size)
        n_bn = count_batch_norms(encoder.backbone)
        if n_bn == 0 and cfg.model.shuffle_bn in ("auto", "split"):
            shuffle_bn = "none"
            self.notes.append(
                f"'{cfg.model.backbone}' has no BatchNorm, so there are no batch statistics to leak; "
                f"model.shuffle_bn={cfg.model.shuffle_bn} is skipped"
            )
        if self.chunk and shuffle_bn == "split" and self.chunk % cfg.model.bn_splits:
            raise ConfigError(
                f"train.grad_cache_chunk={self.chunk} must be divisible by model.bn_splits={cfg.model.bn_splits}: "
                f"split shuffle-BN divides each chunk of '{cfg.model.backbone}' into groups (or use model.shuffle_bn=none)"
            )
        neg = cfg.negatives
        source_cls = SOURCES[neg.source]
        source = source_cls.from_config(neg, cfg.model.dim, len(self.train_set), global_batch)
        self.model = MoCo(
            encoder, source, shuffle_bn, cfg.model.bn_splits, build_predictor(cfg.model), cfg.model.split_bn_impl
        ).to(self.device)
        if shuffle_bn == "split" and self.model.split_bn_layers < n_bn:
            self.notes.append(
                f"split shuffle-BN covers {self.model.split_bn_layers} of the {n_bn} BatchNorm layers "
                f"of '{cfg.model.backbone}'; the others keep whole-batch statistics"
            )
        if cfg.model.sync_bn:
            self.model, note = sync_batch_norms(self.model, dist.world_size(), self.device.type)
            self.notes += [note] if note else []
        self.strategies = build_strategies(
            neg.strategies, source_cls.available(neg, global_batch), cfg.loss.temperature
        )
        self.first_log_done = False
        if dist.world_size() > 1:  # same initial weights everywhere; each rank its own views
            seed_everything(cfg.train.seed + 7919 * dist.rank())
        self.loss = cfg.loss
        if cfg.model.channels_last and not self._compiles():
            self.model.to(memory_format=torch.channels_last)
        self.query_encoder = self.model.query_module()
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        if self.chunk:  # gradient caching at the backbone output; the heads run on the whole batch
            self.notes.append(self._grad_cache_note(encoder.backbone, cfg.model.backbone, self.chunk, per_rank))
            self.cached_backbone: torch.nn.Module = self.model.encoder_q.backbone
            self.query_head: torch.nn.Module = QueryHead(self.model.encoder_q.head, self.model.predictor)
            if dist.is_dist():  # apart: the backbone all-reduces in its last replay, the heads in the loss's backward
                self.cached_backbone = DDP(self.cached_backbone, device_ids=device_ids)
                self.query_head = DDP(self.query_head, device_ids=device_ids)
            self.cached_backbone = self._cuda_options(self.cached_backbone, "the query backbone")
        elif dist.is_dist():
            self.query_encoder = DDP(self.query_encoder, device_ids=device_ids)
        self.loader_set, self.decoder, self.batch_sampler = self.train_set, None, self.sampler
        if self.whole_image_crops:  # each view's box over the whole image, cut in the loader workers
            views = (cfg.augment, second_view(cfg.augment))
            self.loader_set = self.train_set.cropped_view(
                [(a.crop_scale, a.crop_ratio) for a in views], cfg.augment.size
            )
        if cfg.data.decodes_on_device:
            from vissl_neg.data.device_decode import DeviceJpegDecoder

            self.loader_set = self.loader_set.encoded_view()
            self.decoder = DeviceJpegDecoder(self.train_set, cfg.data.decode_size, self.device)
            if self.device.type != "cuda":
                self.notes.append(
                    "data.decode_on=device decodes JPEGs with libjpeg-turbo in the main process here "
                    "(nvJPEG needs CUDA); data.decode_on=workers spreads that over the loader workers"
                )
        if not self.chunk:
            self.query_encoder = self._cuda_options(self.query_encoder, "the query encoder")
        o = cfg.optim
        self.base_lr = o.lr * (o.batch_size / o.base_batch if o.lr_scaling == "linear" else 1.0)
        params = [p for p in self.model.parameters() if p.requires_grad]  # encoder_q (+ predictor)
        if o.name == "adamw":
            self.optimizer = torch.optim.AdamW(params, lr=self.base_lr, weight_decay=o.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(params, lr=self.base_lr, momentum=o.momentum, weight_decay=o.weight_decay)
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
            print(
                f"note: '{self.ckpt_path}' was written by {len(per_rank)} processes, resumed on "
                f"{dist.world_size()}: same sample order, but the random views differ from an uninterrupted run",
                flush=True,
            )
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
        if images.dim() == 5:  # (B, 2, C, S, S): the two views, cropped in the loader workers
            v1, v2 = self.augment(images[:, 0], cropped=True), self.augment2(images[:, 1], cropped=True)
        else:
            v1, v2 = self.augment(images), self.augment2(images)
        if self.cfg.model.channels_last:
            v1 = v1.contiguous(memory_format=torch.channels_last)
            v2 = v2.contiguous(memory_format=torch.channels_last)
        return v1, v2

    def _queries(self, views: torch.Tensor, cache: GradCache | None) -> torch.Tensor:
        """Query embeddings (B, D): the query path at once, or with gradient caching the backbone's
        features chunk by chunk without a graph (leaves ``cache`` replays) and the heads on the whole batch."""
        if cache is None:
            return self.query_encoder(views)
        return self.query_head(cache.embed(self.cached_backbone, views, chunk_size=self.chunk))

    def negative_set(
        self, q: torch.Tensor, k: torch.Tensor, indices: torch.Tensor, labels: torch.Tensor | None = None
    ) -> NegativeSet:
        """The step's negatives from the source, after every strategy active in the current epoch."""
        if labels is None:
            labels = torch.full_like(indices, -1)
        negs = self.model.source.negatives(q, k, labels, indices, self.cfg.negatives.size)
        for strategy in self.strategies:
            if self.step >= strategy.start_epoch * self.steps_per_epoch:
                negs = strategy(negs)
        return negs

    def contrast(self, q: torch.Tensor, k: torch.Tensor, indices: torch.Tensor, labels: torch.Tensor | None = None):
        """One direction's loss -> (loss, negative set, pos (B,), real (B, K), synthetic (B, S) or None)."""
        negs = self.negative_set(q, k, indices, labels)
        loss, pos, real, syn = contrast(negs, self.loss)  # the building block users call in their own loop
        return loss, negs, pos, real, syn

    def train_step(
        self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor | None = None, diagnose: bool = False
    ) -> dict[str, torch.Tensor]:
        """One MoCo step on a uint8 batch already on the device. ``indices`` address the
        memory bank; ``labels`` feed only the diagnostics. Returns detached device tensors
        (no host sync): loss, pos (B,), neg (B, K) real, syn (B, S) or None, and with
        ``diagnose`` the diagnostics by TensorBoard tag."""
        cfg = self.cfg
        lr = warmup_cosine(self.step, self.total_steps, self.warmup_steps, self.base_lr, cfg.optim.min_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        m = momentum_at(cfg.model.momentum, self.step, self.total_steps, cfg.model.momentum_schedule)
        if indices is None:
            indices = torch.arange(images.shape[0], device=images.device)
        both = self.loss.both_views
        v1, v2 = self._views(images)
        cache = GradCache(check_ranks=False) if self.chunk else None  # every rank: per-rank batch / chunk chunks
        with self._autocast():
            q = self._queries(v1, cache)
            self.model.update_key_encoder(m)
            k = self.model.keys(v2, self.chunk)
            if both:
                q2 = self._queries(v2, cache)
                k1 = self.model.keys(v1, self.chunk)
        loss, negs, pos, real, syn = self.contrast(q, k, indices, labels)
        if both:  # each view's query against the other view's key, the mean of the two directions
            loss = 0.5 * (loss + self.contrast(q2, k1, indices, labels)[0])
        if self.loss.scale != 1.0:
            loss = loss * self.loss.scale
        self.optimizer.zero_grad(set_to_none=True)
        if cache is None:
            self.scaler.scale(loss).backward()
        else:  # the heads' and the loss's backward, then each backbone chunk's
            cache.backward(self.scaler.scale(loss))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        out = {
            "loss": loss.detach(),
            "pos": pos.detach(),
            "neg": real.detach(),
            "syn": None if syn is None else syn.detach(),
            "lr": lr,
            "momentum": m,
        }
        if diagnose:
            out["diagnostics"] = self._diagnostics(negs, pos.detach(), real.detach(), out["syn"], labels)
        self.model.source.add([k, k1] if both else [k], labels, indices)
        self.step += 1
        return out

    def _diagnostics(
        self, negs: NegativeSet, pos: torch.Tensor, real: torch.Tensor, syn: torch.Tensor | None, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Device scalars by TensorBoard tag: the false-negative rate among the hardest negatives
        and its chance level, the synthetic-harder fraction, and the loss's own."""
        neg_labels = negs.real_labels()
        top = self.cfg.negatives.diag_top
        out = {
            f"negatives/false_negative_rate@{top}": false_negative_rate(real, neg_labels, labels, top),
            "negatives/same_class_rate": same_class_rate(neg_labels, labels),
        }
        if syn is not None:
            out["negatives/synthetic_harder_than_hardest_real"] = synthetic_harder_fraction(real, syn)
        sims = real if syn is None else torch.cat([real, syn], dim=1)
        out.update(self.loss.diagnostics(pos, sims))
        return out

    # ---------------------------------------------------------------- the loop's hooks
    unit = "images"
    rate_key = "img_per_s"
    averaged = ("loss", "pos", "neg")

    def start_epoch(self, epoch: int, start_batch: int, log) -> float:
        self.sampler.set_epoch(epoch, start_batch)
        return 0.0

    def load_images(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A loader batch -> (uint8 images on the device, decoded there with data.decode_on=device;
        (B, 2, C, S, S) views with data.crops=image), labels, indices."""
        images, labels, indices = to_device(batch[:3], self.device)
        if self.decoder is not None:  # batch[3]: the views' boxes (B, 2, 4) with data.crops=image
            images = self.decoder(images, indices, *batch[3:], out=self.cfg.augment.size)
        return images, labels, indices

    def train_batch(self, batch, diagnose: bool) -> dict:
        return self.train_step(*self.load_images(batch), diagnose)

    def step_scalars(self, out: dict) -> dict:
        scalars = {"train/momentum": out["momentum"]}
        for tag, value in out.get("diagnostics", {}).items():
            scalars[tag] = dist.all_reduce_mean(value.float()).item()
        skipped = getattr(self.train_set, "skipped", None)
        if skipped is not None and skipped.value:
            scalars["data/skipped_images"] = float(skipped.value)
        return scalars

    def after_log(self, log, scalars: dict, out: dict) -> None:
        """At the first log step: the loss's note (e.g. the debiased estimator on its clamp)."""
        if self.first_log_done:
            return
        self.first_log_done = True
        sims = out["neg"] if out["syn"] is None else torch.cat([out["neg"], out["syn"]], dim=1)
        note = self.loss.first_log_note(out["pos"], sims, scalars) if self.is_main else None
        if note:
            log.info(f"note: {note}")

    def histograms(self, log, out: dict) -> None:
        log.histogram("scores/positive", out["pos"], self.step)
        log.histogram("scores/negative", out["neg"][:16].flatten(), self.step)
        if out["syn"] is not None:
            log.histogram("scores/synthetic", out["syn"][:16].flatten(), self.step)

    def final(self) -> dict:
        return {"knn_top1": self.metrics[-1]["knn_top1"] if self.metrics else None}

    def evaluate_knn(self) -> float:
        backbone = self.model.encoder_q.backbone
        cl = self.cfg.model.channels_last
        bs = self.cfg.eval.batch_size
        train_f, train_y = extract_features(backbone, self.train_set, self.eval_transform, self.device, bs, cl)
        test_f, test_y = extract_features(backbone, self.test_set, self.eval_transform, self.device, bs, cl)
        e = self.cfg.eval
        return knn_top1(train_f, train_y, test_f, test_y, e.knn_k, e.knn_temperature, e.chunk_size)

    @property
    def eval_every(self) -> int:
        return self.cfg.eval.knn_every

    def evaluate_metrics(self) -> dict:
        return {"knn_top1": self.evaluate_knn()}

    def describe_metrics(self, values: dict) -> str:
        return f"kNN top-1 {values['knn_top1']:.2f}%"


def build_trainer(values: dict, resume: bool | None = None) -> Trainer:
    return Trainer(config_from_dict(values), resume)
