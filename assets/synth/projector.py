"""Cone-beam projector: the line integral of attenuation through the CT, along diverging rays from
a point source, sampled plane by plane with torch `grid_sample`.

Why planes: every ray crosses each plane perpendicular to the central beam exactly once, and in a
cone beam the crossing points of one plane are the detector grid scaled by (source-plane distance /
source-isocentre distance). So a projection is a batch of 2-D bilinear resamplings of the volume's
own slices, summed: ~20x faster on CPU than 3-D trilinear sampling along rays (measured: 50 ms vs
0.9 s for 256^2 rays x 130 planes) and it needs no resampling along depth. Small patient rotations
out of the image plane (turning, tilt) become a per-plane shift proportional to depth (a shear),
exact to second order in the angle; in-plane rotation, scaling and translation are exact."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# Attenuation of water per mm at a chest radiograph's effective energy (~60 keV). Only the
# product with the exposure matters downstream; this keeps line integrals in readable units.
MU_WATER_PER_MM = 0.02


@dataclass(frozen=True)
class Geometry:
    """One exposure. Lengths in mm, angles in degrees, on the canonical grid (assets/synth/ct.py).

    view: "PA" (source anterior), "AP" (source posterior) or "LATERAL" (source at the patient's
    right, left side on the detector). center: the volume point (z, y, x) on the central ray.
    fov: field of view at the isocentre plane (the detector's size divided by magnification).
    sod: source-to-isocentre distance. turn/tilt/roll: rotation about the vertical axis, about the
    horizontal image axis, and in the image plane. shift: (rows, cols) offset of the patient in mm.
    scale: (z, y, x) anatomical scaling of the patient about `center` (height, chest depth,
    chest width), whatever the view."""

    view: str
    center: tuple[float, float, float]
    fov: float
    sod: float
    turn: float = 0.0
    tilt: float = 0.0
    roll: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)


def to_view(volume: np.ndarray | torch.Tensor, view: str) -> torch.Tensor:
    """[z, y, x] -> [depth, rows, cols] for the view: frontal rows=z, cols=x (patient's right on the
    viewer's left); lateral rows=z, cols=y (anterior on the viewer's left)."""
    v = torch.as_tensor(volume)
    if view in ("PA", "AP"):
        return v.permute(1, 0, 2).contiguous()
    if view == "LATERAL":
        return v.permute(2, 0, 1).contiguous()
    raise ValueError(f"unknown view {view!r}")


def view_spacing(spacing: tuple[float, float, float], view: str) -> tuple[float, float, float]:
    sz, sy, sx = spacing
    return (sy, sz, sx) if view in ("PA", "AP") else (sx, sz, sy)


def view_center(center: tuple[float, float, float], view: str) -> tuple[float, float, float]:
    cz, cy, cx = center
    return (cy, cz, cx) if view in ("PA", "AP") else (cx, cz, cy)


def project(volume: torch.Tensor, spacing: tuple[float, float, float], geo: Geometry, size: int,
            depth_range: tuple[int, int] | None = None, pool: int = 3) -> torch.Tensor:
    """Line integrals [size, size] (in mm of water) of `volume` [depth, rows, cols] (attenuation
    per mm, already in view order via `to_view`). `depth_range` restricts to planes that hold
    anything (the body), which is most of the speed-up for a cropped chest."""
    d_sp, r_sp, c_sp = view_spacing(spacing, geo.view)
    c_d, c_r, c_c = view_center(geo.center, geo.view)
    s_d, s_r, s_c = view_center(geo.scale, geo.view)  # (z, y, x) -> (depth, rows, cols), like centres
    n_d, n_r, n_c = volume.shape
    k0, k1 = depth_range or (0, n_d)
    planes = volume[k0:k1].float()
    if pool > 1:
        # Sum neighbouring planes before resampling: the projection is a sum over planes anyway,
        # and planes within +-2 mm of a group's centre differ in cone magnification by < 0.25 %
        # (sub-pixel). Measured at pool=3: mean error 0.09 % of the mean line integral, below one
        # grey level, for a third of the work.
        extra = (-planes.shape[0]) % pool
        if extra:
            planes = torch.cat([planes, planes.new_zeros(extra, n_r, n_c)])
        planes = planes.view(-1, pool, n_r, n_c).sum(1)
    k = k0 + (torch.arange(planes.shape[0], dtype=torch.float32) + 0.5) * pool - 0.5
    depth = (k * d_sp - c_d) * s_d  # patient depth of each plane about the isocentre, mm
    # Distance of each plane from the source: the source sits before the first plane for PA and
    # lateral, behind the last for AP.
    src_dist = geo.sod + depth if geo.view != "AP" else geo.sod - depth
    mag = src_dist / geo.sod  # (K,) how much wider than the isocentre footprint a plane's is

    t = (torch.arange(size, dtype=torch.float32) + 0.5) / size - 0.5
    a = t[None, :].expand(size, size) * geo.fov  # cols, at the isocentre plane
    b = t[:, None].expand(size, size) * geo.fov  # rows
    roll = math.radians(geo.roll)
    a, b = a * math.cos(roll) - b * math.sin(roll), a * math.sin(roll) + b * math.cos(roll)
    # Per plane: scale the footprint by the cone, shear by the out-of-plane rotation, shift, then
    # undo the anatomical scaling to land in volume millimetres.
    turn, tilt = math.tan(math.radians(geo.turn)), math.tan(math.radians(geo.tilt))
    # Volume millimetres -> grid_sample's [-1, 1] (align_corners=False), folded into one slope
    # and one offset per plane and axis.
    slopes, offsets = [], []
    for shear, shift, s_ax, sp, n, c in ((turn, geo.shift[1], s_c, c_sp, n_c, c_c), (tilt, geo.shift[0], s_r, r_sp, n_r, c_r)):
        unit = 2.0 / (s_ax * sp * n)
        slopes.append(mag * unit)
        offsets.append((depth * shear - shift) * unit + (c / sp + 0.5) * 2.0 / n - 1.0)
    base = torch.stack((a, b), dim=-1)  # (size, size, 2): (cols, rows) at the isocentre plane
    n_k = planes.shape[0]
    # One contiguous multiply-add for all planes: writing the two grid channels separately
    # (strided) cost more than the resampling itself.
    grid = torch.addcmul(torch.stack(offsets, -1).view(n_k, 1, 1, 2), base[None], torch.stack(slopes, -1).view(n_k, 1, 1, 2))
    samples = torch.nn.functional.grid_sample(planes[:, None], grid, mode="bilinear", padding_mode="zeros",
                                              align_corners=False)  # (K, 1, size, size)
    # Path length per plane: the plane spacing in the patient, lengthened for oblique rays.
    obliquity = torch.sqrt(1 + (a ** 2 + b ** 2) / geo.sod ** 2)
    return samples[:, 0].sum(0) * (d_sp * s_d) * obliquity


def footprint(mask: torch.Tensor, spacing: tuple[float, float, float], geo: Geometry, size: int) -> torch.Tensor:
    """Where a 3-D mask (view order) projects: the line integral of the mask, > 0 inside."""
    return project(mask.float(), spacing, geo, size, pool=1)
