"""Cross-view geo-localisation (Sample4Geo): hard-negative batch sampling and retrieval recall."""

from vissl_neg.geo.metrics import recall_at_k
from vissl_neg.geo.sampling import gps_neighbours, haversine_km, mined_neighbours, neighbour_batches, read_neighbours

__all__ = ["gps_neighbours", "haversine_km", "mined_neighbours", "neighbour_batches", "read_neighbours",
           "recall_at_k"]
