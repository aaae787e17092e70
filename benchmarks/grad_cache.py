#!/usr/bin/env python
"""Gradient caching (train.grad_cache_chunk): activation memory and step time against the chunk
size, for MoCo v3's ViT-S/16 at 224 (configs/imagenet_mocov3_vits.yaml) and Sample4Geo's
ConvNeXt-B at its sizes (configs/cvusa_sample4geo.yaml: 384² satellites, 140×768 panoramas),
each trainer's own ``train_step`` on the CPU at a batch this machine holds; then the largest
batch a fixed memory budget holds with and without caching.

Memory is what autograd keeps for backward, measured as ``benchmarks/memory_estimate.py`` does
(``saved_tensors_hooks``, parameters excluded) but as the peak of what is alive at once: each
saved tensor is held until autograd frees it, so the cached step's peak is one chunk's
activations or the heads-and-loss graph, whichever is larger, and the plain step's is the
whole batch's. The budget table is computed from measured bytes: per-sample activations of
the backbone, the heads-and-loss graph measured at two batch sizes (a B + b B² fit), the
inputs, and weights + gradients + AdamW state; fp32 as measured (about half under bf16 / fp16).
Step times are the process's CPU seconds per step (one thread by default: a shared machine's other
jobs then do not enter), medians of steps interleaved across settings in one process.

    nice -n 19 python benchmarks/grad_cache.py [--vit-batch 16] [--vit-chunks 2 4 8] [--geo-batch 4]
        [--geo-chunks 1 2] [--rounds 3] [--threads 1] [--budget-gib 24] [--budget-chunks 8 32]
        [--readme README.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import publish  # noqa: E402

from vissl_neg.config import load_config  # noqa: E402
from vissl_neg.engine.geo_trainer import GeoTrainer  # noqa: E402
from vissl_neg.engine.trainer import Trainer  # noqa: E402
from vissl_neg.geo.fixture import write_cvusa_fixture  # noqa: E402
from vissl_neg.losses import symmetric_info_nce  # noqa: E402

MIB, GIB = 2**20, 2**30


class _Held:
    __slots__ = ("t", "__weakref__")

    def __init__(self, t: torch.Tensor):
        self.t = t


class SavedBytes:
    """Peak bytes of the tensors autograd holds for backward, alive at once (each tensor's extent
    once; parameters and their views excluded). Use as a context around a step."""

    def __init__(self, params):
        self.exclude = {p.untyped_storage().data_ptr() for p in params}
        self.count: dict[tuple, int] = {}
        self.live = self.peak = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, t: torch.Tensor):
        if t.untyped_storage().data_ptr() in self.exclude or t.numel() == 0:
            return t
        key = (t.data_ptr(), t.numel(), t.dtype)
        if self.count.get(key, 0) == 0:
            self.live += t.numel() * t.element_size()
            self.peak = max(self.peak, self.live)
        self.count[key] = self.count.get(key, 0) + 1
        held = _Held(t)
        weakref.finalize(held, self._release, key, t.numel() * t.element_size())
        return held

    @staticmethod
    def _unpack(held):
        return held.t if isinstance(held, _Held) else held

    def _release(self, key: tuple, nbytes: int) -> None:
        self.count[key] -= 1
        if self.count[key] == 0:
            del self.count[key]
            self.live -= nbytes

    def __enter__(self):
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)


def peak_saved(step: Callable[[], object], params) -> int:
    with SavedBytes(params) as saved:
        step()
    return saved.peak


def quadratic_fit(sizes: list[int], values: list[int]) -> tuple[float, float]:
    """(a, b) with values ≈ a·B + b·B² through two points."""
    (b1, b2), (v1, v2) = sizes, values
    b = (v2 / b2 - v1 / b1) / (b2 - b1)
    return v1 / b1 - b * b1, b


def write_tree(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(2):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(max(n // 2, 1)):
                Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(folder / f"{i}.JPEG")


def time_settings(steps: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median CPU seconds per step of each setting (this process's CPU time: other jobs on a shared
    machine do not count), one step per setting per round, interleaved; the memory pass before
    has run every setting once (optimizer state, allocator)."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(rounds):
        for name, step in steps.items():
            t0 = time.process_time()
            step()
            times[name].append(time.process_time() - t0)
        print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {t[-1]:.1f}s" for n, t in times.items()), flush=True)
    return {name: statistics.median(t) for name, t in times.items()}


def largest_batch(fits: Callable[[int], bool], step: int, limit: int = 1 << 22) -> int:
    """The largest multiple of ``step`` with fits(B) (0 if none), by doubling then bisection."""
    if not fits(step):
        return 0
    lo, hi = step, 2 * step
    while hi < limit and fits(hi):
        lo, hi = hi, hi * 2
    while hi - lo > step:
        mid = (lo + hi) // (2 * step) * step
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def mocov3(args, work: Path) -> dict:
    write_tree(work / "imagenet", 2 * args.vit_batch)
    chunks = sorted(args.vit_chunks)
    cfg = load_config(
        "configs/imagenet_mocov3_vits.yaml",
        [
            "data.name=image_folder",
            f"data.root={work / 'imagenet'}",
            f"optim.batch_size={args.vit_batch}",
            f"train.grad_cache_chunk={chunks[0]}",
            "train.amp=off",
            "train.device=cpu",
            "train.progress=false",
            "eval.knn_every=-1",
            f"train.out_dir={work / 'mocov3'}",
        ],
    )
    torch.manual_seed(0)
    trainer = Trainer(cfg, resume=False)
    trainer.model.train()
    trainer.sampler.set_epoch(0, 0)
    batch = trainer.train_set.__getitems__(next(iter(trainer.sampler)))
    params = list(trainer.model.parameters())

    def step(chunk: int) -> Callable[[], object]:
        def run():
            trainer.chunk = chunk  # 0: the plain step (the cached modules share the weights)
            return trainer.train_step(*batch)

        return run

    settings = {"plain": 0, **{f"chunk {c}": c for c in chunks}}
    memory = {name: peak_saved(step(c), params) for name, c in settings.items()}
    seconds = time_settings({name: step(c) for name, c in settings.items()}, args.rounds)
    trainer.chunk = 0

    # budget model: backbone activations per view-sample, heads + loss at two batch sizes
    backbone = trainer.model.encoder_q.backbone
    x = torch.randn(2, 3, cfg.augment.size, cfg.augment.size)
    per_sample = peak_saved(lambda: backbone(x).sum().backward(), params) / 2
    width, sizes, head_bytes = backbone.num_features, [256, 512], []
    for b in sizes:
        h1, h2 = (torch.randn(b, width, requires_grad=True) for _ in range(2))
        k1, k2 = (F.normalize(torch.randn(b, cfg.model.dim), dim=1) for _ in range(2))
        idx = torch.arange(b)

        def heads_and_loss(h1=h1, h2=h2, k1=k1, k2=k2, idx=idx):
            q1, q2 = trainer.query_head(h1), trainer.query_head(h2)
            (trainer.contrast(q1, k2, idx)[0] + trainer.contrast(q2, k1, idx)[0]).backward()

        head_bytes.append(peak_saved(heads_and_loss, params))
    a, b2 = quadratic_fit(sizes, head_bytes)
    trained = sum(p.numel() for p in params if p.requires_grad)
    frozen = sum(p.numel() for p in params if not p.requires_grad)
    fixed = 4 * (4 * trained + frozen)  # weights, gradients, AdamW's two moments; the key encoder
    size = cfg.augment.size
    inputs = 2 * 3 * size * size * (4 + 1)  # both views in fp32, and the uint8 crops they come from

    def total(batch_size: int, chunk: int) -> float:
        heads = a * batch_size + b2 * batch_size**2
        acts = per_sample * (2 * batch_size if chunk == 0 else chunk)  # plain: both views' graphs at once
        return fixed + inputs * batch_size + (heads + acts if chunk == 0 else max(heads, acts))

    return {
        "title": f"MoCo v3 ViT-S/16 at {size}² ({cfg.model.backbone}, 12 heads, BN projector and predictor of "
        f"{cfg.model.head_hidden}), symmetric loss, batch {args.vit_batch}",
        "batch": args.vit_batch,
        "memory": memory,
        "seconds": seconds,
        "unit": "images",
        "total": total,
        "recipe_batch": 4096,
        "per_sample": per_sample,
    }


def sample4geo(args, work: Path) -> dict:
    write_cvusa_fixture(work / "cvusa", n_train=args.geo_batch, n_val=2, sat_size=384, pano_size=(140, 768))
    chunks = sorted(args.geo_chunks)
    cfg = load_config(
        "configs/cvusa_sample4geo.yaml",
        [
            f"data.root={work / 'cvusa'}",
            "data.num_workers=0",
            f"model.backbone={args.geo_backbone}",
            "model.pretrained=false",
            f"optim.batch_size={args.geo_batch}",
            f"train.grad_cache_chunk={chunks[0]}",
            "train.amp=off",
            "train.device=cpu",
            "train.progress=false",
            "eval.every=-1",
            f"train.out_dir={work / 'geo'}",
        ],
    )
    torch.manual_seed(0)
    trainer = GeoTrainer(cfg, resume=False)
    trainer.model.train()
    pano, sat, _, _ = trainer.train_set.__getitems__(list(range(args.geo_batch)))
    params = list(trainer.model.parameters())

    def step(chunk: int) -> Callable[[], object]:
        def run():
            trainer.cfg.train.grad_cache_chunk = chunk  # 0: the plain step
            return trainer.train_step(pano, sat)

        return run

    settings = {"plain": 0, **{f"chunk {c}": c for c in chunks}}
    memory = {name: peak_saved(step(c), params) for name, c in settings.items()}
    seconds = time_settings({name: step(c) for name, c in settings.items()}, args.rounds)

    model = trainer.model
    acts = {}
    for name, shape in (("pano", (140, 768)), ("sat", (384, 384))):
        x = torch.randn(1, 3, *shape)
        acts[name] = peak_saved(lambda x=x: model(x).sum().backward(), params)
    width, sizes, loss_bytes = model.backbone.num_features, [256, 512], []
    for b in sizes:
        fa, fb = (F.normalize(torch.randn(b, width), dim=1).requires_grad_() for _ in range(2))
        loss_bytes.append(
            peak_saved(lambda fa=fa, fb=fb: symmetric_info_nce(fa, fb, model.logit_scale, 0.1).backward(), params)
        )
    a, b2 = quadratic_fit(sizes, loss_bytes)
    fixed = 4 * 4 * sum(p.numel() for p in params)
    inputs = 3 * (140 * 768 + 384 * 384) * (4 + 1)

    def total(batch_size: int, chunk: int) -> float:
        loss = a * batch_size + b2 * batch_size**2
        if chunk == 0:
            return fixed + inputs * batch_size + loss + (acts["pano"] + acts["sat"]) * batch_size
        return fixed + inputs * batch_size + max(loss, max(acts.values()) * chunk)

    return {
        "title": f"Sample4Geo {args.geo_backbone} (random init), satellite 384², panorama 140×768, "
        f"symmetric InfoNCE + label smoothing, batch {args.geo_batch} pairs",
        "batch": args.geo_batch,
        "memory": memory,
        "seconds": seconds,
        "unit": "pairs",
        "total": total,
        "recipe_batch": 128,
        "per_sample": acts["pano"] + acts["sat"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vit-batch", type=int, default=16)
    parser.add_argument("--vit-chunks", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--geo-backbone", default="convnext_base")
    parser.add_argument("--geo-batch", type=int, default=4)
    parser.add_argument("--geo-chunks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU time is measured)")
    parser.add_argument("--budget-gib", type=float, default=24.0)
    parser.add_argument("--budget-chunks", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--out", default="benchmarks/results/grad_cache.md")
    parser.add_argument("--readme", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="grad_cache_") as work:
        for name, bench in (("MoCo v3", mocov3), ("Sample4Geo", sample4geo)):
            print(f"{name} ...", flush=True)
            results.append(bench(args, Path(work)))
    budget = args.budget_gib * GIB
    lines = [
        f"fp32 on the CPU ({torch.get_num_threads()} thread), torch {torch.__version__}; each trainer's train_step; "
        f"peak activations = saved-for-backward bytes alive at once; s/step = CPU seconds of the process per "
        f"step, median of {args.rounds} rounds with the settings interleaved (CPU time, as other jobs shared "
        "the machine).",
        "",
    ]
    data = []
    for r in results:
        plain_mem, plain_s = r["memory"]["plain"], r["seconds"]["plain"]
        lines += [
            f"**{r['title']}**",
            "",
            "| step | peak activations (MiB) | × plain | s/step | × plain |",
            "|---|---:|---:|---:|---:|",
        ]
        for name in r["memory"]:
            mem, sec = r["memory"][name], r["seconds"][name]
            lines.append(f"| {name} | {mem / MIB:,.0f} | {mem / plain_mem:.3f} | {sec:.1f} | {sec / plain_s:.2f} |")
        lines.append("")
        data.append({k: v for k, v in r.items() if k != "total"})
    lines += [
        f"Largest batch in a {args.budget_gib:g} GiB budget (fp32; activations, heads + loss, inputs, weights, "
        "gradients and AdamW state, from the bytes measured above):",
        "",
        "| task | recipe batch | no caching | " + " | ".join(f"chunk {c}" for c in args.budget_chunks) + " |",
        "|---|---:|---:|" + "---:|" * len(args.budget_chunks),
    ]
    for r, d in zip(results, data):
        plain = largest_batch(lambda b, r=r: r["total"](b, 0) <= budget, 8)
        cached = [largest_batch(lambda b, r=r, c=c: r["total"](b, c) <= budget, c) for c in args.budget_chunks]
        d["largest_batch"] = {"plain": plain, **{str(c): n for c, n in zip(args.budget_chunks, cached)}}
        name = r["title"].split(" (")[0].split(",")[0]
        fits = [f"{n:,}" if n else "one chunk does not fit" for n in cached]
        lines.append(f"| {name} | {r['recipe_batch']} | {plain:,} | " + " | ".join(fits) + " |")
    publish(lines, data, args.out, args.readme, "grad_cache")
    return 0


if __name__ == "__main__":
    sys.exit(main())
