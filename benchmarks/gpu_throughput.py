#!/usr/bin/env python
"""MoCo v2 on one GPU at the paper's scale: vissl_neg's step against lightly's MoCo in the same
process (interleaved), with and without torch.compile; what each strategy costs on top; the
input pipeline from ImageNet-sized JPEGs; peak memory beside benchmarks/memory_estimate.py.

ResNet-50 at 224, batch 256, queue 65,536, bf16 autocast, channels_last. The MoCo steps take
uint8 batches already on the GPU, so they time the views (made on the device) and the
training step, not the loader; the loader is timed on its own.

    python benchmarks/gpu_throughput.py [--readme README.md] [--no-compile] [--smoke]

Without CUDA it prints one line and exits 2 (``--smoke`` runs tiny sizes anywhere, to test
the script itself). Each part's results are written as soon as it finishes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import LightlyMoCo, publish  # noqa: E402

from vissl_neg.config import load_config  # noqa: E402
from vissl_neg.engine.trainer import Trainer  # noqa: E402
from vissl_neg.models import build_backbone  # noqa: E402


def strategies(queue: int) -> dict[str, list[str]]:
    """The strategy rows at the ImageNet recipe's sizes (scaled down with a smaller queue)."""
    keep, hard = queue // 4, min(1024, queue // 8)
    s, s_prime = hard, hard // 2
    return {
        f"filter keep {keep}": [f"negatives.strategies=[{{name: filter, keep: {keep}}}]"],
        f"MoCHi ({hard}, {s}, {s_prime})": [
            f"negatives.strategies=[{{name: mochi, n_hard: {hard}, s: {s}, s_prime: {s_prime}}}]"
        ],
        f"geodesic ({hard}, {s}, {s_prime})": [
            f"negatives.strategies=[{{name: geodesic, n_hard: {hard}, s: {s}, s_prime: {s_prime}}}]"
        ],
        "feature transform (2.0, 1.6)": [
            "negatives.strategies=[{name: feature_transform, pos_alpha: 2.0, neg_alpha: 1.6}]"
        ],
        "debiased (τ⁺ 0.1, β 1.0)": ["loss.name=debiased", "loss.tau_plus=0.1", "loss.beta=1.0"],
        f"ambiguous negatives (keep {keep})": [f"negatives.strategies=[{{name: ambiguous, keep: {keep}}}]"],
        "false negatives (top 64, attract)": [
            f"negatives.strategies=[{{name: false_negatives, top: {min(64, keep)}, mode: attract}}]"
        ],
        "dual-view loss (two passes)": ["loss.symmetric=true"],
    }


