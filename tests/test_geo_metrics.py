"""The cross-view retrieval metrics against transcriptions of the reference code and against
hand-built cases with known answers.

The ``ref_*`` functions below transcribe the reference functions line by line (plain torch /
numpy loops over queries, full score matrices), citing repository @ commit file:line:
Sample4Geo = Skyy93/Sample4Geo @ 498c6511478053ddb4a43f24a9f4942fab238f09, VIGOR =
Jeff-Zilence/VIGOR @ 33a743622c9c9785a28b475361c19ce1a3c12ab8. Random embeddings are scored in
float64, with a check that no two scores of a row are nearly equal, so the chunked and the
full products order them alike; "grid" embeddings (multiples of 1/4) give exact, tied scores
in any summation order, so results there are compared exactly.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vissl_neg.geo import (
    average_precision,
    one_percent_k,
    recall_at_k,
    recall_at_k_labels,
    university1652_metrics,
    vigor_recall,
)

import helpers  # noqa: F401  (pins torch to one CPU thread)

# ---------------------------------------------------------------- transcriptions of the references


def ref_sample4geo_calculate_scores(
    query_features, reference_features, query_labels, reference_labels, step_size=1000, ranks=(1, 5, 10)
):
    """Sample4Geo sample4geo/evaluate/cvusa_and_cvact.py:67-139 (CVUSA, CVACT). Returns the
    whole ``results`` array (R@ranks..., R@top1 in %) where the reference returns results[0]
    and prints the rest; printing and the progress bar are left out."""
    topk = copy.deepcopy(list(ranks))
    Q = len(query_features)
    R = len(reference_features)
    steps = Q // step_size + 1
    query_labels_np = query_labels.cpu().numpy()
    reference_labels_np = reference_labels.cpu().numpy()
    ref2index = dict()
    for i, idx in enumerate(reference_labels_np):
        ref2index[idx] = i
    similarity = []
    for i in range(steps):
        start = step_size * i
        end = start + step_size
        sim_tmp = query_features[start:end] @ reference_features.T
        similarity.append(sim_tmp.cpu())
    similarity = torch.cat(similarity, dim=0)  # matrix Q x R (:96-97)
    topk.append(R // 100)  # :100
    results = np.zeros([len(topk)])
    for i in range(Q):
        gt_sim = similarity[i, ref2index[query_labels_np[i]]]  # :110
        higher_sim = similarity[i, :] > gt_sim  # :113
        ranking = higher_sim.sum()
        for j, k in enumerate(topk):
            if ranking < k:
                results[j] += 1.0
    results = results / Q * 100.0  # :122
    return results


def ref_sample4geo_vigor_calculate_scores(
    query_features, reference_features, query_labels, reference_labels, step_size=1000, ranks=(1, 5, 10)
):
    """Sample4Geo sample4geo/evaluate/vigor.py:66-150. query_labels (Q, 4): positive, then the
    three semi-positives. Returns (results array, hit_rate) in %, where the reference returns
    results[0] and prints the rest."""
    topk = copy.deepcopy(list(ranks))
    Q = len(query_features)
    R = len(reference_features)
    steps = Q // step_size + 1
    query_labels_np = query_labels.cpu().numpy()
    reference_labels_np = reference_labels.cpu().numpy()
    ref2index = dict()
    for i, idx in enumerate(reference_labels_np):
        ref2index[idx] = i
    similarity = []
    for i in range(steps):
        start = step_size * i
        end = start + step_size
        sim_tmp = query_features[start:end] @ reference_features.T
        similarity.append(sim_tmp.cpu())
    similarity = torch.cat(similarity, dim=0)
    topk.append(R // 100)  # :99
    results = np.zeros([len(topk)])
    hit_rate = 0.0
    for i in range(Q):
        gt_sim = similarity[i, ref2index[query_labels_np[i][0]]]  # :110
        higher_sim = similarity[i, :] > gt_sim  # :113
        ranking = higher_sim.sum()
        for j, k in enumerate(topk):
            if ranking < k:
                results[j] += 1.0
        mask = torch.ones(R)  # :122-124: mask for semi pos
        for near_pos in query_labels_np[i][1:]:
            mask[ref2index[near_pos]] = 0
        hit = (higher_sim * mask).sum()  # :127
        if hit < 1:
            hit_rate += 1.0
    results = results / Q * 100.0
    hit_rate = hit_rate / Q * 100
    return results, hit_rate


def ref_vigor_validate_top(grd_descriptor, sat_descriptor, test_label):
    """VIGOR train_SAFA.py:26-59 (``validate_top``), numpy; ``dataloader.test_label``
    passed as ``test_label``. Returns fractions (top 1 %, top 1, top 5, hit rate)."""
    accuracy = 0.0
    accuracy_top1 = 0.0
    accuracy_top5 = 0.0
    accuracy_hit = 0.0
    data_amount = 0.0
    dist_array = 2 - 2 * np.matmul(grd_descriptor, np.transpose(sat_descriptor))
    top1_percent = int(dist_array.shape[1] * 0.01) + 1
    top1 = 1
    top5 = 5
    for i in range(dist_array.shape[0]):
        gt_dist = dist_array[i, test_label[i][0]]
        prediction = np.sum(dist_array[i, :] < gt_dist)
        dist_temp = np.ones(dist_array[i, :].shape[0])
        dist_temp[test_label[i][1:]] = 0
        prediction_hit = np.sum((dist_array[i, :] < gt_dist) * dist_temp)
        if prediction < top1_percent:
            accuracy += 1.0
        if prediction < top1:
            accuracy_top1 += 1.0
        if prediction < top5:
            accuracy_top5 += 1.0
        if prediction_hit < top1:
            accuracy_hit += 1.0
        data_amount += 1.0
    accuracy /= data_amount
    accuracy_top1 /= data_amount
    accuracy_top5 /= data_amount
    accuracy_hit /= data_amount
    return accuracy, accuracy_top1, accuracy_top5, accuracy_hit


def ref_u1652_gallery_labels(gallery_classes, query_classes):
    """Sample4Geo sample4geo/dataset/university.py:237-240 (with train_university.py:198-203
    passing the query classes as ``sample_ids``): a gallery class absent from the queries -> -1."""
    labels = []
    for sample_id in gallery_classes:
        label = int(sample_id)
        if sample_id not in query_classes:
            label = -1
        labels.append(label)
    return torch.tensor(labels)


def ref_u1652_compute_mAP(index, good_index, junk_index):
    """Sample4Geo sample4geo/evaluate/university.py:84-111 (``np.in1d``, gone from numpy 2.4,
    is ``np.isin`` here: the same for these 1-D index arrays)."""
    ap = 0
    cmc = torch.IntTensor(len(index)).zero_()
    if good_index.size == 0:  # if empty
        cmc[0] = -1
        return ap, cmc
    mask = np.isin(index, junk_index, invert=True)  # remove junk_index
    index = index[mask]
    ngood = len(good_index)  # find good_index index
    mask = np.isin(index, good_index)
    rows_good = np.argwhere(mask == True)  # noqa: E712 (as written there)
    rows_good = rows_good.flatten()
    cmc[rows_good[0] :] = 1
    for i in range(ngood):
        d_recall = 1.0 / ngood
        precision = (i + 1) * 1.0 / (rows_good[i] + 1)
        if rows_good[i] != 0:
            old_precision = i * 1.0 / rows_good[i]
        else:
            old_precision = 1.0
        ap = ap + d_recall * (old_precision + precision) / 2
    return ap, cmc


def ref_u1652_eval_query(qf, ql, gf, gl):
    """Sample4Geo sample4geo/evaluate/university.py:61-81."""
    score = gf @ qf.unsqueeze(-1)
    score = score.squeeze().cpu().numpy()
    index = np.argsort(score)  # from small to large
    index = index[::-1]
    query_index = np.argwhere(gl == ql)  # good index
    good_index = query_index
    junk_index = np.argwhere(gl == -1)
    return ref_u1652_compute_mAP(index, good_index, junk_index)


def ref_u1652_evaluate(img_features_query, ids_query, img_features_gallery, ids_gallery, ranks=(1, 5, 10)):
    """Sample4Geo sample4geo/evaluate/university.py:8-58 after ``predict``. Returns
    ({"R@k": %, "R@1%": %, "mAP": %}, per-query ap list) where the reference returns CMC[0]
    and prints the rest."""
    gl = ids_gallery.cpu().numpy()
    ql = ids_query.cpu().numpy()
    CMC = torch.IntTensor(len(ids_gallery)).zero_()
    ap = 0.0
    aps = []
    for i in range(len(ids_query)):
        ap_tmp, CMC_tmp = ref_u1652_eval_query(img_features_query[i], ql[i], img_features_gallery, gl)
        aps.append(ap_tmp)
        if CMC_tmp[0] == -1:
            continue
        CMC = CMC + CMC_tmp
        ap += ap_tmp
    AP = ap / len(ids_query) * 100  # :34
    CMC = CMC.float()
    CMC = CMC / len(ids_query)  # average CMC
    top1 = round(len(ids_gallery) * 0.01)  # :40
    out = {f"R@{i}": float(CMC[i - 1] * 100) for i in ranks}
    out["R@1%"] = float(CMC[top1] * 100)
    out["mAP"] = AP
    return out, aps


# ---------------------------------------------------------------- inputs

U1652_TOL = 1e-4  # the reference averages its CMC in float32 (university.py:36-37)


def _unit(n, d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1)


def _noisy(rows, noise, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(rows + noise * torch.randn(rows.shape, generator=g, dtype=rows.dtype), dim=1)


def _grid(n, d, seed):
    """Rows of multiples of 1/4 in [-1/2, 1/2]: every product is exact, many are tied."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-2, 3, (n, d), generator=g).float() / 4


