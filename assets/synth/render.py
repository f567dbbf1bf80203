"""Plans -> JPEG files. One CT per process (loaded once by `init_worker`, ~3 s and ~1 GB
transient, downsampled before anything else is kept); a subject's images depend only on its plan
and its own random stream, so any split of subjects over processes gives the same bytes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from assets.synth import ids
from assets.synth.acquisition import Thorax, develop, sample_exposure, sample_geometry, thorax_of
from assets.synth.anatomy import attenuation
from assets.synth.ct import ChestCT, load_chest_ct
from assets.synth.edits import apply_findings
from assets.synth.plan import SubjectPlan, SynthConfig, subject_rng
from assets.synth.projector import project, to_view

_STATE: dict = {}


def init_worker(xy_spacing_mm: float = 2.0) -> None:
    # One intra-op thread per process: the pool supplies the parallelism, and oversubscribed
    # threads on a shared 2-core machine only add contention.
    torch.set_num_threads(1)
    if "ct" not in _STATE:
        ct = load_chest_ct(xy_spacing_mm)
        _STATE.update(ct=ct, thorax=thorax_of(ct), depth=_depth_ranges(ct))


def _depth_ranges(ct: ChestCT) -> dict[str, tuple[int, int]]:
    sl = ct.bbox(ct.body)
    return {"PA": (sl[1].start, sl[1].stop), "AP": (sl[1].start, sl[1].stop), "LATERAL": (sl[2].start, sl[2].stop)}


@dataclass
class Timings:
    edit: float = 0.0
    render: float = 0.0
    write: float = 0.0
    images: int = 0

    def add(self, other: "Timings") -> None:
        self.edit += other.edit
        self.render += other.render
        self.write += other.write
        self.images += other.images


@dataclass
class SubjectResult:
    index: int
    images: list[dict] = field(default_factory=list)  # per image: dicom_id, view, geometry, exposure
    timings: Timings = field(default_factory=Timings)


def render_view(mu: np.ndarray, ct: ChestCT, geometry, exposure, cfg_render: int, out_size: int,
                rng: np.random.Generator, depth: tuple[int, int], reference: float | None = None) -> np.ndarray:
    p = project(to_view(mu, geometry.view), ct.spacing, geometry, cfg_render, depth)
    return develop(p, exposure, out_size, rng, reference)


def render_subject(plan: SubjectPlan, cfg: SynthConfig, out_root: Path) -> SubjectResult:
    init_worker()
    ct: ChestCT = _STATE["ct"]
    thorax: Thorax = _STATE["thorax"]
    result = SubjectResult(plan.index)
    t = Timings()
    t0 = time.perf_counter()
    base = attenuation(ct, plan.anatomy)
    t.edit += time.perf_counter() - t0
    for j, study in enumerate(plan.studies):
        rng = subject_rng(cfg.seed, plan.index, 10 + j)
        t0 = time.perf_counter()
        mu = base.copy()
        apply_findings(mu, ct, list(study.findings), plan.shape_seeds)
        t.edit += time.perf_counter() - t0
        views = [study.view] + (["LATERAL"] if study.lateral else [])
        for dicom, view in zip(plan.dicom_ids[j], views):
            geo = sample_geometry(rng, thorax, plan.anatomy, view)
            exp = sample_exposure(rng, view)
            t0 = time.perf_counter()
            img = render_view(mu, ct, geo, exp, cfg.render_size, cfg.image_size, rng, _STATE["depth"][view])
            t1 = time.perf_counter()
            path = out_root / ids.image_path(plan.subject_id, plan.study_ids[j], dicom)
            path.parent.mkdir(parents=True, exist_ok=True)
            # Fixed encoder settings (no optimize/progressive) keep the bytes reproducible.
            Image.fromarray(img, mode="L").save(path, format="JPEG", quality=cfg.jpeg_quality)
            t.write += time.perf_counter() - t1
            t.render += t1 - t0
            t.images += 1
            result.images.append({"dicom_id": dicom, "study_id": plan.study_ids[j], "view": view,
                                  "geometry": geo, "exposure": exp})
    result.timings = t
    return result
