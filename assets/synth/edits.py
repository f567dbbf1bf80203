"""Findings as edits of the attenuation volume (mu per mm, canonical grid [z, y, x]), driven by the
TotalSegmentator label map. Each edit changes `mu` in place inside a crop and scales with the
level's index. `seed` fixes the finding's shape for one subject, so a nodule stays where it was and
a consolidation keeps its texture while its level changes between studies.

Shapes follow what looked real when tried on this CT: an effusion fills the pleural space
from the dependent part with a meniscus rising laterally; cardiomegaly scales the heart about an
anchor on its right border; a focal opacity is a lobulated soft-tissue sphere in a lobe;
consolidation is a smoothed random field inside a lobe sparing the airways (air bronchograms);
atelectasis collapses a lobe towards the hilum (volume loss) with the rest of it hyperlucent;
pneumothorax is an apical-lateral air rim from a distance map with a faint pleural line; edema is a
perihilar ("bat-wing") rise of lung density. Hard-edged blocks looked artificial, hence the
soft (blurred) masks throughout."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from assets.synth.ct import HEART, LOBES, ChestCT
from assets.synth.findings import EDIT_ORDER, Finding
from assets.synth.projector import MU_WATER_PER_MM as MU_W

FLUID = MU_W * 1.015  # ~ +15 HU
SOFT = MU_W * 1.04  # ~ +40 HU
AIRLESS_LUNG = MU_W * 0.97  # consolidated / collapsed lung, ~ -30 HU


def apply_findings(mu: np.ndarray, ct: ChestCT, findings: list[Finding], seeds: dict[str, int]) -> None:
    """Apply every finding in EDIT_ORDER (so the result does not depend on list order)."""
    for name in EDIT_ORDER:
        for f in findings:
            if f.name == name:
                EDITS[name](mu, ct, f, np.random.default_rng(seeds[name]), seeds[name])


def _coords(sl: tuple[slice, ...], spacing) -> tuple[np.ndarray, ...]:
    """mm coordinates (z, y, x) of a crop, as broadcastable open grids."""
    return tuple((np.arange(s.start, s.stop) * sp).reshape([-1 if i == a else 1 for i in range(3)])
                 for a, (s, sp) in enumerate(zip(sl, spacing)))


def _pad(sl: tuple[slice, ...], shape, pad: tuple[int, int, int]) -> tuple[slice, ...]:
    return tuple(slice(max(0, s.start - p), min(n, s.stop + p)) for s, n, p in zip(sl, shape, pad))


def _depth(ct: ChestCT, key: str, mask: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray]:
    """Distance in mm from each voxel of `mask` to the nearest voxel outside it (0 outside),
    on the mask's padded bounding box; cached per CT."""
    if key not in ct.cache:
        sl = _pad(ct.bbox(mask), ct.shape, (2, 2, 2))
        ct.cache[key] = (sl, ndimage.distance_transform_edt(mask[sl], sampling=ct.spacing).astype(np.float32))
    return ct.cache[key]


def _smooth_noise(rng: np.random.Generator, shape, sigma) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field / field.std()


def _cached(ct: ChestCT, key: tuple, make):
    """A one-entry cache per kind: a subject's texture is reused across its studies (same seed),
    and memory stays bounded when the next subject arrives."""
    slot = ct.cache.get(key[0])
    if slot is None or slot[0] != key:
        slot = (key, make())
        ct.cache[key[0]] = slot
    return slot[1]


def _lateralness(x: np.ndarray, side: str) -> np.ndarray:
    """0 at the medial edge of the crop, 1 at the lateral edge (x runs patient right -> left)."""
    t = (x - x.min()) / max(float(x.max() - x.min()), 1.0)
    return t if side == "left" else 1.0 - t


def _blend_up(mu: np.ndarray, sl, frac: np.ndarray, target: float | np.ndarray, keep_bone=None) -> None:
    """Move mu towards `target` by `frac`, never lowering it (fluid over lung, not over bone)."""
    cur = mu[sl]
    new = cur * (1 - frac) + target * frac
    if keep_bone is not None:
        new = np.where(keep_bone, cur, new)
    mu[sl] = np.maximum(cur, new)


