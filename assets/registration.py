"""Affine, intensity-based registration of the reference onto the main image, in torch.

Why our own (about 60 lines) rather than SimpleITK or kornia's ImageRegistrator: both register one
pair at a time; a residual shard is thousands of small pairs, and batching B pairs into one
`grid_sample` optimisation is what makes registration cheap enough to run on every pair (see
docs/data.md and docs/benchmarks.md for the measured cost). The same code runs on a GPU unchanged.

Model: ref_registered = grid_sample(ref, affine_grid(theta)), theta a 2x3 matrix in normalised
coordinates (align_corners=False) mapping a main-image location to the reference location it is
sampled from. Loss: 1 - global normalised cross-correlation, robust to the exposure and contrast
differences between two studies. Coarse-to-fine over a 2-level pyramid (32 then 64 px), Adam on theta."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class RegistrationConfig:
    # Pyramid levels by the side (px) they are optimised at, coarse first; the factor is
    # image_size // side. A global affine is fixed by the large structures (lung fields,
    # mediastinum, diaphragm): at 256 px, levels of 32 and 64 px gave the same residual
    # reduction as 64 and 128 px for 1/6 of the cost (docs/data.md).
    level_sizes: tuple[int, ...] = (32, 64)
    iters: tuple[int, ...] = (40, 20)    # Adam steps per level
    lr: float = 0.01
    # A plausible chest-film pose change is a few degrees and a few % of scale; bounding the
    # linear part keeps the optimiser from shrinking the image onto a featureless patch.
    max_linear_deviation: float = 0.25


def identity(batch: int, dtype=torch.float32, device=None) -> torch.Tensor:
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=dtype, device=device).repeat(batch, 1, 1)


def warp(moving: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """moving: (B, 1, H, W); theta: (B, 2, 3) -> (B, 1, H, W)."""
    grid = F.affine_grid(theta, list(moving.shape), align_corners=False)
    return F.grid_sample(moving, grid, mode="bilinear", padding_mode="border", align_corners=False)


def ncc(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Global normalised cross-correlation per image: (B, 1, H, W) x2 -> (B,)."""
    a = a.flatten(1)
    b = b.flatten(1)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def register_affine(fixed: torch.Tensor, moving: torch.Tensor,
                    cfg: RegistrationConfig = RegistrationConfig()) -> tuple[torch.Tensor, torch.Tensor]:
    """Align `moving` (reference) to `fixed` (main). Both (B, 1, S, S) float in [0, 1].
    Returns (theta (B, 2, 3), moving warped onto fixed (B, 1, S, S))."""
    b = fixed.shape[0]
    theta0 = identity(b, fixed.dtype, fixed.device)
    delta = torch.zeros_like(theta0, requires_grad=True)
    with torch.enable_grad():
        for side, n in zip(cfg.level_sizes, cfg.iters):
            scale = max(1, fixed.shape[-1] // side)
            f = F.avg_pool2d(fixed, scale) if scale > 1 else fixed
            m = F.avg_pool2d(moving, scale) if scale > 1 else moving
            opt = torch.optim.Adam([delta], lr=cfg.lr)
            for _ in range(n):
                opt.zero_grad(set_to_none=True)
                loss = (1.0 - ncc(warp(m, theta0 + delta), f)).sum()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    delta[:, :, :2].clamp_(-cfg.max_linear_deviation, cfg.max_linear_deviation)
    theta = (theta0 + delta).detach()
    # Keep the identity where registration made the match worse (e.g. a large new finding
    # dominating the correlation): registration must never increase the residual.
    with torch.no_grad():
        warped = warp(moving, theta)
        worse = ncc(warped, fixed) < ncc(moving, fixed)
        theta[worse] = theta0[worse]
        warped[worse] = moving[worse]
    return theta, warped


def residual_energy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared difference per image: (B,)."""
    return ((a - b) ** 2).flatten(1).mean(1)
