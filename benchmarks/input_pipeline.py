#!/usr/bin/env python
"""Images per second per CPU core of the input pipeline for 224-crop ImageNet training.

Generates ImageNet-sized JPEGs (500x375, smooth content + noise, quality 90), then
measures on ONE thread, in one process:

1. vissl_neg worker side with ``data.crops: image`` (the ImageNet configs'): JPEG -> two uint8
   224 views, each RandomResizedCrop box drawn over the whole image, the JPEG decoded at the
   smallest scale that keeps both boxes 224 pixels wide, each box resized there;
2. vissl_neg worker side with ``data.crops: square``: JPEG -> uint8 256x256 (libjpeg-turbo
   through torchvision.io, or PIL's reduced-size decoding for JPEGs at least twice the target);
3. the same forcing a full-size decode;
4. vissl_neg device side: two MoCo-v2 views (224) of a uint8 batch (augment/ops.py), here on
   the CPU (on a GPU this runs on the GPU and costs no CPU core): from the worker's crops
   (flip, colour, blur) and from the 256 square (crop, flip, colour, blur);
5. the peer: PIL decode + lightly's MoCoV2Transform (two 224 views) per image, as
   torchvision transforms in DataLoader workers do it.

It reports the cores a 2,000 img/s training run needs for the worker side of each
pipeline (vissl_neg's views then run on the GPU).

    python benchmarks/input_pipeline.py [--images 200] [--readme README.md]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import publish  # noqa: E402

from vissl_neg.augment import ViewAugment  # noqa: E402
from vissl_neg.config import load_config  # noqa: E402
from vissl_neg.data.image_folder import decode_image, decode_views  # noqa: E402

TARGET = 2000.0
CROPS_ROW = "vissl_neg worker, data.crops: image: JPEG -> 2 x uint8 224 views, boxes over the whole image"
SQUARE_ROW = "vissl_neg worker, data.crops: square: JPEG -> uint8 256 (reduced-size decoding where it applies)"
FULL_ROW = "vissl_neg worker, data.crops: square: JPEG -> uint8 256 (always a full-size decode)"
PEER_ROW = "lightly MoCoV2Transform in workers (PIL decode + 2 x 224 views)"


def make_jpegs(folder: Path, n: int, width: int, height: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) * (500.0 / width)
    paths = []
    for i in range(n):
        phase = rng.uniform(0, 6.28, 3)
        freq = rng.uniform(0.005, 0.05, 3)
        img = np.stack([127 + 100 * np.sin(freq[c] * (xx + 2 * yy) + phase[c]) for c in range(3)], axis=-1)
        img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        path = folder / f"img_{width}_{i:05d}.JPEG"
        Image.fromarray(img).save(path, quality=90)
        paths.append(str(path))
    return paths


def rate(fn, items, repeats: int = 2) -> float:
    """Best items/s over ``repeats`` passes."""
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for item in items:
            fn(item)
        best = max(best, len(items) / (time.perf_counter() - t0))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--out", default="benchmarks/results/input_pipeline.md")
    parser.add_argument("--readme", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from lightly.transforms import MoCoV2Transform

    peer_tf = MoCoV2Transform(input_size=224)

    def peer(p):
        with Image.open(p) as img:
            peer_tf(img.convert("RGB"))

    cfg = load_config("configs/imagenet_mocov2.yaml", ["data.crops=square"])
    augment = ViewAugment(cfg.augment, 3)
    crops = [(cfg.augment.crop_scale, cfg.augment.crop_ratio)] * 2
    sizes = {"500x375": (500, 375), "1600x1200": (1600, 1200)}
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (w, h) in sizes.items():
            n = args.images if w <= 500 else max(20, args.images // 5)
            paths = make_jpegs(Path(tmp), n, w, h)
            batch = torch.stack([decode_image(p, 256) for p in paths[:32]])
            gen = torch.Generator().manual_seed(0)
            cropped = torch.stack([decode_views(p, crops, 224, gen) for p in paths[:32]])
            measured = {
                CROPS_ROW: rate(lambda p, g=gen: decode_views(p, crops, 224, g), paths),
                SQUARE_ROW: rate(lambda p: decode_image(p, 256, draft=True), paths),
                FULL_ROW: rate(lambda p: decode_image(p, 256, draft=False), paths),
                "vissl_neg views on the device from the worker's crops (2 x 224), run here on the CPU": rate(
                    lambda _, c=cropped: (augment(c[:, 0], cropped=True), augment(c[:, 1], cropped=True)),
                    range(2),
                    repeats=1,
                )
                * len(batch),
                "vissl_neg views on the device from the 256 square (2 x 224), run here on the CPU": rate(
                    lambda _, b=batch: (augment(b), augment(b)), range(2), repeats=1
                )
                * len(batch),
                PEER_ROW: rate(peer, paths),
            }
            for name, r in measured.items():
                rows.setdefault(name, {})[label] = r
    ours = rows[CROPS_ROW]
    square = rows[SQUARE_ROW]
    full = rows[FULL_ROW]
    peer_rate = rows[PEER_ROW]
    lines = [
        f"JPEGs of 500x375 (ImageNet-typical) and 1600x1200 (large photos), quality 90, one CPU thread, "
        f"torch {torch.__version__}",
        "",
        f"| pipeline step | img/s per core, 500x375 | cores for {TARGET:.0f} img/s | img/s per core, 1600x1200 |",
        "|---|---|---|---|",
        *[
            f"| {name} | {r['500x375']:.0f} | {TARGET / r['500x375']:.1f} | {r['1600x1200']:.0f} |"
            for name, r in rows.items()
        ],
        "",
        f"At ImageNet sizes a {TARGET:.0f} img/s run with the ImageNet configs' whole-image crops needs about "
        f"{TARGET / ours['500x375']:.0f} loader cores (views finished on the GPU) against "
        f"{TARGET / peer_rate['500x375']:.0f} with torchvision transforms in workers "
        f"({ours['500x375'] / peer_rate['500x375']:.1f}x fewer); cutting the views from a 256 square instead "
        f"(data.crops: square) needs {TARGET / square['500x375']:.0f}. Reduced-size decoding pays on large photos "
        f"({square['1600x1200'] / full['1600x1200']:.1f}x for the square there); a 500x375 JPEG is too small to "
        "decode at half scale for a 256 target. Without a GPU the device views "
        "are the bottleneck: on a CPU-only machine per-image transforms in workers are cheaper.",
    ]
    publish(lines, rows, args.out, args.readme, "input_pipeline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
