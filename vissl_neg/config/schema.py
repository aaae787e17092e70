"""Typed configuration schema with the defaults of the embedded Fashion-MNIST recipe."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vissl_neg.losses.contrastive import ContrastiveLoss, InfoNCELoss


@dataclass
class DataConfig:
    name: str = "fashion_mnist"
    root: str = "/usr/share/datasets/fashion-mnist"
    subset: int = 0  # use only the first N training images (0 = all)
    classes: str = ""  # image folders: a class-list file (imagenet100 defaults to CMC's list)
    decode_size: int = 256  # image folders: workers decode to this shorter side, centre crop
    draft: bool = True  # image folders: reduced-size JPEG decoding (PIL draft)
    decode_on: str = "workers"  # image folders: workers (PIL) | device (torchvision decode_jpeg; nvJPEG on CUDA)
    # image folders, training views (pretraining and the sgd probe): square = cut on the device from the
    # decode_size centre square | image = each view's RandomResizedCrop box drawn over the whole image in the
    # loader worker (the reference's), decoded and resized there; evaluation views stay resize + centre crop
    crops: str = "square"
    num_workers: int = 0
    prefetch_factor: int = 2  # batches each worker loads ahead (num_workers > 0)
    persistent_workers: bool = True  # keep workers alive across epochs (num_workers > 0)
    pin_memory: bool = True


@dataclass
class AugmentConfig:
    """MoCo-v2 views (He et al. 2020; Chen et al. 2020), made batch-wise on the device (augment/ops.py)."""

    size: int = 28
    crop_scale: list[float] = field(default_factory=lambda: [0.2, 1.0])
    crop_ratio: list[float] = field(default_factory=lambda: [0.75, 1.3333333])
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4  # ignored for 1-channel data
    hue: float = 0.1  # ignored for 1-channel data
    grayscale_p: float = 0.2  # ignored for 1-channel data
    blur_p: float = 0.5
    blur_kernel: int = 3
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    erase_p: float = 0.0
    solarize_p: float = 0.0  # BYOL's solarisation (pixels >= 128/255 inverted)
    mean: list[float] = field(default_factory=lambda: [0.2860])
    std: list[float] = field(default_factory=lambda: [0.3530])
    # the second view's own values of keys above, e.g. {blur_p: 0.1, solarize_p: 0.2} (BYOL / MoCo v3's
    # asymmetric views); empty: both views alike
    view2: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    backbone: str = "resnet10t"
    small_stem: bool = False  # first conv stride 1 and no max-pool, for 28x28 / 32x32 inputs
    patch_size: int = 0  # patch-embedding models (ViT, Swin, ConvNeXt, ...): timm's patch_size; 0 = the model's own
    num_heads: int = 0  # ViTs: timm's num_heads; 0 = the model's own (MoCo v3's ViT-S: 12, timm's/DeiT's: 6)
    pos_embed: str = "learn"  # ViTs: learn (timm's) | sincos (MoCo v3's fixed 2-D sin-cos, not trained)
    vit_init: str = "timm"  # ViTs: timm | mocov3 (xavier-uniform, Q/K/V apart, zero biases; moco-v3 vits.py)
    head_hidden: int = 512  # 0 = the backbone's feature width
    head_layers: int = 2  # Linear layers of the projection head (MoCo v3: 3 for ViTs, 2 for ResNets)
    head_bn: bool = False  # BN in the projection head and after its output (MoCo v3's projector)
    predictor_hidden: int = 0  # > 0: MoCo v3's prediction head (dim -> hidden -> dim) on the query side
    predictor_last_bn: bool = False  # BN without affine after the predictor's output (MoCo v3's ViT predictor)
    sync_bn: bool = False  # under DDP on CUDA, every BN of the model uses the global batch (MoCo v3's SyncBN)
    freeze_patch_embed: bool = False  # ViTs: keep the random patch projection (MoCo v3)
    dim: int = 128
    momentum: float = 0.99
    momentum_schedule: str = "cosine"  # fixed | cosine
    shuffle_bn: str = "auto"  # auto | ddp | split | none
    bn_splits: int = 8
    split_bn_impl: str = "auto"  # auto (fused on CUDA channels_last, else per_group) | fused | per_group
    channels_last: bool = False


@dataclass
class NegativesConfig:
    """``source``: queue (MoCo ring buffer of ``size`` keys), memory_bank (one row per
    training image; ``size`` negatives drawn per query) or batch (the other keys of the global
    batch, SimCLR / MoCo v3; ``size`` unused). ``strategies`` apply in order,
    e.g. ``[{name: filter, keep: 2048}, {name: mochi, n_hard: 1024, s: 1024, s_prime: 512}]``."""

    source: str = "queue"  # queue | memory_bank | batch
    size: int = 4096
    strategies: list[dict[str, Any]] = field(default_factory=list)
    bank_momentum: float = 0.5  # memory_bank row update: m * old + (1 - m) * new (Wu et al. 2018)
    bank_dtype: str = "float32"  # float32 | bfloat16 | float16
    diag_top: int = 64  # false-negative rate among each query's diag_top hardest negatives


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.06
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    warmup_epochs: float = 1.0
    min_lr: float = 0.0
    lr_scaling: str = "none"  # none | linear: lr * batch_size / base_batch (Goyal et al. 2017)
    base_batch: int = 256


@dataclass
class TrainConfig:
    epochs: int = 3
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto | bf16 | fp16 | off
    compile: bool = False  # torch.compile the query encoder (CUDA only; eager elsewhere, with a note)
    cudnn_benchmark: bool = True  # CUDA: let cuDNN pick the fastest kernels for the fixed input size
    deterministic: bool = False  # deterministic kernels (cuDNN, cuBLAS, index ops): a resumed CUDA run repeats exactly
    out_dir: str = "runs/fmnist_moco"
    ckpt_every: int = 100  # steps
    log_every: int = 20  # steps
    hist_every: int = 200  # steps
    progress: bool = True
    report: bool = True  # draw RUN_DIR/report.png from the TensorBoard logs when the run ends
    max_steps: int = 0  # stop after this many steps in total (0 = all epochs); for tests
    # gradient caching (Gao et al. 2021): > 0 runs the trained encoder this many samples per process at a
    # time while the loss sees the whole batch (in-batch negatives: negatives.source=batch and the
    # cross-view task); must divide the per-process batch; 0 = off
    grad_cache_chunk: int = 0


@dataclass
class EvalConfig:
    knn_every: int = 2  # epochs; 0 = only at the end; -1 = never
    knn_k: int = 200
    knn_temperature: float = 0.1
    chunk_size: int = 1024
    batch_size: int = 1024
    linear_protocol: str = "lbfgs"  # lbfgs: logistic regression on cached centre-crop features | sgd: the papers'
    linear_lr: float = 30.0  # sgd protocol (MoCo: 30, no weight decay)
    linear_epochs: int = 100
    linear_batch_size: int = 256
    linear_weight_decay: float = 0.0
    linear_milestones: list[int] = field(
        default_factory=lambda: [60, 80]
    )  # linear_schedule=steps: lr x0.1 at these epochs
    linear_schedule: str = "steps"  # steps (MoCo v1/v2) | cosine per epoch (MoCo v3's main_lincls.py)
    linear_lr_scaling: str = "none"  # none | linear: linear_lr x linear_batch_size / 256 (MoCo v3)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    negatives: NegativesConfig = field(default_factory=NegativesConfig)
    loss: ContrastiveLoss = field(default_factory=InfoNCELoss)  # loss.name picks the class (LOSSES)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


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
