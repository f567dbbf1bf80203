"""Per-subject anatomy: one CT, many patients. Each subject gets an anisotropic scaling (height,
chest depth, chest width), a habitual posture offset, and tissue densities (body habitus, bone
mineral), so two subjects never render alike. The scaling and posture act through the projector's
geometry (no resampling of the volume); the densities act on the attenuation volume."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from assets.synth.ct import ChestCT
from assets.synth.projector import MU_WATER_PER_MM


@dataclass(frozen=True)
class Anatomy:
    scale: tuple[float, float, float]  # (z, y, x) about the thorax centre
    turn: float  # habitual rotation about the vertical axis, degrees
    tilt: float
    soft_density: float  # x water-equivalent attenuation of non-lung soft tissue (habitus)
    lung_density: float  # x attenuation of aerated lung (inspiration depth)
    bone_density: float  # extra attenuation of bone per HU (mineral, and the lower effective kV)

    def to_dict(self) -> dict:
        return {"scale": list(self.scale), "turn": self.turn, "tilt": self.tilt,
                "soft_density": self.soft_density, "lung_density": self.lung_density,
                "bone_density": self.bone_density}


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    width = rng.uniform(0.88, 1.10)
    # Deeper chests go with wider ones (habitus), with some independent spread.
    depth = float(np.clip(width * rng.uniform(0.93, 1.07), 0.85, 1.15))
    return Anatomy(
        scale=(float(rng.uniform(0.92, 1.08)), depth, float(width)),
        turn=float(rng.normal(0, 1.0)), tilt=float(rng.normal(0, 1.0)),
        soft_density=float(rng.uniform(0.94, 1.06)), lung_density=float(rng.uniform(0.8, 1.25)),
        bone_density=float(rng.uniform(0.6, 1.1)),
    )


def attenuation(ct: ChestCT, anatomy: Anatomy) -> np.ndarray:
    """mu per mm [z, y, x] float32 of this subject's unedited chest."""
    hu = ct.hu
    mu = 1.0 + hu / 1000.0
    soft = hu > -300
    mu = np.where(soft, mu * anatomy.soft_density, mu * anatomy.lung_density)
    mu = mu + anatomy.bone_density * np.clip(hu, 0, None) / 1000.0 * ct.bone
    return (np.clip(mu, 0, None) * MU_WATER_PER_MM).astype(np.float32)