def _separated(query, reference, gap=1e-9):
    """No two scores of a query row closer than ``gap``: the ranking is the same for any
    rounding of the products."""
    s = (query @ reference.t()).sort(dim=1).values
    return bool((s.diff(dim=1) > gap).all())


def _close(ours: dict, want: dict, tol: float = 1e-9):
    assert set(ours) == set(want), (ours, want)
    for key in want:
        assert ours[key] == pytest.approx(want[key], abs=tol), (key, ours, want)


def _vigor_case(q_count=120, r_count=300, seed=0, dtype=torch.float64, grid=False):
    """Panoramas whose positive tile has three overlapping semi-positive neighbours, each a
    noisy copy of it, so semi-positives often outrank the positive."""
    g = torch.Generator().manual_seed(seed)
    reference = _grid(r_count, 8, seed) if grid else _unit(r_count, 16, seed, dtype)
    positive = torch.randint(r_count, (q_count,), generator=g)
    semi = torch.stack([(positive + o) % r_count for o in (1, 2, 3)], dim=1)  # tiles next to the positive
    if grid:
        query = _grid(q_count, 8, seed + 1)
    else:
        reference[semi] = _noisy(reference[positive], 0.3, seed + 2)[:, None].expand(-1, 3, -1).clone()
        reference[semi] = _noisy(reference[semi].reshape(-1, reference.shape[1]), 0.2, seed + 3).reshape(q_count, 3, -1)
        query = _noisy(reference[positive], 0.6, seed + 4)
    return query, reference, positive, semi


