"""A picture of a run: its TensorBoard scalars and score histograms drawn as one PNG,
RUN_DIR/report.png, for the MoCo and the cross-view trainers. Every panel of a trainer's
layout is always drawn; one without data says so, so two runs' reports line up."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vissl_neg.errors import UserError

REPORT = "report.png"
NOT_LOGGED = "not logged in this run"
FIGSIZE = (15.0, 12.0)  # inches
DPI = 100
HIST_BINS = 60  # every score histogram is re-binned onto this many equal bins

FNR_PREFIX = "negatives/false_negative_rate@"


@dataclass
class Histogram:
    """One logged histogram: ``edges`` (n + 1,) ascending, ``counts`` (n,), and the exact mean."""

    edges: np.ndarray
    counts: np.ndarray
    mean: float
    num: int


@dataclass
class RunEvents:
    """scalars: tag -> (steps, values), one value per step (the last one written, as a
    resumed run may log a step twice); histograms: tag -> {step: Histogram}."""

    scalars: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    histograms: dict[str, dict[int, Histogram]] = field(default_factory=dict)

    def scalar(self, tag: str) -> tuple[np.ndarray, np.ndarray] | None:
        return self.scalars.get(tag)


def read_events(tb_dir: str | Path) -> RunEvents:
    """Every scalar and histogram of the TensorBoard event files in ``tb_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "histograms": 0}).Reload()
    tags = acc.Tags()
    events = RunEvents()
    for tag in tags["scalars"]:
        last = {e.step: e.value for e in sorted(acc.Scalars(tag), key=lambda e: e.wall_time)}
        steps = np.array(sorted(last))
        events.scalars[tag] = (steps, np.array([last[s] for s in steps], dtype=float))
    for tag in tags["histograms"]:
        per_step = {}
        for e in sorted(acc.Histograms(tag), key=lambda e: e.wall_time):
            h = e.histogram_value
            # TensorBoard keeps right bucket limits only; the first bucket is an empty one to their left
            edges, counts = np.array(h.bucket_limit, dtype=float), np.array(h.bucket, dtype=float)
            per_step[e.step] = Histogram(edges, counts[1:], h.sum / max(h.num, 1), int(h.num))
        events.histograms[tag] = per_step
    return events


def load_run_events(run_dir: str | Path) -> RunEvents:
    """RUN_DIR/tb read; a missing run directory or one without TensorBoard events is a UserError."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"no run directory '{run_dir}'")
    tb = run_dir / "tb"
    if not tb.is_dir() or not any(p.name.startswith("events.out.tfevents") for p in tb.iterdir()):
        raise UserError(
            f"'{run_dir}' holds no TensorBoard events ({tb}/events.out.tfevents.*); "
            "is it a run directory of tools/train.py?"
        )
    events = read_events(tb)
    if not events.scalars and not events.histograms:
        raise UserError(f"the TensorBoard events in '{tb}' hold no scalars or histograms")
    return events


def rebin(hist: Histogram, edges: np.ndarray) -> np.ndarray:
    """``hist``'s counts spread onto ``edges`` (m + 1,) by overlap (uniform within a bucket),
    as a density that integrates to 1 over the histogram's values -> (m,)."""
    lo, hi = hist.edges[:-1, None], hist.edges[1:, None]
    overlap = np.clip(np.minimum(hi, edges[None, 1:]) - np.maximum(lo, edges[None, :-1]), 0.0, None)
    mass = hist.counts @ (overlap / np.maximum(hi - lo, 1e-300))
    return mass / max(mass.sum(), 1e-12) / np.diff(edges)


# ---------------------------------------------------------------------------- panels


def _not_logged(ax, title: str) -> bool:
    ax.set_title(title)
    ax.text(0.5, 0.5, NOT_LOGGED, ha="center", va="center", transform=ax.transAxes, color="0.45", fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])
    return False


def _lines(
    ax, events: RunEvents, title: str, series: list[tuple[str, str, dict]], ylabel: str, scale: float = 1.0
) -> bool:
    """Line plot of the logged tags among ``series`` (tag, label, style); False if none was logged."""
    present = [(events.scalar(tag), label, style) for tag, label, style in series if events.scalar(tag) is not None]
    if not present:
        return _not_logged(ax, title)
    for (steps, values), label, style in present:
        ax.plot(steps, values * scale, label=label, **style)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return True


