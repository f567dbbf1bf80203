"""Where each change between two studies shows in the main image: the embedded dataset's exact
grounding truth, which no real dataset has.

A change is one finding whose state differs between the reference and the main study (added,
missing, or another level). Its footprint is the projection, through the main image's own
acquisition geometry, of the attenuation the change adds or removes: render the subject's chest
with the finding as it is in the reference and as it is in the main study, alone, and project the
difference. Projection is linear, so this is exactly the part of the main image's line integral
the change accounts for; a missing finding is drawn where it was, which is where the registered
reference shows it. Used to score whether a model's evidence falls on the finding
(benchmarks/pointing_game.py)."""

from __future__ import annotations

import numpy as np

from assets.synth.acquisition import sample_geometry
from assets.synth.anatomy import attenuation
from assets.synth.edits import apply_findings
from assets.synth.plan import SubjectPlan, subject_rng
from assets.synth.projector import project, to_view
from assets.synth.render import _STATE, init_worker

# stream 10 + j draws study j's geometry first (assets/synth/render.py), so the frontal view's
# geometry is reproducible without rendering anything else
GEOMETRY_STREAM = 10


def change_kind(main, ref) -> str | None:
    """added / missing / level for one finding's (main, reference) states, None if unchanged."""
    if main is not None and ref is None:
        return "added"
    if ref is not None and main is None:
        return "missing"
    if main is not None and main.level != ref.level:
        return "level"
    return None


def change_footprints(plan: SubjectPlan, main_j: int, ref_j: int, seed: int, render_size: int) -> dict[str, tuple[str, np.ndarray]]:
    """{finding: (kind, map)} for every finding that changes from study ref_j to study main_j of
    one subject; map is (render_size, render_size) float32, |projected Δμ| scaled to max 1, in
    the main frontal image's frame (the same field of view as the JPEG, at render size)."""
    init_worker()
    ct = _STATE["ct"]
    main_study = plan.studies[main_j]
    main = {f.name: f for f in main_study.findings}
    ref = {f.name: f for f in plan.studies[ref_j].findings}
    changes = {n: k for n in sorted(set(main) | set(ref)) if (k := change_kind(main.get(n), ref.get(n)))}
    if not changes:
        return {}
    geo = sample_geometry(subject_rng(seed, plan.index, GEOMETRY_STREAM + main_j), _STATE["thorax"],
                          plan.anatomy, main_study.view)
    base = attenuation(ct, plan.anatomy)
    out = {}
    for name, kind in changes.items():
        before, after = base.copy(), base.copy()
        if name in ref:
            apply_findings(before, ct, [ref[name]], plan.shape_seeds)
        if name in main:
            apply_findings(after, ct, [main[name]], plan.shape_seeds)
        p = project(to_view(after - before, main_study.view), ct.spacing, geo, render_size, _STATE["depth"][main_study.view]).abs()
        out[name] = (kind, (p / p.max().clamp(min=1e-12)).numpy().astype(np.float32))
    return out