def _u1652_case(direction, seed=0, dtype=torch.float64, n_class=40, n_distractor=15, per_class=6, grid=False):
    """Drone -> satellite: several drone queries per class, one satellite per class in the
    gallery; satellite -> drone: one satellite query per class, several drone images per class
    in the gallery. Both galleries hold distractor classes absent from the queries."""
    g = torch.Generator().manual_seed(seed)
    classes = torch.randperm(1000, generator=g)[: n_class + n_distractor] + 1
    centre = _unit(n_class + n_distractor, 16, seed, dtype)
    many = torch.arange(n_class + n_distractor).repeat_interleave(per_class)
    if direction == "d2s":
        q_idx, g_idx = many[many < n_class], torch.arange(n_class + n_distractor)
        query, gallery = _noisy(centre[q_idx], 0.9, seed + 1), _noisy(centre[g_idx], 0.3, seed + 2)
    else:
        q_idx, g_idx = torch.arange(n_class), many
        query, gallery = _noisy(centre[q_idx], 0.3, seed + 1), _noisy(centre[g_idx], 0.9, seed + 2)
    if grid:
        query, gallery = _grid(len(q_idx), 8, seed + 3), _grid(len(g_idx), 8, seed + 4)
    return query, gallery, classes[q_idx], classes[g_idx]


# ---------------------------------------------------------------- one true reference (CVUSA, CVACT)


