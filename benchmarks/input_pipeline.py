#!/usr/bin/env python
"""Images per second per CPU core of the input pipeline for 224-crop ImageNet training.

Generates ImageNet-sized JPEGs (500x375, smooth content + noise, quality 90), then
measures on ONE thread, in one process:

1. vissl_neg worker side: JPEG -> uint8 256x256 with reduced-size decoding (PIL draft);
2. the same without draft (full-size decode, then resize), and torchvision.io.decode_jpeg;
3. vissl_neg device side: two MoCo-v2 views (224) of a uint8 batch with kornia, here on
   the CPU (on a GPU this runs on the GPU and costs no CPU core);
4. the peer: PIL decode + lightly's MoCoV2Transform (two 224 views) per image, as
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

from common import splice_readme, write_results  # noqa: E402
from vissl_neg.augment import ViewAugment  # noqa: E402
from vissl_neg.config import load_config  # noqa: E402
from vissl_neg.data.image_folder import decode_image  # noqa: E402

TARGET = 2000.0


def make_jpegs(folder: Path, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:375, 0:500].astype(np.float32)
    paths = []
    for i in range(n):
        phase = rng.uniform(0, 6.28, 3)
        freq = rng.uniform(0.005, 0.05, 3)
        img = np.stack([127 + 100 * np.sin(freq[c] * (xx + 2 * yy) + phase[c]) for c in range(3)], axis=-1)
        img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        path = folder / f"img_{i:05d}.JPEG"
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

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), args.images)
        draft = rate(lambda p: decode_image(p, 256, draft=True), paths)
        full = rate(lambda p: decode_image(p, 256, draft=False), paths)
        peer_tf = MoCoV2Transform(input_size=224)

        def peer(p):
            with Image.open(p) as img:
                peer_tf(img.convert("RGB"))

        lightly_rate = rate(peer, paths)

        def tv_decode(p):
            from torchvision.io import decode_jpeg, read_file
            from torchvision.transforms.v2.functional import center_crop, resize

            return center_crop(resize(decode_jpeg(read_file(p)), 256, antialias=True), 256)

        tv = rate(tv_decode, paths)
        cfg = load_config("configs/imagenet_mocov2.yaml", ["data.name=fashion_mnist"])
        augment = ViewAugment(cfg.augment, 3)
        batch = torch.stack([decode_image(p, 256) for p in paths[:64]])
        views = rate(lambda _: (augment(batch), augment(batch)), range(3), repeats=1) * len(batch)

    rows = {
        "vissl_neg worker: JPEG -> uint8 256 (PIL draft)": draft,
        "vissl_neg worker: JPEG -> uint8 256 (full decode)": full,
        "torchvision.io.decode_jpeg + resize 256 + centre crop (for reference)": tv,
        "vissl_neg views on the device (2 x 224, kornia), run here on the CPU": views,
        "lightly MoCoV2Transform in workers (decode + 2 x 224 views)": lightly_rate,
    }
    lines = [
        f"{args.images} JPEGs of 500x375, one CPU thread, torch {torch.__version__}",
        "",
        f"| pipeline step | img/s per core | cores for {TARGET:.0f} img/s |",
        "|---|---|---|",
        *[f"| {name} | {r:.0f} | {TARGET / r:.1f} |" for name, r in rows.items()],
        "",
        f"A {TARGET:.0f} img/s run needs about {TARGET / draft:.0f} loader cores with vissl_neg (views on the GPU) "
        f"against {TARGET / lightly_rate:.0f} with torchvision transforms in workers "
        f"({lightly_rate and draft / lightly_rate:.1f}x fewer); reduced-size decoding alone is "
        f"{draft / full:.2f}x faster than a full decode.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    write_results(args.out, text, rows)
    if args.readme:
        splice_readme(args.readme, "input_pipeline", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
