"""Hard-negative batches for cross-view training (Sample4Geo): each batch is filled by an
unused id followed by ids from its neighbour list (the first ``neighbour_select // 2`` of
its nearest, then as many drawn at random from the rest of its top ``neighbour_range``),
no id twice in an epoch, the partial last batch dropped. Neighbour lists come from GPS
(haversine on coordinates in radians) for the first epochs and from mined embedding
similarity afterwards.

VIGOR (one or two panoramas per satellite; tables over satellite indices of a
:class:`~vissl_neg.data.vigor.VigorSplit`):

- ``vigor_pair_batches(pair_sats, batch_size, neighbours, neighbour_select, neighbour_range,
  rng, max_rejections=None)`` -> full batches of pair indices, one pair per satellite a batch;
- ``vigor_gps_neighbours(split, k)`` -> {positive satellite: k nearest positive satellites};
- ``vigor_members(pano_sats (P,), reference_sats (R,), merge)`` -> long (R, m) panorama rows;
- ``vigor_mined_neighbour_indices(pano (P, D), sat (R, D), members (R, m), k)`` -> long (R, k)
  reference rows; ``vigor_mined_neighbours(pano, sat, pano_sats, reference_sats, k, merge)``
  -> {satellite: k satellites};
- ``save_vigor_neighbours(path, table, split)`` / ``load_vigor_neighbours(path, split)``: a JSON
  table bound to its mode, cities and satellite list, refused for another.
"""

from __future__ import annotations

import csv
import json
import math
import pickle
import random
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from vissl_neg.data.vigor import VigorSplit
from vissl_neg.errors import DataError

EARTH_RADIUS_KM = 6371.0


def neighbour_batches(
    ids: list[int],
    batch_size: int,
    neighbours: dict[int, list[int]] | None = None,
    neighbour_select: int = 64,
    neighbour_range: int = 128,
    rng: random.Random | None = None,
) -> list[list[int]]:
    """-> full batches of ids for one epoch (the reference's ``shuffle``, without its
    skipping of id 0)."""
    rng = rng or random.Random(0)
    pool = list(ids)
    rng.shuffle(pool)
    used: set[int] = set()
    batches, batch = [], []
    half = neighbour_select // 2
    for idx in pool:
        if idx in used:
            continue
        batch.append(idx)
        used.add(idx)
        if neighbours is not None and len(batch) < batch_size:
            near = list(neighbours.get(idx, []))[:neighbour_range]
            far = near[half:]
            rng.shuffle(far)
            for other in near[:half] + far[:half]:
                if len(batch) >= batch_size:
                    break
                if other not in used:
                    batch.append(other)
                    used.add(other)
        if len(batch) >= batch_size:
            batches.append(batch[:batch_size])
            batch = []
    return batches  # a partial last batch is dropped


def class_batches(
    classes: list[int], batch_size: int, rng: random.Random | None = None, patience: int = 512
) -> list[list[int]]:
    """-> full batches of pair indices for one epoch, no two pairs of one class in a batch
    (University-1652: a class is a building; Sample4Geo's ``U1652DatasetTrain.shuffle``,
    sample4geo/dataset/university.py:90-165). ``classes[i]`` is pair i's class. The pairs are
    taken in a shuffled order; a pair whose class is already in the current batch goes to the
    back of the queue; the walk ends when the queue is empty or after ``patience``
    consecutive pairs were put back (the reference's 512); the partial last batch is dropped.
    That is :func:`vigor_pair_batches`' walk without neighbours, a class in a satellite's place."""
    return vigor_pair_batches(classes, batch_size, None, rng=rng, max_rejections=patience)


def euclidean_neighbours(coords: torch.Tensor, k: int, chunk_size: int = 1024) -> torch.Tensor:
    """coords (N, 2) planar coordinates, e.g. CVACT's UTM metres -> (N, min(k, N - 1)) long:
    each row's nearest other rows by Euclidean distance, nearest first (Sample4Geo
    calc_distance_cvact.py: sklearn's euclidean metric, own row excluded, top 128). Memory is
    O(chunk_size x N)."""
    coords = torch.as_tensor(coords, dtype=torch.float64)
    coords = coords - coords.mean(dim=0)  # UTM values are ~1e6 m: distances from differences, not norms
    n = coords.shape[0]
    k = min(k, n - 1)
    out = torch.empty(n, k, dtype=torch.long)
    for start in range(0, n, chunk_size):
        d = torch.cdist(coords[start : start + chunk_size], coords, compute_mode="donot_use_mm_for_euclid_dist")
        rows = torch.arange(d.shape[0])
        d[rows, rows + start] = math.inf  # never one's own neighbour
        out[start : start + d.shape[0]] = d.topk(k, dim=1, largest=False).indices
    return out