@pytest.mark.parametrize(("q_count", "r_count", "noise"), [(150, 250, 0.8), (1100, 420, 1.2)])
def test_recall_at_k_equals_sample4geo_calculate_scores(q_count, r_count, noise):
    reference = _unit(r_count, 16, seed=1)
    g = torch.Generator().manual_seed(2)
    labels = torch.randperm(10_000, generator=g)[:r_count]  # the reference's labels are ids, not positions
    gt = torch.randint(r_count, (q_count,), generator=g)
    query = _noisy(reference[gt], noise, seed=3)
    assert _separated(query, reference)
    want = ref_sample4geo_calculate_scores(query, reference, labels[gt], labels)
    ours = recall_at_k(query, reference, gt)
    _close(ours, dict(zip(["R@1", "R@5", "R@10", "R@1%"], want.tolist())))
    assert 0 < ours["R@1"] < ours["R@1%"] < 100  # the case exercises every threshold


def test_recall_at_k_on_exact_ties_equals_the_transcription():
    reference, query = _grid(230, 8, seed=5), _grid(60, 8, seed=6)
    gt = torch.randint(230, (60,), generator=torch.Generator().manual_seed(7))
    want = ref_sample4geo_calculate_scores(query, reference, gt, torch.arange(230), ranks=(1, 2, 5))
    ours = recall_at_k(query, reference, gt, ks=(1, 2, 5))
    assert list(ours.values()) == want.tolist()  # exact: products of multiples of 1/4 are exact


def test_recall_at_k_ranks_and_ties_by_hand():
    reference = torch.tensor([[1.0], [0.5], [0.0], [-0.5], [-1.0], [0.5]])
    query = torch.tensor([[1.0], [1.0], [-1.0], [1.0]])
    gt = torch.tensor([0, 2, 4, 1])  # ranks: 0; 3 (refs 0, 1, 5 higher); 0; 1 (ref 0 higher; ref 5 ties)
    ours = recall_at_k(query, reference, gt, ks=(1, 2, 4))
    assert ours == {"R@1": 50.0, "R@2": 75.0, "R@4": 100.0, "R@1%": 50.0}


def test_one_percent_rules():
    assert [one_percent_k(n) for n in (8884, 92802, 90618, 46563, 250, 99, 50)] == [88, 928, 906, 465, 2, 1, 1]
    assert [one_percent_k(n, "vigor") for n in (90618, 46563, 8884, 250, 99)] == [907, 466, 89, 3, 1]
    # CMC[round(0.01 G)]: G = 951 -> CMC[10] = R@11; 51,355 -> R@515; Python rounds halves to even
    assert [one_percent_k(n, "university") for n in (951, 51355, 250, 350, 50, 149)] == [11, 515, 3, 5, 1, 2]
    with pytest.raises(ValueError, match="one_percent must be one of"):
        one_percent_k(100, "cvusa")  # type: ignore[arg-type]


def test_recall_one_percent_rule_is_applied():
    # 300 references: k = 3 (sample4geo), 4 (vigor), 4 (university); ranks 0..5 once each
    reference = torch.linspace(1, -1, 300)[:, None]
    query, gt = torch.ones(6, 1), torch.arange(6)
    assert recall_at_k(query, reference, gt, ks=(1,))["R@1%"] == 50.0
    assert recall_at_k(query, reference, gt, ks=(1,), one_percent="vigor")["R@1%"] == pytest.approx(400 / 6)


# ---------------------------------------------------------------- several true references


def test_recall_at_k_labels_equals_the_u1652_cmc():
    for direction in ("d2s", "s2d"):
        query, gallery, ql, gl = _u1652_case(direction, seed=11)
        assert _separated(query, gallery)
        want, _ = ref_u1652_evaluate(query, ql, gallery, gl, ranks=(1, 5, 10))
        ours = recall_at_k_labels(query, gallery, ql, gl, one_percent="university")
        _close(ours, {k: v for k, v in want.items() if k != "mAP"}, U1652_TOL)
        assert 0 < ours["R@1"] < ours["R@10"] < 100


