"""Embedded-dataset renderer speed: images/s at 256^2 and 512^2 on one core (one worker
process's view), and the share of time in volume editing, rendering (projection + film
processing + upsampling) and JPEG writing. Times are CPU seconds of this process
(time.process_time), so a machine shared with other jobs slows the wall clock, not the figures.
As in the generator, a subject's attenuation volume is built once for its studies (here 4).

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
from assets.synth.findings import SPECS, Finding
from assets.synth.render import _STATE, init_worker, render_view
from assets.synth.timeline import sample_timeline


def bench(size: int, render: int, n: int, per_subject: int = 4) -> dict:
    ct, thorax = _STATE["ct"], _STATE["thorax"]
    t_edit = t_render = t_jpeg = 0.0
    clock = time.process_time
    for i in range(n):
        rng = np.random.default_rng(i)
        t0 = clock()
        if i % per_subject == 0:
            anatomy = sample_anatomy(np.random.default_rng(10_000 + i))
            base = attenuation(ct, anatomy)
        study = sample_timeline(rng, 3, 3, 0.0)[-1]
        mu = base.copy()
        apply_findings(mu, ct, list(study.findings), {name: i // per_subject for name in SPECS})
        t1 = clock()
        geo = sample_geometry(rng, thorax, anatomy, study.view)
        img = render_view(mu, ct, geo, sample_exposure(rng, study.view), render, size, rng, _STATE["depth"][study.view])
        t2 = clock()
        Image.fromarray(img, mode="L").save(io.BytesIO(), format="JPEG", quality=92)
        t3 = clock()
        t_edit, t_render, t_jpeg = t_edit + t1 - t0, t_render + t2 - t1, t_jpeg + t3 - t2
    total = t_edit + t_render + t_jpeg
    return {"size": size, "render": render, "images_per_s": n / total, "edit": t_edit / total,
            "render_share": t_render / total, "jpeg": t_jpeg / total, "ms_per_image": 1000 * total / n}


def _warm_up() -> None:
    """One-off per-process costs (distance maps per lung and lobe) are not per-image costs."""
    ct = _STATE["ct"]
    for name, spec in SPECS.items():
        for site in spec.sites:
            apply_findings(attenuation(ct, sample_anatomy(np.random.default_rng(0))), ct,
                           [Finding(name, site, spec.levels[-1])], {name: 0})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=12)
    args = ap.parse_args()
    t0 = time.process_time()
    init_worker()
    print(f"CT load + clean + downsample: {time.process_time() - t0:.1f} CPU s (once per worker process)")
    _warm_up()
    bench(128, 128, 2)  # torch kernels
    print("| output | rendered at | images per CPU-s | CPU ms/image | editing | rendering | JPEG |")
    print("|---|---|---|---|---|---|---|")
    for size, render in ((256, 256), (512, 512), (512, 256)):
        r = bench(size, render, args.images)
        print(f"| {size}^2 | {render}^2 | {r['images_per_s']:.1f} | {r['ms_per_image']:.0f} | "
              f"{r['edit']:.0%} | {r['render_share']:.0%} | {r['jpeg']:.0%} |")


if __name__ == "__main__":
    main()
