"""timm backbone + MoCo MLP head; the query/key encoder of every method here."""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import get_pretrained_cfg

from vissl_neg.errors import ConfigError


def apply_small_stem(model: nn.Module) -> nn.Module:
    """Stride 1 in the first convolution and no stem max-pool, for 28x28/32x32 inputs.

    Only strides and pooling change, never parameter shapes, so the weights still load
    into the unmodified timm / torchvision model; apply this function again after loading
    to get the same features.
    """
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is None:
        raise ConfigError("model.small_stem=true needs a convolutional backbone")
    first_conv.stride = (1, 1)
    if isinstance(getattr(model, "maxpool", None), nn.MaxPool2d):
        model.maxpool = nn.Identity()
    return model


def fixed_input_size(name: str) -> bool:
    """Whether timm's ``name`` takes only the input size it was built for (ViT, DeiT, Swin, ...)."""
    cfg = get_pretrained_cfg(name)
    return bool(cfg is not None and cfg.fixed_input_size)


def timm_kwargs(
    name: str, in_chans: int, image_size: int | None = None, patch_size: int = 0, num_heads: int = 0
) -> dict:
    """The arguments :func:`build_backbone` gives ``timm.create_model`` besides the name, as a
    release's config.json ``model_args`` repeats them: no classifier, ``in_chans``, the data's
    ``img_size`` for models with a fixed input size, and ``patch_size`` / ``num_heads`` when set
    (0 = the model's own)."""
    kwargs = {"num_classes": 0, "in_chans": in_chans}
    if image_size and fixed_input_size(name):
        kwargs["img_size"] = image_size
    if patch_size:
        kwargs["patch_size"] = patch_size
    if num_heads:
        kwargs["num_heads"] = num_heads
    return kwargs


def sincos_position_embedding(grid_h: int, grid_w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """MoCo v3's fixed 2-D sin-cos position embedding (Chen, Xie, He 2021; moco-v3 vits.py:53-69)
    -> (1, 1 + grid_h * grid_w, dim): a zero row for the class token, then per patch the sin and
    cos of its two grid coordinates at dim / 4 frequencies each, in the reference's order."""
    if dim % 4:
        raise ConfigError(f"model.pos_embed=sincos needs an embedding width divisible by 4, got {dim}")
    coord_w, coord_h = torch.meshgrid(
        torch.arange(grid_w, dtype=torch.float32), torch.arange(grid_h, dtype=torch.float32), indexing="ij"
    )
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    out_w = coord_w.flatten()[:, None] * omega[None]
    out_h = coord_h.flatten()[:, None] * omega[None]
    patches = torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)
    return torch.cat([torch.zeros(1, dim), patches], dim=0)[None]


def use_sincos_position_embedding(model: nn.Module, name: str) -> None:
    """Replace a timm ViT's learned ``pos_embed`` by :func:`sincos_position_embedding`, kept as a
    parameter (so timm loads the weights as they are) with ``requires_grad`` False: never trained,
    never weight-decayed (moco-v3 vits.py:28-29, 68-69)."""
    patch = getattr(model, "patch_embed", None)
    pos = getattr(model, "pos_embed", None)
    prefix = getattr(model, "num_prefix_tokens", None)
    if patch is None or not isinstance(pos, nn.Parameter) or getattr(model, "no_embed_class", False) or prefix != 1:
        raise ConfigError(
            f"model.pos_embed=sincos needs a ViT with one class (or register) token and a learned "
            f"position embedding over it; '{name}' has none"
        )
    h, w = patch.grid_size
    table = sincos_position_embedding(h, w, pos.shape[-1]).to(pos.dtype)
    if table.shape != pos.shape:
        raise ConfigError(
            f"model.pos_embed=sincos: '{name}' has a position embedding of shape {tuple(pos.shape)}, "
            f"not {tuple(table.shape)}"
        )
    model.pos_embed = nn.Parameter(table, requires_grad=False)