def test_recall_at_k_labels_with_one_true_reference_is_recall_at_k():
    reference, query = _grid(230, 8, seed=12), _grid(70, 8, seed=13)
    gt = torch.randint(230, (70,), generator=torch.Generator().manual_seed(14))
    assert recall_at_k_labels(query, reference, gt, torch.arange(230)) == recall_at_k(query, reference, gt)


def test_recall_at_k_labels_by_hand():
    # references in 1-D; label 7 at 0.5 and -1.0, label 8 at 1.0 and 0.0, label 9 at 0.5
    reference = torch.tensor([[0.5], [1.0], [-1.0], [0.0], [0.5]])
    labels = torch.tensor([7, 8, 7, 8, 9])
    query = torch.tensor([[1.0], [1.0], [1.0], [-1.0], [1.0]])
    q_labels = torch.tensor([7, 8, 9, 7, 5])  # ranks: 1; 0; 1 (label 7 at 0.5 ties, not counted); 0; no match
    ours = recall_at_k_labels(query, reference, q_labels, labels, ks=(1, 2, 6))
    assert ours == {"R@1": 40.0, "R@2": 80.0, "R@6": 80.0, "R@1%": 40.0}  # no match: a miss at any k


# ---------------------------------------------------------------- VIGOR


def test_vigor_recall_equals_sample4geo_calculate_scores():
    query, reference, positive, semi = _vigor_case(seed=0)
    assert _separated(query, reference)
    labels = torch.randperm(10_000, generator=torch.Generator().manual_seed(1))[:300]
    rows = torch.cat([positive[:, None], semi], dim=1)
    want, hit = ref_sample4geo_vigor_calculate_scores(query, reference, labels[rows], labels)
    ours = vigor_recall(query, reference, positive, semi)
    _close(ours, {**dict(zip(["R@1", "R@5", "R@10", "R@1%"], want.tolist())), "hit_rate": hit})
    assert ours["R@1"] < ours["hit_rate"] < 100  # semi-positives outrank positives in this case


def test_vigor_recall_equals_vigor_validate_top():
    query, reference, positive, semi = _vigor_case(seed=3, r_count=350)  # int(3.5) + 1 = 4 against 350 // 100 = 3
    assert _separated(query, reference)
    rows = torch.cat([positive[:, None], semi], dim=1).numpy()
    top1p, top1, top5, hit = ref_vigor_validate_top(query.numpy(), reference.numpy(), rows)
    ours = vigor_recall(query, reference, positive, semi, ks=(1, 5), one_percent="vigor")
    _close(ours, {"R@1": 100 * top1, "R@5": 100 * top5, "R@1%": 100 * top1p, "hit_rate": 100 * hit})
    assert ours["R@1%"] != vigor_recall(query, reference, positive, semi, ks=(1, 5))["R@1%"]


def test_vigor_recall_on_exact_ties_equals_the_transcription():
    query, reference, positive, semi = _vigor_case(q_count=80, r_count=240, seed=4, grid=True)
    rows = torch.cat([positive[:, None], semi], dim=1)
    want, hit = ref_sample4geo_vigor_calculate_scores(query, reference, rows, torch.arange(240))
    ours = vigor_recall(query, reference, positive, semi)
    assert ours == {**dict(zip(["R@1", "R@5", "R@10", "R@1%"], want.tolist())), "hit_rate": hit}


def test_vigor_hit_rate_by_hand():
    # tiles in 1-D; every panorama looks at +1, so a tile's score is its coordinate
    reference = torch.tensor([[1.0], [0.9], [0.8], [0.7], [0.6], [0.9]])
    query = torch.ones(6, 1)
    positive = torch.tensor([0, 1, 2, 2, 1, 1])
    semi = torch.tensor([[3, 4, -1], [0, 2, 3], [0, 5, 3], [0, 1, 3], [0, 0, 0], [2, -1, -1]])
    # q0: positive first: R@1 and a hit; q1: only its semi-positive 0 above, tile 5 ties: a hit, rank 1;
    # q2: its semi-positives 0 and 5 above, negative 1 too: rank 3, no hit; q3: semi 0 and 1 above but
    # negative 5 too: rank 3, no hit; q4: semi 0 above, tile 5 ties (not higher): rank 1, a hit;
    # q5: negative 0 above (-1 pads its list): rank 1, no hit
    ours = vigor_recall(query, reference, positive, semi, ks=(1, 2, 3, 4))
    assert ours == pytest.approx(
        {"R@1": 100 / 6, "R@2": 400 / 6, "R@3": 400 / 6, "R@4": 100.0, "R@1%": 100 / 6, "hit_rate": 50.0}
    )


