"""Evaluate a cross-view retrieval (``vissl_neg.data.pairs.Retrieval``): embed its queries
and references with the shared encoder, then score them with the benchmark's metric,
named by ``Retrieval.metric`` in :data:`METRICS`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from vissl_neg.data.pairs import Retrieval
from vissl_neg.geo.embed import embed_images, embed_pairs
from vissl_neg.geo.metrics import recall_at_k, university1652_metrics, vigor_recall


def _recall(query, reference, query_labels, reference_labels, options, chunk_size):
    """One true reference per query: R@1, 5, 10, 1% (Sample4Geo's CVUSA / CVACT protocol)."""
    if reference_labels is None:  # pairs: query i matches reference i
        gt = torch.arange(query.shape[0], device=query.device)
    else:  # the position of each query's one reference of the same label
        gt = _positions(reference_labels.to(query.device), query_labels.to(query.device))
    return recall_at_k(query, reference, gt, chunk_size=chunk_size)


def _positions(reference_labels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each label's row among the references (each reference label unique); -1 stays -1."""
    position = torch.full((int(reference_labels.max()) + 2,), -1, dtype=torch.long, device=reference_labels.device)
    position[reference_labels] = torch.arange(reference_labels.shape[0], device=reference_labels.device)
    return position[labels]  # -1 indexes the last slot, which stays -1


def _vigor(query, reference, query_labels, reference_labels, options, chunk_size):
    """VIGOR: query labels (Q, 4) = [positive, 3 semi-positives] satellite indices, reference
    labels (R,) their satellite indices -> R@1, 5, 10, 1% and the hit rate (``geo.metrics.vigor_recall``)."""
    rows = _positions(reference_labels.to(query.device), query_labels.to(query.device))
    return vigor_recall(
        query, reference, rows[:, 0], rows[:, 1:], chunk_size=chunk_size, one_percent=options["one_percent"]
    )


# University-1652 data section's distractors -> geo.metrics' name of the protocol
DISTRACTOR_PROTOCOL = {"ranked": "official", "dropped": "sample4geo"}


def _university(query, reference, query_labels, reference_labels, options, chunk_size):
    """University-1652, one direction: class labels on both sides -> CMC R@1, 5, 10, 1% and mAP."""
    return university1652_metrics(
        query,
        reference,
        query_labels,
        reference_labels,
        chunk_size=chunk_size,
        distractors=DISTRACTOR_PROTOCOL[options["distractors"]],  # type: ignore[arg-type]
    )


# metric name -> f(query (Q, F), reference (R, F), query labels (Q, ...) or None, reference labels
# (R,) or None, options, chunk_size or None) -> {name: value}
METRICS: dict[str, Callable[..., dict[str, float]]] = {
    "recall": _recall,  # one true reference per query (CVUSA, CVACT)
    "vigor": _vigor,  # a positive and semi-positives per panorama, with the hit rate
    "university": _university,  # building classes, several true gallery images, AP
}


def evaluate_retrieval(
    model: torch.nn.Module,
    retrieval: Retrieval,
    transform: torch.nn.Module,
    device: torch.device,
    batch_size: int = 128,
    num_workers: int = 0,
    chunk_size: int | None = None,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """The retrieval's numbers, named ``<retrieval.name>/<metric>`` when it has a name."""
    args = (transform, device, batch_size, num_workers, amp_dtype, progress)
    if retrieval.pairs is not None:
        query, reference = embed_pairs(model, retrieval.pairs, *args, "eval")
        query_labels = reference_labels = None
    else:
        query, query_labels = embed_images(model, retrieval.queries, *args, "queries")
        reference, reference_labels = embed_images(model, retrieval.references, *args, "references")
    values = METRICS[retrieval.metric](query, reference, query_labels, reference_labels, retrieval.options, chunk_size)
    prefix = f"{retrieval.name}/" if retrieval.name else ""
    return {f"{prefix}{k}": v for k, v in values.items()}


def evaluate_retrievals(model: torch.nn.Module, retrievals: Sequence[Retrieval], *args, **kwargs) -> dict[str, float]:
    """A split's retrievals (a data section's ``retrievals(split)``) evaluated one after another
    by :func:`evaluate_retrieval` with the same arguments, their numbers in one dict."""
    out: dict[str, float] = {}
    for retrieval in retrievals:
        out.update(evaluate_retrieval(model, retrieval, *args, **kwargs))
    return out