def panel_loss_lr(ax, events: RunEvents) -> bool:
    title = "loss and learning rate"
    loss, lr = events.scalar("train/loss"), events.scalar("train/lr")
    if loss is None and lr is None:
        return _not_logged(ax, title)
    from matplotlib.ticker import FuncFormatter

    if loss is not None:
        ax.plot(*loss, color="C0")
        ax.set_ylabel("loss (solid)", color="C0")
    if lr is not None:  # a second y axis; the axis labels in the lines' colours stand for a legend
        twin = ax.twinx()
        twin.plot(*lr, color="C1", ls="--")
        twin.set_ylabel("learning rate (dashed)", color="C1")
        twin.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    return True


def panel_knn(ax, events: RunEvents) -> bool:
    return _lines(
        ax,
        events,
        "kNN top-1 on the test split",
        [("eval/knn_top1", "weighted kNN top-1", {"marker": "o"})],
        "top-1 (%)",
    )


def panel_recall(ax, events: RunEvents) -> bool:
    series = [(f"eval/R@{k}", f"R@{k}", {"marker": "o"}) for k in ("1", "5", "10")]
    series.append(("eval/R@1%", "R@1%", {"marker": "x", "ls": "--"}))  # equals R@1 below 200 references
    drawn = _lines(ax, events, "recall of panoramas against satellites (test)", series, "recall (%)")
    if drawn:
        ax.set_ylim(0, 102)
    return drawn


def panel_cosines(ax, events: RunEvents) -> bool:
    return _lines(
        ax,
        events,
        "mean cosine of positives and negatives",
        [
            ("train/pos_cos", "positive (query, key)", {"color": "C2"}),
            ("train/neg_cos", "negatives (query, queue/bank)", {"color": "C3"}),
        ],
        "cosine",
    )


def panel_geo_cosines(ax, events: RunEvents) -> bool:
    return _lines(
        ax,
        events,
        "mean cosine: true pair vs hardest in batch",
        [
            ("train/pos_cos", "positive (panorama, its satellite)", {"color": "C2"}),
            ("train/hardest_neg_cos", "hardest other satellite of the batch", {"color": "C3"}),
        ],
        "cosine",
    )


def panel_false_negatives(ax, events: RunEvents) -> bool:
    tag = next((t for t in events.scalars if t.startswith(FNR_PREFIX)), None)
    top = tag[len(FNR_PREFIX) :] if tag else "K"
    title = f"same class among the {top} hardest negatives"
    if tag is None:
        return _not_logged(ax, title)
    return _lines(
        ax,
        events,
        title,
        [
            (tag, f"{top} hardest (false-negative rate)", {"color": "C3"}),
            ("negatives/same_class_rate", "all negatives of the loss (chance)", {"color": "0.4", "ls": "--"}),
        ],
        "same class (%)",
        scale=100.0,
    )


def panel_synthetic(ax, events: RunEvents) -> bool:
    return _lines(
        ax,
        events,
        "synthetic negatives harder than the hardest real",
        [("negatives/synthetic_harder_than_hardest_real", "share of synthetic negatives", {"color": "C1"})],
        "share (%)",
        scale=100.0,
    )


def panel_throughput(ax, events: RunEvents) -> bool:
    return _lines(
        ax,
        events,
        "training throughput",
        [("train/img_per_s", "images/s", {"color": "C4"}), ("train/pairs_per_s", "pairs/s", {"color": "C4"})],
        "per second",
    )


def panel_logit_scale(ax, events: RunEvents) -> bool:
    return _lines(
        ax,
        events,
        "logit scale (1 / temperature)",
        [("train/logit_scale", "exp(learned logit scale)", {"color": "C5"})],
        "scale",
    )


MOCO_SCORES = [
    ("scores/positive", "positive", "C2"),
    ("scores/negative", "negative (real)", "C3"),
    ("scores/synthetic", "negative (synthetic)", "C1"),
]
GEO_SCORES = [("scores/positive", "positive", "C2"), ("scores/hardest_negative", "hardest negative in batch", "C3")]
PHASES = ("early", "middle", "late")


def histogram_steps(events: RunEvents, tags: list[str], count: int = len(PHASES)) -> list[int]:
    """Up to ``count`` logged histogram steps spread over the run: the first, the middle, the last."""
    steps = sorted(set().union(*(events.histograms.get(t, {}).keys() for t in tags)))
    if len(steps) <= count:
        return steps
    picks = [round(i * (len(steps) - 1) / (count - 1)) for i in range(count)]
    return [steps[i] for i in picks]