def test_index_dtypes_and_a_bad_rule():
    query, reference, positive, semi = _vigor_case(q_count=30, r_count=120, seed=6, grid=True)
    want = vigor_recall(query, reference, positive, semi)
    assert vigor_recall(query, reference, positive.int(), semi.int()) == want
    assert recall_at_k(query, reference, positive.int()) == recall_at_k(query, reference, positive)
    with pytest.raises(ValueError, match="one_percent must be one of"):
        vigor_recall(query, reference, positive, semi, one_percent="VIGOR")  # type: ignore[arg-type]


def test_vigor_without_semi_positives_hit_rate_is_r_at_1():
    query, reference, positive, _ = _vigor_case(seed=5)
    ours = vigor_recall(query, reference, positive, torch.empty(len(positive), 0, dtype=torch.long))
    assert ours["hit_rate"] == ours["R@1"]
    assert vigor_recall(query, reference, positive, torch.full((len(positive), 3), -1))["hit_rate"] == ours["R@1"]


# ---------------------------------------------------------------- University-1652


@pytest.mark.parametrize("direction", ["d2s", "s2d"])
@pytest.mark.parametrize("distractors", ["official", "sample4geo"])
def test_university1652_equals_sample4geo_evaluate(direction, distractors):
    query, gallery, ql, gl = _u1652_case(direction, seed=21)
    assert _separated(query, gallery)
    ref_gl = gl if distractors == "official" else ref_u1652_gallery_labels(gl.tolist(), set(ql.tolist()))
    want, aps = ref_u1652_evaluate(query, ql, gallery, ref_gl)
    ours = university1652_metrics(query, gallery, ql, gl, distractors=distractors)
    _close(ours, want, U1652_TOL)
    ap = average_precision(query, gallery, ql, gl, distractors=distractors)
    assert ap.tolist() == pytest.approx(aps, abs=1e-12)
    assert 0 < ours["R@1"] < ours["R@10"] < 100 and 0 < ours["mAP"] < 100


def test_university1652_distractors_change_the_result():
    query, gallery, ql, gl = _u1652_case("d2s", seed=22)
    official = university1652_metrics(query, gallery, ql, gl)
    reference = university1652_metrics(query, gallery, ql, gl, distractors="sample4geo")
    # removing the distractor classes can only lift a true item: every metric rises here
    assert all(reference[k] > official[k] for k in ("R@1", "R@5", "mAP"))
    with pytest.raises(ValueError, match="distractors must be one of"):
        university1652_metrics(query, gallery, ql, gl, distractors="junk")  # type: ignore[arg-type]


def test_university1652_ap_by_hand():
    # gallery in 1-D, query at +1: a gallery item's score is its coordinate
    gallery = torch.tensor([[1.0], [0.8], [0.6], [0.4], [0.2]])
    query = torch.ones(1, 1)
    ap = lambda labels: float(average_precision(query, gallery, torch.tensor([1]), torch.tensor(labels)))  # noqa: E731
    assert ap([1, 0, 0, 0, 0]) == 1.0
    assert ap([0, 1, 0, 0, 0]) == 0.25  # one true item at rank 1: 1/(2(1+1)), half of the usual 1/2
    assert ap([0, 0, 0, 1, 0]) == 0.125
    assert ap([1, 0, 1, 0, 0]) == pytest.approx(0.5 * 1 + 0.5 * (1 / 2 + 2 / 3) / 2)  # ranks 0 and 2
    assert ap([0, 1, 1, 0, 1]) == pytest.approx((0.25 + (1 / 2 + 2 / 3) / 2 + (2 / 4 + 3 / 5) / 2) / 3)
    assert ap([0, 0, 0, 0, 0]) == 0.0  # no true item


