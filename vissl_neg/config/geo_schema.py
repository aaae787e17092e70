"""Typed configuration of cross-view training (Sample4Geo, Deuser et al. ICCV 2023), selected
by ``task: geo`` at the top of a config. Defaults follow the reference CVUSA recipe
(Skyy93/Sample4Geo train_cvusa.py) except the backbone: ``convnext_base`` without weights
(nothing to download), where the reference fine-tunes ``convnext_base.fb_in22k_ft_in1k_384``
from its pretrained weights, and the precision (``train.amp: auto``, bf16 on a GPU that has
it, where the reference trains fp16 with a GradScaler); ``configs/cvusa_sample4geo.yaml`` sets
both as the reference does."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Annotated, Literal

from vissl_neg.config.schema import RUN_KEYS, TrainConfig, check_grad_cache_chunk
from vissl_neg.data import CVUSAData, GeoDataConfig
from vissl_neg.errors import ConfigError
from vissl_neg.rules import (
    Bound,
    Interval,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
    UnitFraction,
)


@dataclass
class GeoAugmentConfig:
    """Pair-consistent geometry (flip both; rotate the satellite, roll the panorama),
    photometric changes per image; defaults are the reference's (sample4geo/transforms.py).
    Blur and sharpen are one of (P(blur) = blur_p, P(sharpen) = sharpen_p, never both: the
    reference's OneOf at 0.3), and so are grid and coarse dropout."""

    flip_p: Probability = 0.5
    rotate_p: Probability = 0.75
    jpeg_p: Probability = 0.5
    jpeg_quality: list[int] = field(default_factory=lambda: [90, 100])  # uniform integers, both included
    jitter: float = 0.15  # brightness, contrast, saturation
    hue: Probability = 0.15  # at most 0.5, half the colour circle
    jitter_p: Probability = 0.5
    blur_p: Probability = 0.15
    sharpen_p: Probability = 0.15
    grid_dropout_p: Probability = 0.15
    coarse_dropout_p: Probability = 0.15
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    # the satellite alone turned by k·90°, k uniform in 0..3, after its photometric changes (University-1652's
    # RandomRotate90(p=1.0)); 0 = off
    sat_rotate90_p: Probability = 0.0
    # GridDropout's ratio on the ground view: 0.5 for panoramas; University-1652's drone view uses 0.4
    pano_grid_ratio: Annotated[float, Interval(0.0, 1.0, closed_low=False, closed_high=False)] = 0.5

    def check(self) -> None:
        for one_of in (("blur_p", "sharpen_p"), ("grid_dropout_p", "coarse_dropout_p")):
            if sum(getattr(self, k) for k in one_of) > 1.0:
                raise ConfigError(
                    f"config keys 'augment.{one_of[0]}' + 'augment.{one_of[1]}' are one of two, so their sum "
                    f"must be at most 1, got {sum(getattr(self, k) for k in one_of)}"
                )
        q = self.jpeg_quality
        if len(q) != 2 or not 1 <= q[0] <= q[1] <= 100:
            raise ValueError(f"jpeg_quality must be [low, high] with 1 <= low <= high <= 100, got {q}")
        if self.hue > 0.5:
            raise ValueError(f"hue must be at most 0.5 (half the colour circle), got {self.hue}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ConfigError("config keys 'augment.mean' and 'augment.std' must have 3 entries (RGB), std > 0")


@dataclass
class GeoModelConfig:
    """One shared timm backbone, pooled features, no head, L2-normalised."""

    backbone: str = "convnext_base"
    pretrained: bool = False  # timm's ImageNet weights (downloaded from the Hugging Face hub)
    pretrained_file: str = ""  # or a local weights file for the same timm model
    patch_size: NonNegativeInt = 0  # patch-embedding models (ViT, Swin, ConvNeXt, ...): timm's patch_size; 0 = own
    init_temperature: PositiveFloat = 0.07  # the learnable logit scale starts at log(1 / init_temperature)
    channels_last: bool = False

    def check(self) -> None:
        if self.pretrained and self.pretrained_file:
            raise ConfigError("set model.pretrained or model.pretrained_file, not both")


@dataclass
class GeoLossConfig:
    label_smoothing: UnitFraction = 0.1


@dataclass
class GeoMixupConfig:
    """Geodesic multi-modal mixup (m²-mix, Oh et al. NeurIPS 2023): each pair's ground and
    satellite embeddings slerped with λ ~ Beta(alpha, alpha) are the negatives of an extra
    loss term. Defaults are the reference code's (scripts/m2mix.sh)."""

    enabled: bool = False
    alpha: PositiveFloat = 0.5  # λ ~ Beta(alpha, alpha), one draw per step
    weight: PositiveFloat = 0.01  # the mix term's weight
    temperature: NonNegativeFloat = 0.07  # fixed temperature of the mix term; 0 = the learnable logit scale
    epoch_decay: bool = True  # weight / (epoch - start_epoch + 1)
    start_epoch: NonNegativeInt = 0
    label_smoothing: UnitFraction = 0.0  # of the mix term only (the reference's targets there are hard)


@dataclass
class GeoOptimConfig:
    name: Literal["adamw"] = "adamw"
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.01
    batch_size: PositiveInt = 128
    warmup_epochs: NonNegativeFloat = 1.0
    min_lr: NonNegativeFloat = 0.0
    clip_grad: NonNegativeFloat = 100.0  # clip gradients by value (0 = off)


@dataclass
class GeoSamplingConfig:
    """Hard-negative batches: GPS neighbours for ``gps_epochs`` epochs, then neighbours mined
    from embedding similarity, refreshed every ``mine_every`` epochs."""

    neighbour_select: PositiveInt = 64
    neighbour_range: PositiveInt = 128
    gps_epochs: NonNegativeInt = 4
    mine_every: NonNegativeInt = 4  # 0 = never mine (GPS neighbours, or random batches, throughout)
    chunk_size: PositiveInt = 1024  # panoramas scored at once while mining

    def check(self) -> None:
        if self.neighbour_select > self.neighbour_range:
            raise ConfigError(
                f"sampling.neighbour_select={self.neighbour_select} must not exceed "
                f"sampling.neighbour_range={self.neighbour_range}"
            )


@dataclass
class GeoTrainConfig(TrainConfig):
    epochs: PositiveInt = 40
    out_dir: str = "runs/cvusa_sample4geo"
    ckpt_every: PositiveInt = 200
    log_every: PositiveInt = 20


@dataclass
class GeoEvalConfig:
    every: Annotated[int, Bound(-1, note=" (-1 = never)")] = 4  # epochs; 0 = only at the end; -1 = never
    batch_size: PositiveInt = 128
    chunk_size: NonNegativeInt = 0  # queries scored at once (0 = as many as a 256 MiB budget holds)
    # also keep the weights of the best first R@1 of the monitored split in RUN/best.ckpt (Sample4Geo's
    # model selection; on a test split it chooses the model on the test set); eval-geo --best evaluates them
    keep_best: bool = False


@dataclass
class GeoConfig:
    task: str = "geo"
    data: GeoDataConfig = field(default_factory=CVUSAData)  # data.name picks the class (GEO_DATASETS)
    augment: GeoAugmentConfig = field(default_factory=GeoAugmentConfig)
    model: GeoModelConfig = field(default_factory=GeoModelConfig)
    loss: GeoLossConfig = field(default_factory=GeoLossConfig)
    mixup: GeoMixupConfig = field(default_factory=GeoMixupConfig)
    optim: GeoOptimConfig = field(default_factory=GeoOptimConfig)
    sampling: GeoSamplingConfig = field(default_factory=GeoSamplingConfig)
    train: GeoTrainConfig = field(default_factory=GeoTrainConfig)
    eval: GeoEvalConfig = field(default_factory=GeoEvalConfig)

    def check(self) -> None:
        """The rules that span sections (each section has checked its own keys)."""
        try:
            width = self.data.ground_size[1]
        except NotImplementedError:  # a section that does not say its sizes
            width = 0
        if self.augment.rotate_p > 0 and width % 4:
            raise ConfigError(
                f"augment.rotate_p={self.augment.rotate_p} rolls the {self.data.ground_view}s by quarter turns: "
                f"their width ({width}) must be divisible by 4, or set augment.rotate_p: 0"
            )
        if self.mixup.enabled and self.mixup.start_epoch >= self.train.epochs:
            raise ConfigError(
                f"config key 'mixup.start_epoch' ({self.mixup.start_epoch}) must be below train.epochs "
                f"({self.train.epochs}), or mixup never starts"
            )
        check_grad_cache_chunk(self.train.grad_cache_chunk, self.optim.batch_size)


# the cross-view views' probabilities (augment.<key>_p): 0 switches a step off
AUGMENT_PROBABILITIES = tuple(f.name for f in fields(GeoAugmentConfig) if f.name.endswith("_p"))
GEO_RESUMABLE_KEYS = RUN_KEYS + (
    "eval.every",
    "eval.batch_size",
    "eval.chunk_size",
    "eval.keep_best",
    "sampling.chunk_size",
)