def haversine_km(lat1, lon1, lat2, lon2) -> torch.Tensor:
    """Great-circle distance in km; all angles in degrees (converted to radians here)."""
    lat1, lon1, lat2, lon2 = (torch.deg2rad(torch.as_tensor(x, dtype=torch.float64)) for x in (lat1, lon1, lat2, lon2))
    a = torch.sin((lat2 - lat1) / 2) ** 2 + torch.cos(lat1) * torch.cos(lat2) * torch.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * torch.asin(a.clamp(0, 1).sqrt())


def unit_vectors(coords_deg: torch.Tensor) -> torch.Tensor:
    """(N, 2) latitude, longitude in degrees -> (N, 3) points on the unit sphere (float64)."""
    lat, lon = torch.deg2rad(coords_deg[:, 0]), torch.deg2rad(coords_deg[:, 1])
    return torch.stack([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()], dim=1)


def gps_neighbours(
    ids: list[int], coords: torch.Tensor, k: int, chunk_size: int = 1024, slack: int = 16
) -> dict[int, list[int]]:
    """coords (N, 2) latitude, longitude in degrees -> {id: the k nearest other ids by
    haversine distance, nearest first}. Candidates come from one matrix product of unit
    vectors (the chord is monotonic in the great-circle distance); the k + ``slack`` best
    are re-ranked by haversine, so the order is haversine's. Memory is O(chunk_size × N)."""
    coords = torch.as_tensor(coords, dtype=torch.float64)
    k = min(k, len(ids) - 1)
    m = min(k + slack, len(ids) - 1)
    u = unit_vectors(coords)
    out = {}
    for start in range(0, len(ids), chunk_size):
        block = coords[start : start + chunk_size]
        rows = torch.arange(block.shape[0])
        dots = u[start : start + chunk_size] @ u.t()
        dots[rows, rows + start] = -math.inf  # never one's own neighbour
        cand = dots.topk(m, dim=1).indices
        d = haversine_km(block[:, :1], block[:, 1:], coords[cand, 0], coords[cand, 1])
        nearest = cand.gather(1, d.topk(k, dim=1, largest=False).indices)
        for r, idx in enumerate(ids[start : start + chunk_size]):
            out[idx] = [ids[j] for j in nearest[r].tolist()]
    return out


@torch.no_grad()
def mined_neighbour_indices(
    query: torch.Tensor, reference: torch.Tensor, k: int, chunk_size: int = 1024
) -> torch.Tensor:
    """query (N, D) panoramas, reference (N, D) satellites, row i of each the same pair ->
    (N, min(k, N − 1)) long on the CPU: for each panorama the rows of the k most similar
    satellites, most similar first, never its own. Memory is O(chunk_size × N)."""
    n = query.shape[0]
    k = min(k, n - 1)
    out = torch.empty(n, k, dtype=torch.long)
    ref_t = reference.float().t()
    for start in range(0, n, chunk_size):
        sims = query[start : start + chunk_size].float() @ ref_t
        rows = torch.arange(sims.shape[0], device=sims.device)
        sims[rows, rows + start] = -math.inf
        out[start : start + sims.shape[0]] = sims.topk(k, dim=1).indices.cpu()
    return out


def mined_neighbours(
    ids: list[int], query: torch.Tensor, reference: torch.Tensor, k: int, chunk_size: int = 1024
) -> dict[int, list[int]]:
    """Row i of ``query`` (ground) and of ``reference`` (satellite) belong to ids[i] ->
    {id: the k ids whose satellites are most similar to its panorama, excluding its own}."""
    top = mined_neighbour_indices(query, reference, k, chunk_size).tolist()
    return {idx: [ids[j] for j in row] for idx, row in zip(ids, top)}


class RefusedGlobal(pickle.UnpicklingError):
    pass


