"""Evaluation of frozen backbones: weighted kNN and linear probe."""

from vissl_neg.eval.features import extract_features
from vissl_neg.eval.knn import knn_predict, knn_top1
from vissl_neg.eval.linear_probe import linear_probe, standardise

__all__ = ["extract_features", "knn_predict", "knn_top1", "linear_probe", "standardise"]