def effusion(mu: np.ndarray, ct: ChestCT, f: Finding, rng: np.random.Generator, seed: int) -> None:
    i = f.level_index
    lung = ct.lung(f.side)
    sl, depth = _depth(ct, f"depth:lung:{f.side}", lung)
    inside = lung[sl]
    z, _, x = _coords(sl, ct.spacing)
    zbot = float((z * inside).max())
    lat = _lateralness(x, f.side)
    height = (22.0, 55.0, 95.0)[i] * rng.uniform(0.85, 1.15)
    # Fluid lines the pleural space as a layer that thickens downwards until it fills the base:
    # a hazy upper margin and, because the layer is seen edge-on at the lateral wall, a meniscus
    # rising laterally. Thicker laterally for the same reason it rises there (surface tension).
    full = zbot - height * (0.35 + 0.6 * lat ** 1.5)  # filled below: higher laterally (meniscus)
    top = full - 0.9 * height - 15.0
    thick = 70.0 * np.clip((z - top) / (full - top), 0, 1) ** 2 * (0.45 + lat)
    fluid = inside & (depth < thick)
    frac = ndimage.gaussian_filter(fluid.astype(np.float32), 0.8) * inside
    _blend_up(mu, sl, frac, FLUID)


def cardiomegaly(mu: np.ndarray, ct: ChestCT, f: Finding, rng: np.random.Generator, seed: int) -> None:
    factor = (1.15, 1.28, 1.42)[f.level_index]
    heart = ct.mask(HEART)
    sl = _pad(ct.bbox(heart), ct.shape, (8, 10, 25))
    h = heart[sl].astype(np.float32)
    idx = np.argwhere(h > 0)
    c = idx.mean(0)
    # The heart enlarges mostly to the patient's left and downwards: anchor the scaling near the
    # right heart border and the top.
    anchor = np.array([idx[:, 0].min() + 0.3 * np.ptp(idx[:, 0]), c[1], idx[:, 2].min() + 0.2 * np.ptp(idx[:, 2])])
    scale = np.array([factor ** 0.6, factor ** 0.5, factor])
    frac = ndimage.affine_transform(h, 1.0 / scale, offset=anchor - anchor / scale, order=1)
    _blend_up(mu, sl, np.clip(frac - h, 0, 1), SOFT, keep_bone=ct.bone[sl] > 0.2)


def pneumothorax(mu: np.ndarray, ct: ChestCT, f: Finding, rng: np.random.Generator, seed: int) -> None:
    lung = ct.lung(f.side)
    sl, depth = _depth(ct, f"depth:lung:{f.side}", lung)
    inside = lung[sl]
    z, _, x = _coords(sl, ct.spacing)
    ztop = float(np.where(inside, z, np.inf).min())
    zbot = float((z * inside).max())
    zt = (z - ztop) / (zbot - ztop)
    lat = _lateralness(x, f.side)
    # Air collects apically and laterally in an erect patient: widest at the apex, tapering down.
    gap = (14.0, 28.0)[f.level_index] * rng.uniform(0.85, 1.15) * np.clip(1 - zt / 0.75, 0, 1) ** 1.2
    gap = gap * np.clip(0.4 + lat, 0, 1)
    air = inside & (depth < gap)
    line = inside & ~air & (depth < gap + 2.5) & (gap > 2.0)
    cur = mu[sl]
    target = np.where(air, 0.0, np.where(line, np.maximum(cur, MU_W * 0.6), cur))  # + visceral pleural line
    # Soft edges, but only around the air and the line: the rest of the lung keeps its texture.
    w = ndimage.gaussian_filter((air | line).astype(np.float32), 0.7) * inside
    mu[sl] = cur * (1 - w) + target * w


def lung_opacity(mu: np.ndarray, ct: ChestCT, f: Finding, rng: np.random.Generator, seed: int) -> None:
    lobe = ct.mask(LOBES[f.site])
    sl, depth = _depth(ct, f"depth:lobe:{f.site}", lobe)
    radius = (10.0, 19.0)[f.level_index] * rng.uniform(0.85, 1.15)
    # The centre is drawn where the largest level still fits, so it stays put as the level changes.
    cand = np.argwhere(depth > 22.0)
    if len(cand) == 0:
        cand = np.argwhere(depth >= depth.max() * 0.8)
    centre = (cand[rng.integers(len(cand))] + [s.start for s in sl]) * np.array(ct.spacing)
    z, y, x = _coords(sl, ct.spacing)
    d = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
    u = [(z - centre[0]) / (d + 1e-3), (y - centre[1]) / (d + 1e-3), (x - centre[2]) / (d + 1e-3)]
    w, phase = rng.normal(size=(3, 3)), rng.uniform(0, 2 * np.pi, 3)
    lobulation = sum(0.08 * np.sin(3 * (w[k, 0] * u[0] + w[k, 1] * u[1] + w[k, 2] * u[2]) + phase[k]) for k in range(3))
    frac = np.clip((radius * (1 + lobulation) - d) / 2.5 + 0.5, 0, 1) * (depth > 0)
    _blend_up(mu, sl, frac.astype(np.float32), SOFT)


