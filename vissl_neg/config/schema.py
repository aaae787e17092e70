"""Typed configuration schema with the defaults of the embedded Fashion-MNIST recipe."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from vissl_neg.data import DataConfig, FashionMNISTData
from vissl_neg.errors import ConfigError
from vissl_neg.losses.contrastive import ContrastiveLoss, InfoNCELoss
from vissl_neg.models.shuffle_bn import SplitBNImpl
from vissl_neg.rules import (
    Bound,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
    UnitFraction,
    choice_problem,
)

# a learning rate as given (none) or scaled with the batch size (linear)
LrScaling = Literal["none", "linear"]


@dataclass
class AugmentConfig:
    """MoCo-v2 views (He et al. 2020; Chen et al. 2020), made batch-wise on the device (augment/ops.py)."""

    size: PositiveInt = 28
    crop_scale: list[float] = field(default_factory=lambda: [0.2, 1.0])
    crop_ratio: list[float] = field(default_factory=lambda: [0.75, 1.3333333])
    flip_p: Probability = 0.5
    jitter_p: Probability = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4  # ignored for 1-channel data
    hue: float = 0.1  # ignored for 1-channel data
    grayscale_p: Probability = 0.2  # ignored for 1-channel data
    blur_p: Probability = 0.5
    blur_kernel: int = 3
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    erase_p: Probability = 0.0
    solarize_p: Probability = 0.0  # BYOL's solarisation (pixels >= 128/255 inverted)
    mean: list[float] = field(default_factory=lambda: [0.2860])
    std: list[float] = field(default_factory=lambda: [0.3530])
    # the second view's own values of keys above, e.g. {blur_p: 0.1, solarize_p: 0.2} (BYOL / MoCo v3's
    # asymmetric views); empty: both views alike. The loader reads them as this section's keys, with
    # their types and rules, except the keys both views share (metadata "shared")
    view2: dict[str, Any] = field(default_factory=dict, metadata={"shared": ("size", "mean", "std", "view2")})

    def check(self) -> None:
        for key in ("crop_scale", "crop_ratio", "blur_sigma"):
            lo_hi = getattr(self, key)
            if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1]:
                raise ValueError(f"{key} must be [low, high] with 0 < low <= high, got {lo_hi}")
        if self.crop_scale[1] > 1.0:
            raise ValueError(f"crop_scale must not exceed 1.0, got {self.crop_scale}")
        if self.blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be odd, got {self.blur_kernel}")
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ConfigError("config keys 'augment.mean' and 'augment.std' must have one entry per channel, std > 0")


@dataclass
class ModelConfig:
    backbone: str = "resnet10t"
    small_stem: bool = False  # first conv stride 1 and no max-pool, for 28x28 / 32x32 inputs
    # patch-embedding models (ViT, Swin, ConvNeXt, ...): timm's patch_size; 0 = the model's own
    patch_size: NonNegativeInt = 0
    num_heads: NonNegativeInt = 0  # ViTs: timm's num_heads; 0 = the model's own (MoCo v3's ViT-S: 12, timm's/DeiT's: 6)
    # ViTs: learn (timm's) | sincos (MoCo v3's fixed 2-D sin-cos, not trained)
    pos_embed: Literal["learn", "sincos"] = "learn"
    # ViTs: timm | mocov3 (xavier-uniform, Q/K/V apart, zero biases; moco-v3 vits.py)
    vit_init: Literal["timm", "mocov3"] = "timm"
    # residual networks: the last BN scale of each block starts at 0 (true) or 1 (false: torchvision's resnet50(),
    # MoCo v2); null: the architecture's own timm default (0 for ResNet, 1 for ResNetV2)
    zero_init_last: bool | None = None
    head_hidden: NonNegativeInt = 512  # 0 = the backbone's feature width
    # Linear layers of the projection head (MoCo v3: 3 for ViTs, 2 for ResNets)
    head_layers: Annotated[int, Bound(2)] = 2
    head_bn: bool = False  # BN in the projection head and after its output (MoCo v3's projector)
    predictor_hidden: int = 0  # > 0: MoCo v3's prediction head (dim -> hidden -> dim) on the query side
    predictor_last_bn: bool = False  # BN without affine after the predictor's output (MoCo v3's ViT predictor)
    sync_bn: bool = False  # under DDP on CUDA, every BN of the model uses the global batch (MoCo v3's SyncBN)
    freeze_patch_embed: bool = False  # ViTs: keep the random patch projection (MoCo v3)
    dim: PositiveInt = 128
    momentum: UnitFraction = 0.99
    momentum_schedule: Literal["fixed", "cosine"] = "cosine"
    # auto: ddp under DDP, else split | ddp: keys shuffled across ranks | split: bn_splits BN groups | none
    shuffle_bn: Literal["auto", "ddp", "split", "none"] = "auto"
    bn_splits: PositiveInt = 8
    # auto: fused on CUDA with channels_last, else per_group
    split_bn_impl: SplitBNImpl = "auto"
    channels_last: bool = False


@dataclass
class NegativesConfig:
    """``source``: queue (MoCo ring buffer of ``size`` keys), memory_bank (one row per
    training image; ``size`` negatives drawn per query) or batch (the other keys of the global
    batch, SimCLR / MoCo v3; ``size`` unused). ``strategies`` apply in order,
    e.g. ``[{name: filter, keep: 2048}, {name: mochi, n_hard: 1024, s: 1024, s_prime: 512}]``."""

    source: str = "queue"  # a key of vissl_neg.negatives.SOURCES: queue | memory_bank | batch
    size: PositiveInt = 4096
    strategies: list[dict[str, Any]] = field(default_factory=list)  # built and checked by build_strategies
    bank_momentum: UnitFraction = 0.5  # memory_bank row update: m * old + (1 - m) * new (Wu et al. 2018)
    bank_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    diag_top: PositiveInt = 64  # false-negative rate among each query's diag_top hardest negatives

    def check(self) -> None:
        from vissl_neg.negatives import SOURCES

        problem = choice_problem(self.source, SOURCES)
        if problem:
            raise ValueError(f"source {problem}")


@dataclass
class OptimConfig:
    name: Literal["sgd", "adamw"] = "sgd"
    lr: PositiveFloat = 0.06
    momentum: float = 0.9
    weight_decay: NonNegativeFloat = 5e-4
    batch_size: PositiveInt = 256
    warmup_epochs: NonNegativeFloat = 1.0
    min_lr: NonNegativeFloat = 0.0
    lr_scaling: LrScaling = "none"  # linear: lr * batch_size / base_batch (Goyal et al. 2017)
    base_batch: PositiveInt = 256


@dataclass
class TrainConfig:
    epochs: PositiveInt = 3
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    compile: bool = False  # torch.compile the query encoder (CUDA only; eager elsewhere, with a note)
    cudnn_benchmark: bool = True  # CUDA: let cuDNN pick the fastest kernels for the fixed input size
    deterministic: bool = False  # deterministic kernels (cuDNN, cuBLAS, index ops): a resumed CUDA run repeats exactly
    out_dir: str = "runs/fmnist_moco"
    ckpt_every: PositiveInt = 100  # steps
    log_every: PositiveInt = 20  # steps
    hist_every: PositiveInt = 200  # steps
    progress: bool = True
    report: bool = True  # draw RUN_DIR/report.png from the TensorBoard logs when the run ends
    max_steps: NonNegativeInt = 0  # stop after this many steps in total (0 = all epochs); for tests
    # gradient caching (Gao et al. 2021): > 0 runs the trained encoder on chunks of this many samples per
    # process while the loss sees the whole batch; for in-batch negatives (negatives.source=batch, the
    # cross-view task); must divide the batch of each process; 0 = off
    grad_cache_chunk: NonNegativeInt = 0

    def check(self) -> None:
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N; got '{self.device}'")


@dataclass
class EvalConfig:
    knn_every: int = 2  # epochs; 0 = only at the end; -1 = never
    knn_k: PositiveInt = 200
    knn_temperature: PositiveFloat = 0.1
    chunk_size: PositiveInt = 1024
    batch_size: PositiveInt = 1024
    # lbfgs: logistic regression on cached centre-crop features | sgd: the papers'
    linear_protocol: Literal["lbfgs", "sgd"] = "lbfgs"
    linear_lr: PositiveFloat = 30.0  # sgd protocol (MoCo: 30, no weight decay)
    linear_epochs: PositiveInt = 100
    linear_batch_size: PositiveInt = 256
    linear_weight_decay: float = 0.0
    linear_milestones: list[int] = field(
        default_factory=lambda: [60, 80]
    )  # linear_schedule=steps: lr x0.1 at these epochs
    linear_schedule: Literal["steps", "cosine"] = "steps"  # steps (MoCo v1/v2) | cosine per epoch (MoCo v3)
    linear_lr_scaling: LrScaling = "none"  # linear: linear_lr x linear_batch_size / 256 (MoCo v3)


@dataclass
class Config:
    data: DataConfig = field(default_factory=FashionMNISTData)  # data.name picks the class (DATASETS)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    negatives: NegativesConfig = field(default_factory=NegativesConfig)
    loss: ContrastiveLoss = field(default_factory=InfoNCELoss)  # loss.name picks the class (LOSSES)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def check(self) -> None:
        """The rules that span sections (each section has checked its own keys)."""
        from vissl_neg.config.strategies import build_strategies
        from vissl_neg.negatives import SOURCES, FalseNegatives

        model, negatives = self.model, self.negatives
        if model.sync_bn and model.shuffle_bn in ("ddp", "split"):
            raise ConfigError(
                f"model.sync_bn=true shares BN statistics over the ranks, which model.shuffle_bn="
                f"{model.shuffle_bn} keeps apart; use model.shuffle_bn=none (or auto)"
            )
        available = SOURCES[negatives.source].available(negatives, self.optim.batch_size)
        strategies = build_strategies(negatives.strategies, available if available > 0 else None, self.loss.temperature)
        if not self.loss.cancels_false_negatives and any(isinstance(s, FalseNegatives) for s in strategies):
            raise ConfigError(
                f"loss.name={self.loss.name} with a false_negatives strategy is not supported: the "
                "false-negative loss replaces the loss (use loss.name=info_nce)"
            )
        if model.shuffle_bn in ("auto", "split") and self.optim.batch_size % model.bn_splits:
            raise ConfigError(
                f"optim.batch_size={self.optim.batch_size} must be divisible by model.bn_splits={model.bn_splits} "
                "for split shuffle-BN"
            )
        chunk = self.train.grad_cache_chunk
        if chunk and negatives.source != "batch":
            raise ConfigError(
                f"train.grad_cache_chunk={chunk} caches in-batch negatives; negatives.source={negatives.source} "
                "takes its negatives from outside the batch (use train.grad_cache_chunk=0, or negatives.source=batch)"
            )
        check_grad_cache_chunk(chunk, self.optim.batch_size)


def check_grad_cache_chunk(chunk: int, batch_size: int, processes: int = 1) -> None:
    """train.grad_cache_chunk must divide the batch of each process (every rank runs as many chunks)."""
    if chunk and (batch_size % processes or (batch_size // processes) % chunk):
        where = f"optim.batch_size={batch_size}" + (f" over {processes} processes" if processes > 1 else "")
        raise ConfigError(f"train.grad_cache_chunk={chunk} must divide the batch of each process ({where})")


# Keys that may change between a run and its resumption: they do not alter the result.
RUN_KEYS = (
    "data.root",
    "data.num_workers",
    "data.prefetch_factor",
    "data.persistent_workers",
    "data.pin_memory",
    "train.out_dir",
    "model.split_bn_impl",
    "train.device",
    "train.compile",
    "train.cudnn_benchmark",
    "train.deterministic",
    "train.ckpt_every",
    "train.log_every",
    "train.hist_every",
    "train.progress",
    "train.report",
    "train.max_steps",
)
RESUMABLE_KEYS = RUN_KEYS + (
    "data.decode_on",
    "negatives.diag_top",
    "eval.knn_every",
    "eval.chunk_size",
    "eval.batch_size",
    "eval.linear_protocol",
    "eval.linear_lr",
    "eval.linear_epochs",
    "eval.linear_batch_size",
    "eval.linear_weight_decay",
    "eval.linear_milestones",
    "eval.linear_schedule",
    "eval.linear_lr_scaling",
)
