"""Affine registration: recovers a known pose change and removes the misregistration residual on
pairs without change; never makes a pair worse. `python -m pytest tests/assets/test_registration.py`"""

import math

import numpy as np
import torch

from assets.registration import identity, ncc, register_affine, residual_energy, warp
from tests.fixtures.tiny_mimic import draw


def chest(seed=0, size=96):
    return torch.from_numpy(np.asarray(draw(size, size, False, (0, 0), seed), np.float32) / 255.0)[None, None]


def known_theta(angle_deg, tx, ty, scale=1.0):
    a = math.radians(angle_deg)
    return torch.tensor([[[scale * math.cos(a), -scale * math.sin(a), tx], [scale * math.sin(a), scale * math.cos(a), ty]]])


def test_recovers_a_known_pose_change():
    fixed = chest()
    theta_true = known_theta(3.0, 0.06, -0.04, 1.03)
    # moving = fixed seen under the inverse pose: registering it back should find theta_true
    inv = torch.linalg.inv(torch.cat([theta_true[0], torch.tensor([[0.0, 0.0, 1.0]])]))[:2][None]
    moving = warp(fixed, inv)
    theta, warped = register_affine(fixed, moving)
    assert torch.allclose(theta, theta_true, atol=0.02), theta
    before, after = residual_energy(fixed, moving).item(), residual_energy(fixed, warped).item()
    assert after < before / 5, (before, after)


def test_no_change_pairs_lose_most_residual_energy():
    # two acquisitions of the same chest: different noise and a pose shift, no finding change
    fixed = torch.from_numpy(np.asarray(draw(96, 96, True, (0, 0), 1), np.float32) / 255.0)[None, None]
    moving = torch.from_numpy(np.asarray(draw(96, 96, True, (3, -2), 2), np.float32) / 255.0)[None, None]
    _, warped = register_affine(fixed, moving)
    assert residual_energy(fixed, warped).item() < 0.3 * residual_energy(fixed, moving).item()


def test_batched_pairs_are_independent():
    fixed = torch.cat([chest(1), chest(2)])
    moving = torch.cat([warp(chest(1), known_theta(0, 0.05, 0)), chest(2)])
    theta, _ = register_affine(fixed, moving)
    alone, _ = register_affine(fixed[:1], moving[:1])
    assert torch.allclose(theta[0], alone[0], atol=1e-5)
    assert torch.allclose(theta[1], identity(1)[0], atol=0.01)


def test_never_worse_than_identity():
    # unrelated images: whatever the optimiser finds, the kept result is no worse than identity
    fixed, moving = chest(1), torch.rand(1, 1, 96, 96)
    _, warped = register_affine(fixed, moving)
    assert ncc(warped, fixed).item() >= ncc(moving, fixed).item() - 1e-6
