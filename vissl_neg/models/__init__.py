"""timm encoder + MoCo head, momentum update, shuffle-BN."""

from vissl_neg.models.cross_view import CrossViewModel, build_cross_view_model
from vissl_neg.models.encoder import (
    Encoder,
    ProjectionHead,
    QueryHead,
    QueryPath,
    apply_small_stem,
    backbone_from_config,
    build_backbone,
    build_encoder,
    build_predictor,
    check_input,
    mocov3_vit_init,
    sincos_position_embedding,
    timm_kwargs,
)
from vissl_neg.models.moco import MoCo
from vissl_neg.models.momentum import momentum_at, momentum_update
from vissl_neg.models.shuffle_bn import SplitBatchNorm2d, SplitBatchNormAct2d, convert_split_bn, count_batch_norms

__all__ = [
    "CrossViewModel",
    "Encoder",
    "MoCo",
    "ProjectionHead",
    "QueryHead",
    "QueryPath",
    "SplitBatchNorm2d",
    "SplitBatchNormAct2d",
    "apply_small_stem",
    "backbone_from_config",
    "build_backbone",
    "build_cross_view_model",
    "build_encoder",
    "build_predictor",
    "check_input",
    "convert_split_bn",
    "count_batch_norms",
    "mocov3_vit_init",
    "momentum_at",
    "momentum_update",
    "sincos_position_embedding",
    "timm_kwargs",
]
