"""Cross-view geo-localisation (Sample4Geo): hard-negative batch sampling, retrieval recall,
and m²-mix, the geodesic mix of each pair's two views (Oh et al. 2023)."""

from vissl_neg.geo.m2mix import m2mix_info_nce, m2mix_symmetric_info_nce
from vissl_neg.geo.metrics import recall_at_k
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
    "gps_neighbours",
    "haversine_km",
    "load_vigor_neighbours",
    "m2mix_info_nce",
    "m2mix_symmetric_info_nce",
    "mined_neighbours",
    "neighbour_batches",
    "read_neighbours",
    "recall_at_k",
    "save_vigor_neighbours",
    "vigor_gps_neighbours",
    "vigor_mined_neighbours",
    "vigor_pair_batches",
]