LABELS = {
    "vissl_neg": "vissl_neg, split shuffle-BN (its default on one process; model.split_bn_impl=auto)",
    "vissl_neg, split per_group": "vissl_neg, split shuffle-BN, per-group kernel (model.split_bn_impl=per_group)",
    "vissl_neg, shuffle-BN off": "vissl_neg, shuffle-BN off (the work lightly's step does)",
}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A photo-like test image: low-frequency colour fields plus mild noise (JPEG decodes of pure
    noise cost far more than of photographs)."""
    coarse = rng.integers(0, 256, (h // 25 + 2, w // 25 + 2, 3)).astype(np.float32)
    img = (
        torch.nn.functional.interpolate(
            torch.from_numpy(coarse).permute(2, 0, 1)[None], size=(h, w), mode="bicubic", align_corners=False
        )[0]
        .permute(1, 2, 0)
        .numpy()
    )
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _write_jpegs(args):
    folder, start, n, size = args
    from PIL import Image

    rng = np.random.default_rng(start)
    for i in range(start, start + n):
        Image.fromarray(smooth_image(rng, size[1], size[0])).save(folder / f"img_{i}.JPEG", quality=90)


def write_tree(root: Path, n: int, size=(500, 375), classes: int = 4) -> None:
    """``root/{train,val}/<class>/*.JPEG``, ``n`` training images of ``size`` (w, h), in parallel."""
    jobs = []
    for split, count in (("train", n), ("val", classes)):
        per = max(1, count // classes)
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for start in range(0, per, 64):
                jobs.append((folder, c * 100_000 + start, min(64, per - start), size))
    with mp.get_context("fork").Pool(min(16, mp.cpu_count())) as pool:
        pool.map(_write_jpegs, jobs)


def timed(fn, steps: int) -> float:
    """Seconds per call of ``fn`` over ``steps`` calls, the GPU drained before and after."""
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - t0) / steps


def interleave(sides: dict, warmup: int, steps: int, rounds: int) -> dict[str, float]:
    """Median seconds per step of each side, sides alternating round by round."""
    for fn in sides.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in sides}
    for _ in range(rounds):
        for name, fn in sides.items():
            times[name].append(timed(fn, steps))
    return {name: statistics.median(t) for name, t in times.items()}


class Bench:
    def __init__(self, args, root: Path, tmp: Path):
        self.args, self.root, self.tmp = args, root, tmp
        self.base = [
            "data.name=image_folder",
            f"data.root={root}",
            f"optim.batch_size={args.batch}",
            f"negatives.size={args.queue}",
            "train.amp=bf16",
            "model.channels_last=true",
            "train.progress=false",
            "eval.knn_every=-1",
            f"augment.size={args.size}",
            f"data.decode_size={args.decode}",
        ]
        self.n = 0

    def trainer(self, *extra) -> Trainer:
        self.n += 1
        cfg = load_config(self.args.config, self.base + [f"train.out_dir={self.tmp}/run{self.n}", *extra])
        t = Trainer(cfg, resume=False)
        t.model.train()
        return t

    def batch(self, trainer):
        b, dev = self.args.batch, trainer.device
        g = torch.Generator(device=dev).manual_seed(0)
        images = torch.randint(
            0, 256, (b, 3, self.args.decode, self.args.decode), dtype=torch.uint8, device=dev, generator=g
        )
        return images, torch.zeros(b, dtype=torch.long, device=dev), torch.arange(b, device=dev)


def moco_vs_lightly(bench: Bench) -> dict:
    a = bench.args
    ours = bench.trainer()
    plain = bench.trainer("model.shuffle_bn=none")
    per_group = bench.trainer("model.split_bn_impl=per_group")
    images, labels, indices = bench.batch(ours)
    cfg = ours.cfg
    torch.manual_seed(0)
    theirs = build_backbone(cfg.model.backbone, 3, cfg.model.small_stem)
    theirs.load_state_dict(plain.model.encoder_q.backbone.state_dict(), strict=False)
    lightly = LightlyMoCo(cfg, theirs, 3, device=ours.device, amp_dtype=ours.amp_dtype, channels_last=True)
    sides = {
        "vissl_neg": lambda: ours.train_step(images, labels, indices),
        "vissl_neg, split per_group": lambda: per_group.train_step(images, labels, indices),
        "vissl_neg, shuffle-BN off": lambda: plain.train_step(images, labels, indices),
        "lightly": lambda: lightly.step(images, cfg.optim.lr, cfg.model.momentum),
    }
    for _ in range(2):  # optimizer state and cuDNN autotuning first: the peak is a steady step's
        plain.train_step(images, labels, indices)
    peak = 0
    if torch.cuda.is_available():
        sync()
        torch.cuda.reset_peak_memory_stats()
        plain.train_step(images, labels, indices)
        peak = torch.cuda.max_memory_allocated()
    sec = interleave(sides, a.warmup, a.steps, a.rounds)
    return {"img_s": {k: a.batch / v for k, v in sec.items()}, "peak_bytes": peak}


def compiled_vs_lightly(bench: Bench) -> dict:
    """The same comparison with torch.compile on both sides (shuffle-BN off, the query encoder compiled)."""
    a = bench.args
    compiled = bench.trainer("train.compile=true", "model.shuffle_bn=none")
    images, labels, indices = bench.batch(compiled)
    cfg = compiled.cfg
    torch.manual_seed(0)
    theirs = build_backbone(cfg.model.backbone, 3, cfg.model.small_stem)
    theirs.load_state_dict(compiled.model.encoder_q.backbone.state_dict(), strict=False)
    lightly = LightlyMoCo(
        cfg, theirs, 3, device=compiled.device, amp_dtype=compiled.amp_dtype, channels_last=True, compile=True
    )
    sides = {
        "vissl_neg, shuffle-BN off, compiled": lambda: compiled.train_step(images, labels, indices),
        "lightly, compiled": lambda: lightly.step(images, cfg.optim.lr, cfg.model.momentum),
    }
    t0 = time.perf_counter()
    for fn in sides.values():
        fn()  # compilation happens here, outside the timing
    seconds = time.perf_counter() - t0
    print(f"compile: {seconds:.0f} s", flush=True)
    sec = interleave(sides, a.warmup, a.steps, a.rounds)
    return {"img_s": {k: a.batch / v for k, v in sec.items()}, "compile_seconds": seconds}


def strategy_costs(bench: Bench) -> dict:
    a = bench.args
    trainers = {"MoCo v2 (queue)": bench.trainer("model.shuffle_bn=none")}
    for name, extra in strategies(a.queue).items():
        trainers[name] = bench.trainer("model.shuffle_bn=none", *extra)
    images, labels, indices = bench.batch(trainers["MoCo v2 (queue)"])
    sides = {name: (lambda t=t: t.train_step(images, labels, indices)) for name, t in trainers.items()}
    sec = interleave(sides, a.warmup, a.steps, a.rounds)
    base = sec["MoCo v2 (queue)"]
    return {name: {"ms": 1000 * s, "ratio": s / base} for name, s in sec.items()}


def loader_rates(bench: Bench, workers: list[int], batch: int = 64) -> dict:
    """img/s of the loader over the JPEG tree: one epoch to start the workers and warm the page
    cache, the second timed (persistent workers)."""
    from vissl_neg.data import make_loader

    out = {}
    for label, decode_on, w in [
        *((f"{n} workers decode", "workers", n) for n in workers),
        *((f"{n} workers read, nvJPEG decodes", "device", n) for n in workers[-1:]),
    ]:
        t = bench.trainer(f"data.decode_on={decode_on}", f"data.num_workers={w}", f"optim.batch_size={batch}")
        loader = make_loader(
            t.loader_set, t.sampler, w, True, seed=0, prefetch_factor=4 if w else None, persistent_workers=w > 0
        )
        for epoch in range(2):
            t.sampler.set_epoch(epoch, 0)
            sync()
            t0, seen = time.perf_counter(), 0
            for batch_ in loader:
                images, labels, indices = t.load_images(batch_)
                seen += images.shape[0]
            sync()
        out[label] = seen / (time.perf_counter() - t0)
        print(f"{label}: {out[label]:.0f} img/s", flush=True)
    return out


def memory_estimate_gib(args) -> float:
    """benchmarks/memory_estimate.py's total with the queue, at this batch and queue."""
    from memory_estimate import estimate_rows, total_with_queue

    _, rows = estimate_rows(
        args.config,
        overrides=(
            f"optim.batch_size={args.batch}",
            f"negatives.size={args.queue}",
            f"augment.size={args.size}",
            "train.amp=bf16",  # the precision this benchmark trains in
        ),
    )
    return total_with_queue(rows) / 2**30


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/imagenet_mocov2.yaml")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--queue", type=int, default=65536)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--decode", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per side per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=8192, help="JPEGs for the loader timing")
    parser.add_argument("--workers", default="8,16")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on any device: checks the script runs")
    parser.add_argument("--render-from", default=None, help="a results .json of an earlier run: only render it")
    parser.add_argument("--out", default="benchmarks/results/gpu_throughput.md")
    parser.add_argument("--readme", default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.smoke and not args.render_from:
        print("gpu_throughput: needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    if args.smoke:
        args.config, args.batch, args.queue, args.size, args.decode = "configs/imagenet_mocov2.yaml", 32, 64, 32, 40
        args.warmup, args.steps, args.rounds, args.images, args.workers = 1, 1, 1, 32, "0"
        args.no_compile = True
    if args.render_from:
        results = json.loads(Path(args.render_from).read_text())
        publish(render(results), results, args.out, args.readme, "gpu_throughput")
        return 0
    workers = [int(w) for w in args.workers.split(",")]
    results: dict = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "batch": args.batch,
        "queue": args.queue,
        "size": args.size,
        "steps": args.steps,
        "rounds": args.rounds,
    }
    t_all = time.perf_counter()

    def done(key, value):
        results[key] = value
        results["seconds"] = round(time.perf_counter() - t_all, 1)
        publish(render(results), results, args.out, None, "gpu_throughput")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        t0 = time.perf_counter()
        write_tree(root, args.images, (48, 40) if args.smoke else (500, 375))
        print(f"wrote {args.images} JPEGs in {time.perf_counter() - t0:.0f} s", flush=True)
        bench = Bench(args, root, Path(tmp))
        done("moco", moco_vs_lightly(bench))
        done("strategies", strategy_costs(bench))
        done("loader", loader_rates(bench, workers, min(64, args.images // 4)))
        try:
            done("estimate_gib", memory_estimate_gib(args))
        except Exception as exc:  # the estimate is context, not the measurement
            print(f"note: no memory estimate ({exc.__class__.__name__}: {exc})", flush=True)
        if not args.no_compile:
            done("compiled", compiled_vs_lightly(bench))
    publish(render(results), results, args.out, args.readme, "gpu_throughput")
    return 0


def render(r: dict) -> list[str]:
    """The results (any finished parts of them) as markdown."""
    lines = [
        f"{r['device']}, torch {r['torch']}; resnet50 at {r['size']}x{r['size']}, batch {r['batch']}, queue "
        f"{r['queue']:,}, bf16 autocast, channels_last; uint8 batches already on the GPU, views made there; median of "
        f"{r['rounds']} rounds x {r['steps']} steps per side, sides interleaved; {r.get('seconds', 0):.0f} s in all",
    ]
    ips = {**r.get("moco", {}).get("img_s", {}), **r.get("compiled", {}).get("img_s", {})}
    if ips:
        lines += ["", "| MoCo v2 step | img/s | / lightly (same compile setting) |", "|---|---:|---:|"]
        for name, v in ips.items():
            peer = ips.get("lightly, compiled" if "compiled" in name else "lightly")
            label = LABELS.get(name, name)
            lines.append(f"| {label} | {v:,.0f} | {v / peer:.3f} |" if peer else f"| {label} | {v:,.0f} | |")
    if "strategies" in r:
        lines += ["", "| strategy (eager, shuffle-BN off) | step (ms) | step / MoCo |", "|---|---:|---:|"]
        lines += [f"| {name} | {v['ms']:.1f} | {v['ratio']:.3f} |" for name, v in r["strategies"].items()]
    if "loader" in r:
        lines += ["", "| input pipeline (ImageNet-sized JPEGs, ~500x375 -> uint8 256) | img/s |", "|---|---:|"]
        lines += [f"| {name} | {v:,.0f} |" for name, v in r["loader"].items()]
    if "moco" in r:
        peak, est = r["moco"]["peak_bytes"] / 2**30, r.get("estimate_gib")
        lines += [
            "",
            f"Peak GPU memory of a MoCo step (shuffle-BN off, eager): {peak:.2f} GiB allocated by tensors"
            + (f"; benchmarks/memory_estimate.py estimates {est:.2f} GiB ({peak / est:.2f}x)." if est else "."),
        ]
    if "compiled" in r:
        lines.append(f"torch.compile took {r['compiled']['compile_seconds']:.0f} s for both sides together.")
    return lines


if __name__ == "__main__":
    sys.exit(main())
