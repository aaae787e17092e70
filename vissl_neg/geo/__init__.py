"""Cross-view geo-localisation (Sample4Geo): hard-negative batch sampling, the retrieval metrics
of CVUSA, CVACT, VIGOR and University-1652 (memory-bounded), and m²-mix, the geodesic mix of
each pair's two views (Oh et al. 2023)."""

from vissl_neg.geo.m2mix import m2mix_info_nce, m2mix_symmetric_info_nce
from vissl_neg.geo.metrics import (
    average_precision,
    one_percent_k,
    recall_at_k,
    recall_at_k_labels,
    university1652_metrics,
    vigor_recall,
)
from vissl_neg.geo.sampling import (
    gps_neighbours,
    haversine_km,
    load_vigor_neighbours,
    mined_neighbours,
    neighbour_batches,
    read_neighbours,
    save_vigor_neighbours,
    vigor_gps_neighbours,
    vigor_mined_neighbours,
    vigor_pair_batches,
)

__all__ = [
    "average_precision",
    "gps_neighbours",
    "haversine_km",
    "load_vigor_neighbours",
    "m2mix_info_nce",
    "m2mix_symmetric_info_nce",
    "mined_neighbours",
    "neighbour_batches",
    "one_percent_k",
    "read_neighbours",
    "recall_at_k",
    "recall_at_k_labels",
    "save_vigor_neighbours",
    "university1652_metrics",
    "vigor_gps_neighbours",
    "vigor_mined_neighbours",
    "vigor_pair_batches",
    "vigor_recall",
]
