"""Cross-view geo-localisation (Sample4Geo): hard-negative batch sampling, retrieval recall,
and m²-mix, the geodesic mix of each pair's two views (Oh et al. 2023)."""

from vissl_neg.geo.metrics import recall_at_k
from vissl_neg.geo.sampling import gps_neighbours, haversine_km, mined_neighbours, neighbour_batches, read_neighbours

__all__ = ["gps_neighbours", "haversine_km", "mined_neighbours", "neighbour_batches", "read_neighbours",
           "recall_at_k"]