def consolidation(mu: np.ndarray, ct: ChestCT, f: Finding, rng: np.random.Generator, seed: int) -> None:
    lobe = ct.mask(LOBES[f.site])
    sl = ct.bbox(lobe)
    inside = lobe[sl]
    field = _cached(ct, ("consolidation:field", f.site, seed), lambda: _smooth_noise(rng, inside.shape, (2.4, 3.0, 3.0)))
    z, _, _ = _coords(sl, ct.spacing)
    field = field + 0.6 * (z - z.mean()) / max(float(np.ptp(z)), 1.0)  # dependent first
    share = (0.25, 0.5, 0.8)[f.level_index]
    cut = np.quantile(field[inside], 1 - share)
    region = inside & (field > cut) & (ct.hu[sl] > -930)  # airways spared: air bronchograms
    frac = ndimage.gaussian_filter(region.astype(np.float32), 0.8) * inside * 0.9
    _blend_up(mu, sl, frac, AIRLESS_LUNG)


def atelectasis(mu: np.ndarray, ct: ChestCT, f: Finding, rng: np.random.Generator, seed: int) -> None:
    lobe = ct.mask(LOBES[f.site])
    sl = ct.bbox(lobe)
    inside = lobe[sl].astype(np.float32)
    idx = np.argwhere(inside > 0)
    medial = idx[:, 2].max() if f.side == "right" else idx[:, 2].min()  # x runs right -> left
    anchor = np.array([idx[:, 0].min() + 0.25 * np.ptp(idx[:, 0]), idx[:, 1].mean(), medial])
    s = (0.35, 0.5, 0.65)[f.level_index] * rng.uniform(0.9, 1.1)
    collapsed = ndimage.affine_transform(inside, np.full(3, 1.0 / s), offset=anchor - anchor / s, order=1)
    collapsed = collapsed * inside
    rest = inside * (1 - collapsed)
    cur = mu[sl]
    mu[sl] = cur * (1 - 0.12 * rest)  # the rest of the lobe over-expands: hyperlucent
    _blend_up(mu, sl, collapsed, AIRLESS_LUNG)


def edema(mu: np.ndarray, ct: ChestCT, f: Finding, rng: np.random.Generator, seed: int) -> None:
    lungs = ct.lung(None)
    sl = ct.bbox(lungs)
    if "edema:weight" not in ct.cache:
        z, y, x = _coords(sl, ct.spacing)
        zc = float(np.mean(z[lungs[sl].any(axis=(1, 2))]))
        xc = float(np.mean(x[0, 0][lungs[sl].any(axis=(0, 1))]))
        # Perihilar: strongest next to the hila (about 40 mm either side of the midline).
        r = np.sqrt((z - zc) ** 2 + (y - float(np.mean(y))) ** 2 * 0.5 + (np.abs(x - xc) - 40.0) ** 2)
        ct.cache["edema:weight"] = (np.exp(-r / 75.0) * lungs[sl]).astype(np.float32)
    weight = ct.cache["edema:weight"]
    texture = _cached(ct, ("edema:texture", seed), lambda: _smooth_noise(rng, weight.shape, 1.5))
    texture = 0.75 + 0.25 * texture
    hu_rise = (110.0, 200.0, 320.0)[f.level_index]
    mu[sl] += (MU_W * hu_rise / 1000.0) * (weight * texture + 0.15 * lungs[sl])


EDITS = {"pleural effusion": effusion, "cardiomegaly": cardiomegaly, "pneumothorax": pneumothorax,
         "lung opacity": lung_opacity, "consolidation": consolidation, "atelectasis": atelectasis,
         "edema": edema}
