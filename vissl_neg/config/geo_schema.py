"""Typed configuration of cross-view training (Sample4Geo, Deuser et al. ICCV 2023), selected
by ``task: geo`` at the top of a config. Defaults follow the reference CVUSA recipe
(Skyy93/Sample4Geo train_cvusa.py) except the backbone: ``convnext_base`` without weights
(nothing to download), where the reference fine-tunes ``convnext_base.fb_in22k_ft_in1k_384``
from its pretrained weights, and the precision (``train.amp: auto``, bf16 on a GPU that has
it, where the reference trains fp16 with a GradScaler); ``configs/cvusa_sample4geo.yaml`` sets
both as the reference does."""

from __future__ import annotations

from dataclasses import dataclass, field

from vissl_neg.config.schema import RUN_KEYS, TrainConfig


@dataclass
class GeoDataConfig:
    name: str = "cvusa"
    root: str = "data/CVUSA"
    sat_size: int = 384
    pano_size: list[int] = field(default_factory=lambda: [140, 768])  # height, width
    # GPS neighbours: auto (ROOT/split_locations/all.csv when present) | none (random batches) | a path to
    # CVUSA's all.csv, a CSV of id,lat,lon or a {id: [neighbour ids]} pickle
    neighbours: str = "auto"
    num_workers: int = 0
    prefetch_factor: int = 2
    persistent_workers: bool = True
    pin_memory: bool = True


@dataclass
class GeoAugmentConfig:
    """Pair-consistent geometry (flip both; rotate the satellite, roll the panorama),
    photometric changes per image; defaults are the reference's (sample4geo/transforms.py).
    Blur and sharpen are one of (P(blur) = blur_p, P(sharpen) = sharpen_p, never both: the
    reference's OneOf at 0.3), and so are grid and coarse dropout."""

    flip_p: float = 0.5
    rotate_p: float = 0.75
    jpeg_p: float = 0.5
    jpeg_quality: list[int] = field(default_factory=lambda: [90, 100])  # uniform integers, both included
    jitter: float = 0.15  # brightness, contrast, saturation
    hue: float = 0.15
    jitter_p: float = 0.5
    blur_p: float = 0.15
    sharpen_p: float = 0.15
    grid_dropout_p: float = 0.15
    coarse_dropout_p: float = 0.15
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])


@dataclass
class GeoModelConfig:
    """One shared timm backbone, pooled features, no head, L2-normalised."""

    backbone: str = "convnext_base"
    pretrained: bool = False  # timm's ImageNet weights (downloaded from the Hugging Face hub)
    pretrained_file: str = ""  # or a local weights file for the same timm model
    patch_size: int = 0  # patch-embedding models (ViT, Swin, ConvNeXt, ...): timm's patch_size; 0 = the model's own
    init_temperature: float = 0.07  # the learnable logit scale starts at log(1 / init_temperature)
    channels_last: bool = False


@dataclass
class GeoLossConfig:
    label_smoothing: float = 0.1


@dataclass
class GeoMixupConfig:
    """Geodesic multi-modal mixup (m²-mix, Oh et al. NeurIPS 2023): each pair's ground and
    satellite embeddings slerped with λ ~ Beta(alpha, alpha) are the negatives of an extra
    loss term. Defaults are the reference code's (scripts/m2mix.sh)."""

    enabled: bool = False
    alpha: float = 0.5  # λ ~ Beta(alpha, alpha), one draw per step
    weight: float = 0.01  # the mix term's weight
    temperature: float = 0.07  # fixed temperature of the mix term; 0 = the learnable logit scale
    epoch_decay: bool = True  # weight / (epoch - start_epoch + 1)
    start_epoch: int = 0
    label_smoothing: float = 0.0  # of the mix term only (the reference's targets there are hard)


@dataclass
class GeoOptimConfig:
    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 128
    warmup_epochs: float = 1.0
    min_lr: float = 0.0
    clip_grad: float = 100.0  # clip gradients by value (0 = off)


@dataclass
class GeoSamplingConfig:
    """Hard-negative batches: GPS neighbours for ``gps_epochs`` epochs, then neighbours mined
    from embedding similarity, refreshed every ``mine_every`` epochs."""

    neighbour_select: int = 64
    neighbour_range: int = 128
    gps_epochs: int = 4
    mine_every: int = 4  # 0 = never mine (GPS neighbours, or random batches, throughout)
    chunk_size: int = 1024  # panoramas scored at once while mining


@dataclass
class GeoTrainConfig(TrainConfig):
    epochs: int = 40
    out_dir: str = "runs/cvusa_sample4geo"
    ckpt_every: int = 200
    log_every: int = 20


@dataclass
class GeoEvalConfig:
    every: int = 4  # epochs; 0 = only at the end; -1 = never
    batch_size: int = 128
    chunk_size: int = 0  # queries scored at once (0 = as many as a 256 MiB budget holds)


@dataclass
class GeoConfig:
    task: str = "geo"
    data: GeoDataConfig = field(default_factory=GeoDataConfig)
    augment: GeoAugmentConfig = field(default_factory=GeoAugmentConfig)
    model: GeoModelConfig = field(default_factory=GeoModelConfig)
    loss: GeoLossConfig = field(default_factory=GeoLossConfig)
    mixup: GeoMixupConfig = field(default_factory=GeoMixupConfig)
    optim: GeoOptimConfig = field(default_factory=GeoOptimConfig)
    sampling: GeoSamplingConfig = field(default_factory=GeoSamplingConfig)
    train: GeoTrainConfig = field(default_factory=GeoTrainConfig)
    eval: GeoEvalConfig = field(default_factory=GeoEvalConfig)


# the cross-view views' probabilities (augment.<key>): each in [0, 1], 0 switches a step off
AUGMENT_PROBABILITIES = (
    "flip_p",
    "rotate_p",
    "jpeg_p",
    "jitter_p",
    "blur_p",
    "sharpen_p",
    "grid_dropout_p",
    "coarse_dropout_p",
)
GEO_RESUMABLE_KEYS = RUN_KEYS + ("eval.every", "eval.batch_size", "eval.chunk_size", "sampling.chunk_size")
