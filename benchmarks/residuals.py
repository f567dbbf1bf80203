"""Residual materialization throughput, as a ratio to the limit measured in the same run: decoding
the two JPEGs of a pair and resizing them (the work no residual pipeline can skip). Variants:
naive (preprocess + subtract + shard writing) and registered (+ batched affine registration).
Also the residual energy before/after registration on pairs with no change.

    python benchmarks/residuals.py [--pairs 64] [--source-px 2048] [--image-size 256]

Source JPEGs are chest-like pictures at a MIMIC-like size (real MIMIC-CXR-JPG films are ~2500 px
on the long side), each pair the same chest under a different pose and noise: a no-change pair.
Figures go to docs/benchmarks.md, section "Data: residual materialization"."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, ImageDraw

from assets.registration import RegistrationConfig
from assets.residuals import ResidualConfig, decode_resize, materialize_group
from assets.shards import iter_pairs
from assets.storage import Storage, read_url


def chest(size: tuple[int, int], dx: float, dy: float, angle: float, seed: int) -> Image.Image:
    w, h = size
    img = Image.new("L", (w, h), 30)
    d = ImageDraw.Draw(img)
    d.rectangle([w * 0.08, h * 0.04, w * 0.92, h * 0.97], fill=165)
    for x0 in (0.16, 0.54):
        d.ellipse([w * x0, h * 0.14, w * (x0 + 0.3), h * 0.8], fill=70)
    for k in range(9):  # ribs: structure for the registration to lock on
        y = h * (0.2 + 0.065 * k)
        d.arc([w * 0.14, y, w * 0.48, y + h * 0.1], 200, 340, fill=120, width=max(2, w // 150))
        d.arc([w * 0.52, y, w * 0.86, y + h * 0.1], 200, 340, fill=120, width=max(2, w // 150))
    d.ellipse([w * 0.45, h * 0.4, w * 0.7, h * 0.72], fill=175)  # heart
    img = img.rotate(angle, resample=Image.BILINEAR, translate=(dx, dy), fillcolor=30)
    noise = np.random.default_rng(seed).normal(0, 4, (h, w))
    return Image.fromarray(np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8))


def make_pairs(root: Path, n: int, px: int) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    size = (int(px * 0.83), px)  # portrait, like a PA film
    rows = []
    for i in range(n):
        paths = []
        for j in range(2):
            p = root / f"{i:04d}_{j}.jpg"
            chest(size, *rng.uniform(-0.02, 0.02, 2) * px, rng.uniform(-3, 3), seed=2 * i + j).save(p, quality=90)
            paths.append(str(p))
        rows.append({"pair_id": f"{i:08x}-0-0-0-0__{i:08x}-1-0-0-0", "subject_id": 10000000 + i,
                     "main_study_id": 50000000 + 2 * i + 1, "ref_study_id": 50000000 + 2 * i,
                     "split": "train", "group": "p10", "main_path": paths[0], "ref_path": paths[1]})
    return pl.DataFrame(rows)


def limit(pairs: pl.DataFrame, size: int, workers: int) -> float:
    """Seconds to read, decode and resize both JPEGs of every pair, with the same thread pool."""
    def work(row):
        return decode_resize(read_url(row[0]), size), decode_resize(read_url(row[1]), size)
    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, pairs.select("main_path", "ref_path").iter_rows()))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--source-px", type=int, default=2048)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="spotdiff-res-bench-"))
    try:
        (tmp / "jpg").mkdir()
        pairs = make_pairs(tmp / "jpg", args.pairs, args.source_px)
        out = {"pairs": args.pairs, "source_px": args.source_px, "image_size": args.image_size,
               "workers": args.workers, "cores": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 1)}
        limit(pairs.head(4), args.image_size, args.workers)  # warm the page cache and imports
        t_limit = limit(pairs, args.image_size, args.workers)
        out["limit_pairs_per_s"] = round(args.pairs / t_limit, 1)
        for name, register in (("naive", False), ("registered", True)):
            cfg = ResidualConfig(image_size=args.image_size, register=register, workers=args.workers,
                                 registration=RegistrationConfig())
            dest = Storage(str(tmp / name))
            materialize_group(pairs.head(4), "p10", Storage(str(tmp / f"warm-{name}")), cfg)  # imports, torch init
            t = time.perf_counter()
            materialize_group(pairs, "p10", dest, cfg)
            s = time.perf_counter() - t
            out[f"{name}_pairs_per_s"] = round(args.pairs / s, 1)
            out[f"{name}_ratio_to_limit"] = round(t_limit / s, 3)
            recs = list(iter_pairs(dest.root)) if dest.exists("manifest.json") else None
            if recs is None:
                from assets.residuals import write_root_manifest
                write_root_manifest(dest, args.image_size)
                recs = list(iter_pairs(dest.root))
            out[f"{name}_mean_residual_energy"] = float(np.mean([(r.registered_residual ** 2).mean() for r in recs]))
        out["energy_reduction"] = round(out["naive_mean_residual_energy"] / out["registered_mean_residual_energy"], 2)
        print(json.dumps(out, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
