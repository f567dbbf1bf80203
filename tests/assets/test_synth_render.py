"""Rendering: each finding changes the image where it is (and not elsewhere), the projector puts
anatomy where the geometry says, and the same seed gives the same bytes whatever the number of
worker processes."""

import hashlib

import numpy as np
import pytest
import torch

from assets.synth.acquisition import Exposure, develop, sample_geometry
from assets.synth.anatomy import attenuation, sample_anatomy
from assets.synth.edits import apply_findings
from assets.synth.findings import SPECS, Finding
from assets.synth.generate import generate
from assets.synth.plan import SynthConfig
from assets.synth.projector import Geometry, footprint, project, to_view
from assets.synth.render import _STATE, init_worker

SIZE = 128


@pytest.fixture(scope="module")
def ct():
    init_worker()
    return _STATE


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("view", ["PA", "AP"])
def test_each_finding_changes_the_image_inside_its_projected_region(ct, name, view):
    spec = SPECS[name]
    rng = np.random.default_rng(7)
    anatomy = sample_anatomy(rng)
    geo = sample_geometry(rng, ct["thorax"], anatomy, view)
    base = attenuation(ct["ct"], anatomy)
    edited = base.copy()
    apply_findings(edited, ct["ct"], [Finding(name, spec.sites[0], spec.levels[-1])], {name: 3})
    changed = np.abs(edited - base) > 1e-6
    assert changed.any()
    region = footprint(to_view(changed, view), ct["ct"].spacing, geo, SIZE) > 0.5
    assert 0 < region.float().mean() < 0.9
    exposure = Exposure(low=0.3, high=1.8, unsharp=0.0, gamma=1.0, noise=0.0)
    p0 = project(to_view(base, view), ct["ct"].spacing, geo, SIZE, ct["depth"][view])
    p1 = project(to_view(edited, view), ct["ct"].spacing, geo, SIZE, ct["depth"][view])
    ref = float(p0.median())  # one exposure normalisation for both, as one film would have
    a = develop(p0, exposure, SIZE, np.random.default_rng(0), ref).astype(float)
    b = develop(p1, exposure, SIZE, np.random.default_rng(0), ref).astype(float)
    diff = np.abs(b - a)
    inside, outside = diff[region.numpy()].mean(), diff[~region.numpy()].mean()
    assert inside > 1.0, f"{name}: mean change inside its region only {inside:.2f} grey levels"
    assert inside > 5 * outside, f"{name}: inside {inside:.2f} vs outside {outside:.2f}"


def test_projector_places_a_point_where_the_geometry_says():
    vol = torch.zeros(40, 50, 60)
    vol[20, 10, 45] = 1.0  # depth 20, row 10, col 45 in view order; spacing 2 mm
    centre = (25 * 2.0, 20 * 2.0, 30 * 2.0)  # (z, y, x) for a frontal view: rows=z, cols=x, depth=y
    geo = Geometry(view="PA", center=centre, fov=100.0, sod=1000.0)
    img = project(vol, (2.0, 2.0, 2.0), geo, 100, pool=1)
    r, c = np.unravel_index(int(img.argmax()), img.shape)
    # Plane at depth 0 relative to the isocentre: magnification 1, 1 px = 1 mm.
    assert abs(r - (10 * 2.0 - 25 * 2.0 + 50)) <= 1 and abs(c - (45 * 2.0 - 30 * 2.0 + 50)) <= 1
    # Total signal: value 1 x 2 mm path x a 2x2 mm voxel footprint over 1 mm^2 pixels.
    assert img.sum().item() == pytest.approx(1.0 * 2.0 * 4, rel=0.05)


def _digest(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    cfg = SynthConfig(subjects=4, seed=11, image_size=64, render_size=48, workers=1)
    generate(tmp_path / "a", cfg)
    generate(tmp_path / "b", SynthConfig(**{**cfg.__dict__, "workers": 2}))
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert len(a) > 10 and a == b
    generate(tmp_path / "c", SynthConfig(**{**cfg.__dict__, "seed": 12}))
    c = _digest(tmp_path / "c")
    assert a["medical-diff-vqa/mimic_pair_questions.csv"] != c["medical-diff-vqa/mimic_pair_questions.csv"]


def test_subjects_differ(ct):
    geo_rng = np.random.default_rng(0)
    imgs = []
    for s in (1, 2):
        anatomy = sample_anatomy(np.random.default_rng(s))
        geo = sample_geometry(geo_rng, ct["thorax"], anatomy, "PA")
        p = project(to_view(attenuation(ct["ct"], anatomy), "PA"), ct["ct"].spacing, geo, SIZE, ct["depth"]["PA"])
        imgs.append(develop(p, Exposure(0.3, 1.8, 0.5, 1.0, 0.0), SIZE, np.random.default_rng(0)).astype(float))
    assert np.abs(imgs[0] - imgs[1]).mean() > 5
