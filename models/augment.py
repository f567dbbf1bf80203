"""Paper augmentation for grayscale pairs: one random crop box and one set of photometric factors
per pair, applied to main and reference alike; the residual is then recomputed from the augmented
images so it stays exactly "main minus reference" as the model sees them.

The paper (sec. 4.1) crops random patches and adjusts brightness, contrast, saturation and
sharpness. Saturation is meaningless on one channel, so it is dropped. Main and reference get the
*same* factors: independent factors would paint an exposure difference into the residual that the
answer does not talk about."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF


@dataclass(frozen=True)
class AugmentConfig:
    out_size: int            # side of the square the model takes (ModelConfig.image_size)
    crop_scale: float = 1.0  # crop box side as a fraction of the stored side; 1.0 = whole image
    brightness: float = 0.0  # factor drawn from [1 - b, 1 + b]
    contrast: float = 0.0
    sharpness: float = 0.0


def _uniform(gen: torch.Generator, spread: float) -> float:
    return 1.0 + spread * (2.0 * torch.rand((), generator=gen).item() - 1.0)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    return F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)[0]


def crop_box(side: int, cfg: AugmentConfig, gen: torch.Generator | None) -> tuple[int, int, int]:
    """(top, left, box side). gen=None means evaluation: the centred box."""
    box = max(1, min(side, round(side * cfg.crop_scale)))
    if gen is None:
        return (side - box) // 2, (side - box) // 2, box
    top = int(torch.randint(0, side - box + 1, (), generator=gen))
    left = int(torch.randint(0, side - box + 1, (), generator=gen))
    return top, left, box


def augment_pair(main: torch.Tensor, ref: torch.Tensor, cfg: AugmentConfig,
                 gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """main, ref: (1, S, S) float in [0, 1]. Returns (main, ref, residual), each (1, out, out);
    residual = main - ref in [-1, 1]. gen=None: deterministic evaluation view (centre crop, no
    photometric change)."""
    top, left, box = crop_box(main.shape[-1], cfg, gen)
    main = _resize(main[:, top:top + box, left:left + box], cfg.out_size)
    ref = _resize(ref[:, top:top + box, left:left + box], cfg.out_size)
    if gen is not None:
        b, c, s = (_uniform(gen, cfg.brightness), _uniform(gen, cfg.contrast),
                   _uniform(gen, cfg.sharpness))
        # One contrast pivot for both images (the main image's mean), so equal pixels stay equal.
        pivot = main.mean()
        main, ref = [((x * b - pivot * b) * c + pivot * b).clamp(0, 1) for x in (main, ref)]
        if cfg.sharpness > 0:
            main, ref = TF.adjust_sharpness(main, s), TF.adjust_sharpness(ref, s)
    main, ref = main.clamp(0, 1), ref.clamp(0, 1)
    return main, ref, main - ref