def test_university1652_by_hand():
    # 1-D: gallery scores are coordinates; class 5 is a distractor (no query has it)
    gallery = torch.tensor([[1.0], [0.9], [0.8], [0.7], [0.9], [0.5]])
    gl = torch.tensor([5, 1, 2, 1, 2, 3])
    query = torch.ones(4, 1)
    ql = torch.tensor([1, 2, 3, 4])  # class 4 has no gallery image: a miss, AP 0, still counted
    official = university1652_metrics(query, gallery, ql, gl, ks=(1, 2, 3))
    # official: class 1 at ranks 1 (ties with class 2's 0.9 and goes first) and 4; class 2 at ranks 1
    # (the tie again, first) and 3; class 3 at rank 5
    ap_1, ap_2, ap_3 = (1 / 4 + (1 / 4 + 2 / 5) / 2) / 2, (1 / 4 + (1 / 3 + 2 / 4) / 2) / 2, 1 / 12
    want = {"R@1": 0.0, "R@2": 50.0, "R@3": 50.0, "R@1%": 0.0, "mAP": 25 * (ap_1 + ap_2 + ap_3)}
    assert official == pytest.approx(want)
    reference = university1652_metrics(query, gallery, ql, gl, ks=(1, 4, 5), distractors="sample4geo")
    # without class 5: class 1 at ranks 0 and 3, class 2 at 0 and 2, class 3 at 4
    ap_1, ap_2, ap_3 = (1 + (1 / 3 + 2 / 4) / 2) / 2, (1 + (1 / 2 + 2 / 3) / 2) / 2, 1 / 10
    want = {"R@1": 50.0, "R@4": 50.0, "R@5": 75.0, "R@1%": 50.0, "mAP": 25 * (ap_1 + ap_2 + ap_3)}
    assert reference == pytest.approx(want)


def test_university1652_ties_put_the_true_item_first():
    # the only true item ties with two false ones at the top: rank 0 whatever their order
    gallery = torch.tensor([[0.5], [1.0], [1.0], [1.0]])
    for labels in ([1, 2, 3, 4], [1, 2, 4, 3], [1, 4, 2, 3]):
        got = university1652_metrics(torch.ones(1, 1), gallery, torch.tensor([4]), torch.tensor(labels), ks=(1,))
        assert got == {"R@1": 100.0, "R@1%": 100.0, "mAP": 100.0}


# ---------------------------------------------------------------- chunking


def _all_metrics(chunk_size):
    query, reference, positive, semi = _vigor_case(q_count=37, r_count=230, seed=31, grid=True)
    labels = positive % 40
    uq, ug, uql, ugl = _u1652_case("s2d", seed=32, grid=True)
    return [
        recall_at_k(query, reference, positive, chunk_size=chunk_size),
        recall_at_k_labels(query, reference, labels, torch.arange(230) % 40, chunk_size=chunk_size),
        vigor_recall(query, reference, positive, semi, chunk_size=chunk_size),
        university1652_metrics(uq, ug, uql, ugl, chunk_size=chunk_size),
        university1652_metrics(uq, ug, uql, ugl, chunk_size=chunk_size, distractors="sample4geo"),
        average_precision(uq, ug, uql, ugl, chunk_size=chunk_size).tolist(),
    ]


def test_chunk_size_does_not_change_any_result():
    whole = _all_metrics(None)  # sized from the budget: one chunk at these sizes
    for chunk_size in (1, 7, 10_000):
        assert _all_metrics(chunk_size) == whole, chunk_size


def test_the_budget_sets_the_chunk():
    from vissl_neg.geo.metrics import _LABEL_BYTES, _RECALL_BYTES, _U1652_BYTES, _chunk_rows

    assert _chunk_rows(10**6, 90_618, torch.float32, _RECALL_BYTES, None, 256 * 2**20) == 2**28 // (4 * 90_618)
    assert _chunk_rows(10**6, 1000, torch.float64, _LABEL_BYTES, None, 18_000) == 1  # 18 bytes per score
    assert _chunk_rows(10**6, 1000, torch.float32, _U1652_BYTES, None, 10**6) == 55  # 18 bytes per score
    assert _chunk_rows(5, 10, torch.float32, _RECALL_BYTES, None, 2**30) == 5
    assert _chunk_rows(5, 10, torch.float32, _RECALL_BYTES, 3, 1) == 3


def test_counts_stay_exact_past_float32_integers():
    from vissl_neg.geo.metrics import _count

    higher = torch.ones(1, 2**24 + 3)  # a float32 sum of these ones rounds to an even number
    assert _count(higher).tolist() == [2**24 + 3]
