"""Embedded-dataset renderer speed: images/s at 256^2 and 512^2 on one core (one worker
process's view), and the share of time in volume editing, rendering (projection + film
processing + upsampling) and JPEG writing.

    python benchmarks/synth.py [--images 12]

Figures go to docs/benchmarks.md, section "Embedded dataset (synth)"."""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
from PIL import Image

from assets.synth.acquisition import sample_exposure, sample_geometry
from assets.synth.anatomy import attenuation, sample_anatomy
from assets.synth.edits import apply_findings
from assets.synth.findings import SPECS
from assets.synth.render import _STATE, init_worker, render_view
from assets.synth.timeline import sample_timeline


def bench(size: int, render: int, n: int) -> dict:
    ct, thorax = _STATE["ct"], _STATE["thorax"]
    t_edit = t_render = t_jpeg = 0.0
    for i in range(n):
        rng = np.random.default_rng(i)
        anatomy = sample_anatomy(rng)
        study = sample_timeline(rng, 3, 3, 0.0)[-1]
        t0 = time.perf_counter()
        mu = attenuation(ct, anatomy)
        apply_findings(mu, ct, list(study.findings), {name: i for name in SPECS})
        t1 = time.perf_counter()
        geo = sample_geometry(rng, thorax, anatomy, study.view)
        img = render_view(mu, ct, geo, sample_exposure(rng, study.view), render, size, rng, _STATE["depth"][study.view])
        t2 = time.perf_counter()
        Image.fromarray(img, mode="L").save(io.BytesIO(), format="JPEG", quality=92)
        t3 = time.perf_counter()
        t_edit, t_render, t_jpeg = t_edit + t1 - t0, t_render + t2 - t1, t_jpeg + t3 - t2
    total = t_edit + t_render + t_jpeg
    return {"size": size, "render": render, "images_per_s": n / total, "edit": t_edit / total,
            "render_share": t_render / total, "jpeg": t_jpeg / total, "ms_per_image": 1000 * total / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=12)
    args = ap.parse_args()
    t0 = time.perf_counter()
    init_worker()
    print(f"CT load + clean + downsample: {time.perf_counter() - t0:.1f} s (once per worker process)")
    bench(128, 128, 2)  # warm-up: caches (distance maps) and torch kernels
    print("| output | rendered at | images/s (1 core) | ms/image | editing | rendering | JPEG |")
    print("|---|---|---|---|---|---|---|")
    for size, render in ((256, 256), (512, 512), (512, 256)):
        r = bench(size, render, args.images)
        print(f"| {size}^2 | {render}^2 | {r['images_per_s']:.1f} | {r['ms_per_image']:.0f} | "
              f"{r['edit']:.0%} | {r['render_share']:.0%} | {r['jpeg']:.0%} |")


if __name__ == "__main__":
    main()