class PlainUnpickler(pickle.Unpickler):
    """Reads only what a pickle builds without looking anything up (dict, list, tuple, int,
    float, str, bool, None; sets and bytes too); any class or function it names is refused,
    so nothing runs."""

    def find_class(self, module: str, name: str):
        raise RefusedGlobal(f"the global '{module}.{name}'")


def read_neighbours(path: str | Path, ids: list[int], k: int) -> dict[int, list[int]]:
    """GPS neighbours of ``ids`` -> {id: up to k neighbour ids among ``ids``, nearest first}, from
    CVUSA's ``split_locations/all.csv`` (no header; row id − 1 = satellite lat, lon, ground lat,
    lon, …; the ground position is used, as by Sample4Geo), a CSV of ``id,lat,lon`` (header
    optional), both in degrees, or a precomputed ``{id: [neighbour ids]}`` pickle."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"neighbour file '{path}' does not exist (data.neighbours)")
    wanted = set(ids)
    if path.suffix in (".pkl", ".pickle"):
        try:
            with open(path, "rb") as f:
                table = PlainUnpickler(f).load()
        except RefusedGlobal as exc:
            raise DataError(
                f"neighbour file '{path}' refers to {exc}; only dicts, lists, tuples, ints, floats "
                "and strings are read, so it was not loaded"
            ) from None
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
            raise DataError(f"neighbour file '{path}' cannot be read as a pickle ({type(exc).__name__})") from None
        if not isinstance(table, dict):
            raise DataError(
                f"neighbour file '{path}' must hold a dict {{id: [neighbour ids]}}, got {type(table).__name__}"
            )
        return {i: [int(n) for n in table.get(i, []) if int(n) in wanted and int(n) != i][:k] for i in ids}
    coords: dict[int, tuple[float, float]] = {}
    with open(path, newline="") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if not row or (line_no == 1 and len(row) == 3 and not row[0].strip().isdigit()):
                continue  # blank line or header
            try:
                if len(row) >= 4:
                    coords[line_no] = (float(row[2]), float(row[3]))
                else:
                    coords[int(row[0])] = (float(row[1]), float(row[2]))
            except (ValueError, IndexError):
                raise DataError(
                    f"'{path}' line {line_no}: expected 'id,lat,lon' or CVUSA's "
                    f"'sat_lat,sat_lon,ground_lat,ground_lon,…' in degrees, got {row}"
                ) from None
    missing = [i for i in ids if i not in coords]
    if missing:
        raise DataError(f"'{path}' has no coordinates for {len(missing)} training ids (e.g. {missing[0]})")
    return gps_neighbours(ids, torch.tensor([coords[i] for i in ids]), k)


def gps_table(source, k: int) -> dict[int, list[int]] | None:
    """A ``vissl_neg.data.pairs.GpsSource`` (or None) -> {key: up to k neighbour keys, nearest
    first}, or None; keys are pair indices, or satellite indices for VIGOR."""
    if source is None:
        return None
    if source.kind == "file":
        index = {idx: i for i, idx in enumerate(source.ids)}
        by_id = read_neighbours(source.path, list(source.ids), k)
        return {index[i]: [index[j] for j in near] for i, near in by_id.items()}
    if source.kind == "vigor":  # satellite-keyed, bound to the split's mode
        if source.path is None:
            return vigor_gps_neighbours(source.split, k)
        return {s: near[:k] for s, near in load_vigor_neighbours(source.path, source.split).items()}
    coords = torch.as_tensor(source.coords, dtype=torch.float64)
    if source.kind == "euclidean":
        return dict(enumerate(euclidean_neighbours(coords, k).tolist()))
    if source.kind == "haversine":
        return gps_neighbours(list(range(coords.shape[0])), coords, k)
    raise ValueError(f"unknown GPS source kind {source.kind!r}")


# ------------------------------------------------------------------------------ VIGOR
# VIGOR trains on pairs (panorama, positive satellite) where a satellite can be the positive
# of one or two panoramas. Batches hold at most one pair per satellite, and neighbour lists
# are over satellites: {satellite index: [satellite indices, nearest first]}.


def vigor_pair_batches(
    pair_sats: Sequence[int],
    batch_size: int,
    neighbours: Mapping[int, Sequence[int]] | None = None,
    neighbour_select: int = 64,
    neighbour_range: int = 128,
    rng: random.Random | None = None,
    max_rejections: int | None = None,
) -> list[list[int]]:
    """pair_sats[i] = the positive satellite of pair i -> full batches of pair indices for one
    epoch (Sample4Geo's ``VigorDatasetTrain.shuffle``, dataset/vigor.py:144-267).

    The pairs are shuffled and popped in order. A pair whose satellite is not yet in the batch
    opens or extends it; then, for the first ``neighbour_select // 2`` satellites of its
    neighbour list and as many drawn at random from the rest of the first ``neighbour_range``,
    each satellite not yet in the batch adds one random unused pair of its own (none if all of
    its pairs are used). A neighbour taken this way is removed from the anchor satellite's
    list for the rest of the epoch (it matters when the satellite's second pair anchors
    later). A pair popped while its satellite is in the batch goes back to the end of the
    pool; a pair already used is dropped. No satellite twice in a batch, no pair twice in an
    epoch; the partial last batch is dropped.

    The pass ends when no pair in the pool fits the current batch (every remaining pair's
    satellite is already in it). ``max_rejections=1024`` is the reference's stop instead: after
    1024 consecutive rejected pops, which can also end the epoch while usable pairs remain.
    With the same ``rng`` state the draws are the reference's ``random`` calls one for one."""
    rng = rng or random.Random(0)
    order = list(range(len(pair_sats)))
    rng.shuffle(order)
    pool = deque(order)
    unused: dict[int, list[int]] = {}
    for pair, sat in enumerate(pair_sats):
        unused.setdefault(sat, []).append(pair)
    lists: dict[int, list[int]] = {}  # the anchors' neighbour lists this epoch, copied when first touched
    used: set[int] = set()
    in_batch: set[int] = set()
    batches: list[list[int]] = []
    batch: list[int] = []
    half = neighbour_select // 2
    rejected = 0
    limit = len(pool)  # the pool's length when the batch last changed: all of it rejected = stuck
    while pool:
        pair = pool.popleft()
        sat = pair_sats[pair]
        if sat not in in_batch and pair not in used:
            in_batch.add(sat)
            batch.append(pair)
            used.add(pair)
            unused[sat].remove(pair)
            if neighbours is not None and len(batch) < batch_size:
                if sat not in lists:
                    lists[sat] = list(neighbours.get(sat, ()))
                near = lists[sat][:neighbour_range]
                far = near[half:]
                rng.shuffle(far)
                for other in near[:half] + far[:half]:
                    if len(batch) >= batch_size:
                        break
                    if other in in_batch:
                        continue
                    candidates = list(unused.get(other, ()))
                    rng.shuffle(candidates)
                    if candidates:
                        pick = candidates[0]
                        in_batch.add(other)
                        batch.append(pick)
                        used.add(pick)
                        unused[other].remove(pick)
                        lists[sat].remove(other)
            rejected = 0
            limit = len(pool)
        else:
            if pair not in used:
                pool.append(pair)
            rejected += 1
            if rejected >= (limit if max_rejections is None else max_rejections):
                break
        if len(batch) >= batch_size:
            batches.append(batch)
            batch, in_batch = [], set()
            limit = len(pool)
    return batches  # a partial last batch is dropped


def vigor_gps_neighbours(split: VigorSplit, k: int) -> dict[int, list[int]]:
    """GPS neighbours of a VIGOR training split, computed from the split itself: over its
    sorted unique positive satellites (``split.positive_sats()``), coordinates from their file
    names -> {satellite: the k nearest other positive satellites by haversine, nearest first}.

    Being computed from the run's own split, the table always matches its mode and satellite
    numbering (Sample4Geo loads a pickle chosen apart from its same/cross switch,
    train_vigor.py:46,69). Sample4Geo's ``calc_distance_vigor.py`` builds it over the same
    satellites but feeds degrees to sklearn's haversine, which expects radians: longitude
    differences are then weighted by |cos(lat read as radians)| instead of cos(lat), which
    stretches or squeezes east-west distances (for VIGOR's cities by a factor 0.68 to 1.31) and
    reorders neighbours. :func:`gps_neighbours` converts to radians."""
    ids = split.positive_sats()
    return gps_neighbours(ids, split.sat_latlon(ids), k)


NEIGHBOUR_TABLE_FORMAT = "vissl_neg/vigor-neighbours/1"


def save_vigor_neighbours(path: str | Path, table: Mapping[int, Sequence[int]], split: VigorSplit) -> None:
    """Write a satellite neighbour table of ``split`` as JSON (atomically), keyed by satellite
    file name and carrying the split's mode, cities and :meth:`VigorSplit.fingerprint`."""
    path = Path(path)
    names = split.sat_names
    doc = {
        "format": NEIGHBOUR_TABLE_FORMAT,
        "mode": split.mode,
        "cities": list(split.cities),
        "fingerprint": split.fingerprint(),
        "neighbours": {names[s]: [names[n] for n in near] for s, near in table.items()},
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)


def load_vigor_neighbours(path: str | Path, split: VigorSplit) -> dict[int, list[int]]:
    """Read a table written by :func:`save_vigor_neighbours` for ``split`` -> {satellite:
    [satellites]}; refused in one line if it was made for another mode, other cities or
    another satellite list / training set."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"VIGOR neighbour table '{path}' does not exist")
    try:
        doc = json.loads(path.read_text())
        mode, cities, fingerprint, table = doc["mode"], doc["cities"], doc["fingerprint"], doc["neighbours"]
        if doc.get("format") != NEIGHBOUR_TABLE_FORMAT or not isinstance(table, dict):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise DataError(f"VIGOR neighbour table '{path}' is not a {NEIGHBOUR_TABLE_FORMAT} JSON file") from None
    if mode != split.mode or tuple(cities) != split.cities:
        raise DataError(
            f"VIGOR neighbour table '{path}' was made for mode '{mode}' ({', '.join(cities)}); this run is mode "
            f"'{split.mode}' ({', '.join(split.cities)})"
        )
    if fingerprint != split.fingerprint():
        raise DataError(
            f"VIGOR neighbour table '{path}' was made for another satellite list or training set of mode '{mode}'"
        )
    index = {name: i for i, name in enumerate(split.sat_names)}
    return {index[s]: [index[n] for n in near] for s, near in table.items()}


def vigor_members(pano_sats: torch.Tensor, reference_sats: Sequence[int], merge: str = "max") -> torch.Tensor:
    """pano_sats long (P,) each panorama's positive satellite, reference_sats (R,) the
    satellites mining ranks -> long (R, m) panorama rows per reference satellite, padded by
    repeating its first; ``merge="last"`` keeps only its last panorama (m = 1), the one whose
    list survives in the reference's dict (evaluate/vigor.py:267-271)."""
    groups: dict[int, list[int]] = {}
    for pano, sat in enumerate(pano_sats.tolist()):
        groups.setdefault(sat, []).append(pano)
    missing = [s for s in reference_sats if s not in groups]
    if missing:
        raise ValueError(f"reference satellite {missing[0]} is nobody's positive")
    if merge == "last":
        return torch.tensor([[groups[s][-1]] for s in reference_sats], dtype=torch.long).reshape(-1, 1)
    if merge != "max":
        raise ValueError(f"merge must be 'max' or 'last', got {merge!r}")
    m = max(len(groups[s]) for s in reference_sats)
    return torch.tensor([(groups[s] * m)[:m] for s in reference_sats], dtype=torch.long).reshape(-1, m)


@torch.no_grad()
def vigor_mined_neighbour_indices(
    pano: torch.Tensor,
    sat: torch.Tensor,
    members: torch.Tensor,
    k: int,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """pano (P, D) training panoramas, sat (R, D) the reference satellites (row r = reference
    satellite r), members long (R, m) from :func:`vigor_members` -> long (R, min(k, R − 1)) on
    the CPU: for each reference satellite the rows of the k other satellites its panoramas
    score highest (the highest score over its panoramas), most similar first, never itself.

    With one member per satellite this is the reference's list for that panorama
    (``calculate_nearest``: ``topk(range + 2)`` with the positive masked, first ``range``
    kept). Semi-positives are not masked, as in the reference. Memory O(chunk_size × R)."""
    r = sat.shape[0]
    k = min(k, r - 1)
    out = torch.empty(r, k, dtype=torch.long)
    sat_t = sat.float().t()
    members = members.to(pano.device)
    for start in range(0, r, chunk_size):
        rows = members[start : start + chunk_size]  # (c, m)
        sims = pano[rows[:, 0]].float() @ sat_t
        for j in range(1, rows.shape[1]):  # only the satellites with another panorama are scored again
            extra = (rows[:, j] != rows[:, 0]).nonzero().flatten()
            if extra.numel():
                sims[extra] = torch.maximum(sims[extra], pano[rows[extra, j]].float() @ sat_t)
        own = torch.arange(rows.shape[0], device=sims.device)
        sims[own, own + start] = -math.inf
        out[start : start + rows.shape[0]] = sims.topk(k, dim=1).indices.cpu()
    return out


def vigor_mined_neighbours(
    pano: torch.Tensor,
    sat: torch.Tensor,
    pano_sats: torch.Tensor,
    reference_sats: Sequence[int],
    k: int,
    merge: str = "max",
    chunk_size: int = 1024,
) -> dict[int, list[int]]:
    """Mined satellite neighbours for :func:`vigor_pair_batches`: pano (P, D) embeddings of
    the training panoramas, sat (R, D) of ``reference_sats`` (``VigorSplit.positive_sats()``),
    pano_sats long (P,) each panorama's positive -> {satellite: k satellites, most similar first}.

    ``merge="max"`` (default): a satellite with two panoramas ranks the others by the higher of
    its two panoramas' scores, so both panoramas' hard negatives compete. ``merge="last"``: the
    reference's table, where the second panorama's list overwrites the first's."""
    members = vigor_members(pano_sats, reference_sats, merge)
    rows = vigor_mined_neighbour_indices(pano, sat, members, k, chunk_size).tolist()
    ids = list(reference_sats)
    return {ids[i]: [ids[j] for j in row] for i, row in enumerate(rows)}


# ------------------------------------------------------------------------------ registries
def _neighbour_sampler(train_set, batch_size: int, neighbours, sampling, rng: random.Random) -> list[list[int]]:
    return neighbour_batches(
        list(range(len(train_set))), batch_size, neighbours, sampling.neighbour_select, sampling.neighbour_range, rng
    )


def _class_sampler(train_set, batch_size: int, neighbours, sampling, rng: random.Random) -> list[list[int]]:
    return class_batches(list(train_set.labels), batch_size, rng)


def _vigor_sampler(train_set, batch_size: int, neighbours, sampling, rng: random.Random) -> list[list[int]]:
    return vigor_pair_batches(
        train_set.pair_sats, batch_size, neighbours, sampling.neighbour_select, sampling.neighbour_range, rng
    )


# a data section's ``sampler`` -> f(train set, batch size, neighbour table or None, the sampling
# section, rng) -> one epoch's batches of pair indices
SAMPLERS = {
    "neighbours": _neighbour_sampler,  # hard-negative batches from a neighbour table (random without one)
    "classes": _class_sampler,  # one pair per class (University-1652)
    "vigor_pairs": _vigor_sampler,  # one pair per positive satellite, satellite neighbour tables (VIGOR)
}


def _mine_pairs(ground, aerial, train_set, data_cfg, k: int, chunk_size: int):
    """Row i of both views is pair i: each panorama's k most similar other satellites."""
    return None, mined_neighbour_indices(ground, aerial, k, chunk_size)


def _mine_vigor(ground, aerial, train_set, data_cfg, k: int, chunk_size: int):
    """VIGOR: the training panoramas against their unique positive satellites (the first pair
    of each gives its embedding), a table over satellites (:func:`vigor_mined_neighbour_indices`)."""
    groups = train_set.split.pairs_by_sat()
    keys = sorted(groups)
    sat = aerial[torch.tensor([groups[s][0] for s in keys], device=aerial.device)]
    members = vigor_members(torch.as_tensor(train_set.pair_sats), keys, data_cfg.mined_merge)
    rows = vigor_mined_neighbour_indices(ground, sat, members, k, chunk_size)
    return keys, torch.as_tensor(keys)[rows]


# a data section's ``miner`` -> f(ground embeddings (N, F), aerial embeddings (N, F) of the
# training pairs, train set, data section, k, chunk size) -> (keys or None, table (M, k) long):
# row m of the table lists the neighbours of keys[m] (of pair m when keys is None)
MINERS = {
    "pairs": _mine_pairs,
    "vigor": _mine_vigor,
}
