"""How one study was taken, and how a line-integral image becomes an 8-bit radiograph.

Between studies of one subject: pose (a few degrees, a few mm), magnification (field of view),
PA (erect, 180 cm) vs AP (portable, ~100 cm: more magnification of the anterior heart),
exposure, contrast processing (unsharp masking as on processed digital films), gamma and noise.
The field of view is collimated to the thorax: the CT reaches from C5 to L3 and its full height
would be 40 % abdomen."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from assets.synth.anatomy import Anatomy
from assets.synth.ct import ChestCT
from assets.synth.projector import Geometry


@dataclass(frozen=True)
class Exposure:
    low: float  # window on the line integral, as multiples of the image's median: black at `low`
    high: float  # ... white at `high` (the detector's log signal, windowed as a processed film)
    unsharp: float  # strength of the high-pass boost
    gamma: float
    noise: float  # std of additive noise, in [0, 1] grey units at the output size

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Thorax:
    """Where the chest is in the CT (mm on the canonical grid): the collimation target."""

    center: tuple[float, float, float]
    half_width: float  # x mm from center to the CT's side edge


def thorax_of(ct: ChestCT) -> Thorax:
    sl = ct.bbox(ct.lung(None))
    sp = ct.spacing
    centre = tuple(((s.start + s.stop - 1) / 2) * d for s, d in zip(sl, sp))
    half_width = min(centre[2], (ct.shape[2] - 1) * sp[2] - centre[2])
    return Thorax(center=centre, half_width=half_width)  # type: ignore[arg-type]


def sample_geometry(rng: np.random.Generator, thorax: Thorax, anatomy: Anatomy, view: str) -> Geometry:
    sod = {"PA": rng.uniform(1550, 1750), "AP": rng.uniform(850, 1050), "LATERAL": rng.uniform(1550, 1750)}[view]
    cz, cy, cx = thorax.center
    # Collimate to the lungs with a margin; keep the most magnified plane's footprint inside the
    # CT (its top is C5 and its sides cut the arms), or black bands would show.
    fov = rng.uniform(265, 290)
    max_mag = (sod + 90.0) / sod
    # Volume mm = patient mm / scale, so a narrower patient needs a narrower field.
    # (The lateral's horizontal axis is the chest's depth; the CT's y extent is as wide as its x.)
    side_scale = anatomy.scale[2] if view != "LATERAL" else anatomy.scale[1]
    fov = min(fov, 2 * (cz - 12.0) * anatomy.scale[0] / max_mag, 2 * (thorax.half_width - 12.0) * side_scale / max_mag)
    return Geometry(
        view=view, center=(cz + rng.uniform(-6, 6), cy, cx + rng.uniform(-4, 4)), fov=float(fov), sod=float(sod),
        turn=anatomy.turn + float(rng.normal(0, 1.5)), tilt=anatomy.tilt + float(rng.normal(0, 1.5)),
        roll=float(rng.normal(0, 1.2)), shift=(float(rng.normal(0, 3)), float(rng.normal(0, 3))),
        scale=anatomy.scale,
    )


def sample_exposure(rng: np.random.Generator, view: str) -> Exposure:
    high = rng.uniform(1.6, 2.0) if view != "LATERAL" else rng.uniform(1.8, 2.2)
    return Exposure(low=float(rng.uniform(0.28, 0.4)), high=float(high), unsharp=float(rng.uniform(0.4, 0.8)),
                    gamma=float(rng.uniform(0.8, 1.1)), noise=float(rng.uniform(0.008, 0.025)))


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x[None, None], (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return x[0, 0]


def develop(line_integral: torch.Tensor, exposure: Exposure, out_size: int, rng: np.random.Generator,
            reference: float | None = None) -> np.ndarray:
    """Line integrals [n, n] (mm water) -> uint8 [out_size, out_size]. `reference` fixes the
    exposure normalisation (the median line integral) so two renders of one study with and
    without a finding stay comparable; by default it is this image's own median."""
    p = line_integral
    ref = float(p.median()) if reference is None else reference
    # A linear window on the log signal (the line integral), then unsharp masking: what a
    # processed digital chest film looks like (a 1 - exp(-p) film curve left the lungs grey).
    img = (p / max(ref, 1e-6) - exposure.low) / (exposure.high - exposure.low)
    img = img + exposure.unsharp * (img - _blur(img, p.shape[0] / 32))
    img = img.clamp(0, 1) ** exposure.gamma
    if out_size != img.shape[0]:
        img = F.interpolate(img[None, None], size=(out_size, out_size), mode="bilinear", align_corners=False)[0, 0]
    arr = img.numpy() + rng.normal(0.0, exposure.noise, size=(out_size, out_size)).astype(np.float32)
    return (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