def mocov3_vit_init(model: nn.Module) -> None:
    """MoCo v3's ViT initialisation (moco-v3 vits.py:31-47): every Linear xavier-uniform with Q, K
    and V of a fused ``qkv`` treated as three matrices, biases zero; class token N(0, 1e-6); the
    patch projection xavier-uniform over its (C * p * p, width) fan, bias zero. (The reference
    writes C = 3; the input's channel count is used here, the same for RGB.)"""
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear):
                if "qkv" in name:
                    val = math.sqrt(6.0 / float(m.weight.shape[0] // 3 + m.weight.shape[1]))
                    nn.init.uniform_(m.weight, -val, val)
                else:
                    nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        cls_token = getattr(model, "cls_token", None)
        if isinstance(cls_token, torch.Tensor):
            nn.init.normal_(cls_token, std=1e-6)
        proj = getattr(getattr(model, "patch_embed", None), "proj", None)
        if isinstance(proj, nn.Conv2d):
            fan_in = proj.weight.shape[1] * proj.weight.shape[2] * proj.weight.shape[3]
            val = math.sqrt(6.0 / float(fan_in + proj.weight.shape[0]))
            nn.init.uniform_(proj.weight, -val, val)
            if proj.bias is not None:
                nn.init.zeros_(proj.bias)


def create_timm_model(name: str, pretrained: bool, kwargs: dict, zero_init_last: bool | None = None) -> nn.Module:
    """``timm.create_model(name, pretrained, **kwargs)`` with ``zero_init_last`` for the
    architectures whose timm class takes it (ResNet, ResNetV2, RegNet, ByobNet, CspNet): True
    starts the last BN scale of every residual block at 0 (Goyal et al. 2017; timm's default for
    its ResNets), False keeps every BN scale at 1, the init of torchvision's ``resnet50()``, None
    the architecture's own default. A model without that argument (ViT, ConvNeXt, ...), or whose
    timm entry point fixes it (``regnetz_*``), is built as timm builds it."""
    if zero_init_last is None:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    try:  # zero_init_last last: an unexpected patch_size or num_heads is reported first
        return timm.create_model(name, pretrained=pretrained, **kwargs, zero_init_last=zero_init_last)
    except TypeError as exc:  # raised when the class is called, before any weight is made or loaded
        if "zero_init_last" not in str(exc):
            raise
    return timm.create_model(name, pretrained=pretrained, **kwargs)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _patch_size(model: nn.Module) -> int | None:
    size = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    return max(size) if isinstance(size, (tuple, list)) else size


def _check_patches(name: str, model: nn.Module, image_size: int) -> None:
    """Patches must tile the image: timm's patch embedding silently drops the pixels left over."""
    patch = _patch_size(model)
    if not patch or image_size % patch == 0:
        return
    fits = [p for p in range(image_size // 4, 1, -1) if image_size % p == 0][:2]
    advice = (
        " or ".join(f"model.patch_size={p} (a {image_size // p}x{image_size // p} grid)" for p in fits)
        if fits
        else f"an augment.size divisible by {patch}"
    )
    raise ConfigError(
        f"backbone '{name}' cuts {image_size}x{image_size} inputs into {patch}x{patch} patches, "
        f"which do not tile them; use {advice}"
    )


def build_backbone(
    name: str,
    in_chans: int,
    small_stem: bool = False,
    pretrained: bool = False,
    pretrained_file: str = "",
    image_size: int | None = None,
    patch_size: int = 0,
    num_heads: int = 0,
    pos_embed: str = "learn",
    init: str = "timm",
    zero_init_last: bool | None = None,
) -> nn.Module:
    """A timm model by name with its classifier removed: (B, C, H, W) -> (B, F) pooled features,
    built with :func:`timm_kwargs`. ``pretrained`` loads timm's weights (a download),
    ``pretrained_file`` a local weights file. ViTs: ``num_heads`` (0 = the model's own),
    ``pos_embed`` 'learn' (timm's) or 'sincos' (MoCo v3's fixed embedding), ``init`` 'timm' or
    'mocov3' (:func:`mocov3_vit_init`, applied after timm builds the model). Residual networks:
    ``zero_init_last`` (:func:`create_timm_model`)."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown timm model '{name}' in model.backbone{hint}")
    kwargs = timm_kwargs(name, in_chans, image_size, patch_size, num_heads)
    extra: dict[str, Any] = {}
    if pretrained_file:
        if not Path(pretrained_file).is_file():
            raise ConfigError(f"model.pretrained_file '{pretrained_file}' does not exist")
        extra["pretrained_cfg_overlay"] = {"file": str(pretrained_file)}
    size = f"{in_chans}x{image_size}x{image_size} inputs" if "img_size" in kwargs else f"{in_chans}-channel inputs"
    try:
        model = create_timm_model(name, bool(pretrained or pretrained_file), {**kwargs, **extra}, zero_init_last)
    except TypeError as exc:  # an argument this architecture does not take
        if "patch_size" in str(exc):
            raise ConfigError(
                f"backbone '{name}' takes no patch size ({_first_line(exc)}); use model.patch_size=0"
            ) from None
        if "num_heads" in str(exc):
            raise ConfigError(
                f"backbone '{name}' takes no number of heads ({_first_line(exc)}); use model.num_heads=0"
            ) from None
        raise ConfigError(f"timm cannot build '{name}' for {size} ({_first_line(exc)})") from None
    except (OSError, RuntimeError, ValueError, AssertionError) as exc:
        if pretrained or pretrained_file:  # no network, a wrong or damaged file
            raise ConfigError(
                f"cannot load pretrained weights for '{name}' ({_first_line(exc)}); "
                "use model.pretrained_file=PATH or model.pretrained=false"
            ) from None
        raise ConfigError(
            f"timm cannot build '{name}' for {size} ({_first_line(exc)}); try another augment.size or backbone"
        ) from None
    if image_size:
        _check_patches(name, model, image_size)
    if small_stem:
        apply_small_stem(model)
    if init == "mocov3":
        if getattr(model, "patch_embed", None) is None:
            raise ConfigError(f"model.vit_init=mocov3 is MoCo v3's ViT initialisation; '{name}' is no ViT")
        mocov3_vit_init(model)
    if pos_embed == "sincos":
        use_sincos_position_embedding(model, name)
    return model


def backbone_from_config(cfg, in_chans: int, image_size: int | None) -> nn.Module:
    """:func:`build_backbone` with the ``model`` section's architecture keys."""
    return build_backbone(
        cfg.backbone,
        in_chans,
        getattr(cfg, "small_stem", False),
        image_size=image_size,
        patch_size=cfg.patch_size,
        num_heads=getattr(cfg, "num_heads", 0),
        pos_embed=getattr(cfg, "pos_embed", "learn"),
        init=getattr(cfg, "vit_init", "timm"),
        zero_init_last=getattr(cfg, "zero_init_last", None),
    )


def check_input(
    backbone: nn.Module, name: str, shape: tuple[int, int, int], what: str = "inputs", hint: str = ""
) -> int:
    """One zero image of ``shape`` (C, H, W) through ``backbone`` in eval mode on its device ->
    the feature width F; an input the backbone cannot take is a one-line :class:`ConfigError`."""
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            feats = backbone(torch.zeros(1, *shape, device=next(backbone.parameters()).device))
    except (RuntimeError, AssertionError, ValueError) as exc:
        info = getattr(backbone, "feature_info", None)
        stride = info[-1].get("reduction") if isinstance(info, list) and info and isinstance(info[-1], dict) else None
        size = "x".join(map(str, shape))
        raise ConfigError(
            f"backbone '{name}' cannot embed {what} of {size} ({_first_line(exc)})"
            + (f"; it downsamples by {stride}" if stride else "")
            + (f"; {hint}" if hint else "")
        ) from None
    finally:
        backbone.train(was_training)
    if feats.dim() != 2:
        raise ConfigError(f"backbone '{name}' returns features of shape {tuple(feats.shape)}, expected (B, F)")
    return feats.shape[1]


class ProjectionHead(nn.Module):
    """MLP head (B, F) -> (B, D) of ``layers`` Linear layers: (Linear(., H) [-> BN] -> ReLU) x
    (layers - 1) -> Linear(H, D) [-> BN without affine]. MoCo v2's (Chen et al. 2020; 2 layers,
    no BN, biases) or, with ``bn`` / ``last_bn``, MoCo v3's ``_build_mlp`` (Chen, Xie, He 2021;
    moco-v3 builder.py:36-52: hidden BNs, no Linear bias before a BN; ViT projector 3 layers,
    ResNet projector and every predictor 2; the last BN on every MLP but the ResNet predictor)."""

    def __init__(
        self, in_dim: int, hidden: int, out_dim: int, bn: bool = False, last_bn: bool = False, layers: int = 2
    ):
        super().__init__()
        hidden = hidden or in_dim
        mods: list[nn.Module] = []
        for i in range(layers - 1):
            mods.append(nn.Linear(in_dim if i == 0 else hidden, hidden, bias=not bn))
            if bn:
                mods.append(nn.BatchNorm1d(hidden))
            mods.append(nn.ReLU(inplace=True))
        mods.append(nn.Linear(hidden if layers > 1 else in_dim, out_dim, bias=not last_bn))
        if last_bn:
            mods.append(nn.BatchNorm1d(out_dim, affine=False))
        self.net = nn.Sequential(*mods)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Encoder(nn.Module):
    """backbone + head; ``forward`` returns L2-normalised embeddings (B, D), ``project`` the
    head's output before normalisation, ``embed_features`` the embeddings of backbone features
    (B, F) computed elsewhere (chunk by chunk)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def embed_features(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(h).float(), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_features(self.backbone(x))


class QueryPath(nn.Module):
    """The query side with a prediction head (MoCo v3): normalise(predictor(encoder.project(x))).
    Holds references only; the modules belong to the MoCo module (and its checkpoint)."""

    def __init__(self, encoder: Encoder, predictor: nn.Module):
        super().__init__()
        self.encoder, self.predictor = encoder, predictor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.predictor(self.encoder.project(x)).float(), dim=1)


class QueryHead(nn.Module):
    """The query path after the backbone, for gradient caching at the backbone output:
    (B, F) features -> normalise(predictor(head(h))), or normalise(head(h)) without a predictor.
    Holds references to the encoder's head and the predictor only (not the backbone: under DDP
    it is wrapped apart from the backbone), like :class:`QueryPath`."""

    def __init__(self, head: nn.Module, predictor: nn.Module | None = None):
        super().__init__()
        self.head, self.predictor = head, predictor

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = self.head(h)
        return F.normalize((z if self.predictor is None else self.predictor(z)).float(), dim=1)


def build_encoder(cfg, in_chans: int, image_size: int) -> Encoder:
    """``cfg`` is the ``model`` section; a dry run turns an input the backbone cannot take
    into a one-line :class:`ConfigError`."""
    backbone = backbone_from_config(cfg, in_chans, image_size)
    width = check_input(
        backbone,
        cfg.backbone,
        (in_chans, image_size, image_size),
        hint="try a larger augment.size, model.small_stem=true or another backbone",
    )
    if cfg.freeze_patch_embed:
        freeze_patch_embedding(backbone, cfg.backbone)
    return Encoder(
        backbone,
        ProjectionHead(width, cfg.head_hidden, cfg.dim, bn=cfg.head_bn, last_bn=cfg.head_bn, layers=cfg.head_layers),
    )


def build_predictor(cfg) -> ProjectionHead | None:
    """MoCo v3's 2-layer prediction head on the query side (``model.predictor_hidden`` > 0), else
    None; ending in BN without affine with ``model.predictor_last_bn`` (the reference's ViT predictor)."""
    if not cfg.predictor_hidden:
        return None
    return ProjectionHead(cfg.dim, cfg.predictor_hidden, cfg.dim, bn=True, last_bn=cfg.predictor_last_bn)


def freeze_patch_embedding(backbone: nn.Module, name: str) -> None:
    """A ViT's patch projection stays at its random initialisation (MoCo v3's stability trick)."""
    patch = getattr(backbone, "patch_embed", None)
    if patch is None:
        raise ConfigError(f"model.freeze_patch_embed=true needs a model with a patch embedding; '{name}' has none")
    for p in patch.parameters():
        p.requires_grad_(False)