def score_edges(events: RunEvents, tags: list[str]) -> np.ndarray:
    """Equal bins over the range of every logged score histogram (shared by the panels)."""
    hists = [h for t in tags for h in events.histograms.get(t, {}).values()]
    lo, hi = min(h.edges[0] for h in hists), max(h.edges[-1] for h in hists)
    pad = max(0.02 * (hi - lo), 1e-3)
    return np.linspace(lo - pad, hi + pad, HIST_BINS + 1)


def panel_scores(ax, events: RunEvents, step: int | None, phase: str, series, edges) -> bool:
    title = f"score distributions, {phase}" + (f" (step {step})" if step is not None else "")
    if step is None:
        return _not_logged(ax, title)
    for tag, label, color in series:
        hist = events.histograms.get(tag, {}).get(step)
        if hist is None:
            continue
        density = rebin(hist, edges)
        ax.stairs(density, edges, fill=True, alpha=0.25, color=color)
        ax.stairs(density, edges, color=color, lw=1.2, label=f"{label} (mean {hist.mean:.2f})")
        ax.axvline(hist.mean, color=color, ls=":", lw=1)
    missing = [label for tag, label, _ in series if step not in events.histograms.get(tag, {})]
    ax.set_title(title)
    ax.set_xlabel("cosine score")
    ax.set_ylabel("density")
    ax.set_xlim(edges[0], edges[-1])
    ax.grid(alpha=0.3)
    ax.legend(
        fontsize=8,
        loc="upper left",
        framealpha=0.7,
        title=("not logged: " + ", ".join(missing)) if missing else None,
        title_fontsize=7,
    )
    return True


def run_kind(events: RunEvents) -> str:
    """'geo' for the cross-view trainer's events, else 'moco'."""
    geo_tags = {"train/hardest_neg_cos", "train/logit_scale", "train/pairs_per_s"}
    if (
        geo_tags & set(events.scalars)
        or "scores/hardest_negative" in events.histograms
        or any(t.startswith("eval/R@") for t in events.scalars)
    ):
        return "geo"
    return "moco"


KIND_NAMES = {"moco": "MoCo", "geo": "cross-view (Sample4Geo)"}


def draw_report(events: RunEvents, path: str | Path, name: str = "") -> dict[str, bool]:
    """Draws the trainer's fixed panel layout to ``path`` (PNG of FIGSIZE x DPI pixels);
    -> {panel title: True if it shows data, False if it says 'not logged in this run'}."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise UserError("drawing the report needs matplotlib: pip install matplotlib") from exc

    kind = run_kind(events)
    fig = Figure(figsize=FIGSIZE, dpi=DPI)  # fixed margins: a layout engine would double the drawing time
    grid = fig.add_gridspec(3, 6, left=0.055, right=0.975, bottom=0.05, top=0.93, wspace=1.1, hspace=0.32)
    if kind == "geo":
        rows = [[panel_loss_lr, panel_recall, panel_geo_cosines], [panel_logit_scale, panel_throughput]]
        series = GEO_SCORES
    else:
        rows = [[panel_loss_lr, panel_knn, panel_cosines], [panel_false_negatives, panel_synthetic, panel_throughput]]
        series = MOCO_SCORES
    tags = [tag for tag, _, _ in series]
    steps = histogram_steps(events, tags)
    edges = score_edges(events, tags) if steps else None
    by_phase = dict(zip(("late",) if len(steps) == 1 else ("early", "late") if len(steps) == 2 else PHASES, steps))
    rows.append(
        [
            lambda ax, ev, phase=phase: panel_scores(ax, ev, by_phase.get(phase), phase, series, edges)
            for phase in PHASES
        ]
    )
    panels: dict[str, bool] = {}
    for r, row in enumerate(rows):
        span = 6 // len(row)
        for c, panel in enumerate(row):
            ax = fig.add_subplot(grid[r, c * span : (c + 1) * span])
            drawn = panel(ax, events)
            panels[ax.get_title()] = drawn
    last = max((int(s[0][-1]) for s in events.scalars.values() if len(s[0])), default=0)
    fig.suptitle(f"{name + ': ' if name else ''}{KIND_NAMES[kind]} run, last logged step {last}", fontsize=13)
    fig.savefig(Path(path), format="png")
    return panels


def write_report(run_dir: str | Path, path: str | Path | None = None) -> dict[str, bool]:
    """RUN_DIR/tb drawn to ``path`` (default RUN_DIR/report.png); -> the panels, as :func:`draw_report`."""
    run_dir = Path(run_dir)
    events = load_run_events(run_dir)
    path = Path(path or run_dir / REPORT)
    if not path.parent.is_dir():
        raise UserError(f"cannot write '{path}': no folder '{path.parent}'")
    return draw_report(events, path, run_dir.resolve().name)
