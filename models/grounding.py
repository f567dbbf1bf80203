"""Grad-CAM on the encoder that sees the difference: where the model's evidence for a change lies.

One implementation for the `ask` heatmap (models/answer.py) and the pointing game
(benchmarks/pointing_game.py). The explained score is a sum of change-head logits, the
evidence for *what changed*; the map is taken on the residual encoder's last feature map (the
image encoder's, for the main image, when the model has no residual branch)."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F


@contextmanager
def last_feature_map(model):
    """Captures the explained encoder's output (grad retained) while encode_pairs runs."""
    enc = model.residual_encoder or model.image_encoder
    saved: dict = {}

    def keep(_module, _inputs, out):
        # the first pass reads the pair as given; with model.swap_average a second pass reads it
        # backwards, which the decoder's tokens do not see (its beliefs enter them detached)
        if "a" not in saved:
            out.retain_grad()
            saved["a"] = out
    hook = enc.register_forward_hook(keep)
    try:
        yield saved
    finally:
        hook.remove()
        model.zero_grad(set_to_none=True)


def cam_maps(act: torch.Tensor, grad: torch.Tensor, size: int) -> np.ndarray:
    """(N, C, h, w) activations and their gradients -> (N, size, size) Grad-CAM in [0, 1].
    A map with nothing positive (an untrained model) falls back to |CAM|."""
    raw = (grad.mean(dim=(2, 3), keepdim=True) * act).sum(dim=1, keepdim=True)
    cam = torch.relu(raw)
    empty = cam.flatten(1).amax(1) <= 0
    cam = torch.where(empty[:, None, None, None], raw.abs(), cam)
    cam = F.interpolate(cam, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    cam = cam - cam.flatten(1).amin(1)[:, None, None]
    return (cam / cam.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]).numpy()


def change_cams(model, main, ref, residual, cells: list[tuple[int, int, int]]) -> np.ndarray:
    """One Grad-CAM per (pair, finding, change kind) cell of the change head; main/ref/residual
    as encode_pairs takes them. In eval mode pairs do not mix (BatchNorm uses its running stats),
    so one backward pass explains one cell of every pair at once: a round per cell rank."""
    if model.finding_heads is None:
        raise ValueError("change_cams needs a model with finding heads (model.finding_heads)")
    model.eval()
    out = np.zeros((len(cells), main.shape[-2], main.shape[-1]), dtype=np.float32)
    per_pair: dict[int, list[int]] = {}
    for n, (p, _, _) in enumerate(cells):
        per_pair.setdefault(p, []).append(n)
    rounds = max((len(v) for v in per_pair.values()), default=0)
    with last_feature_map(model) as saved, torch.enable_grad():
        feats = model.encode_pairs(main, ref, residual)
        act = saved["a"]
        for r in range(rounds):
            picked = [v[r] for v in per_pair.values() if len(v) > r]
            score = sum(feats.findings.change[cells[n][0], cells[n][1], cells[n][2]] for n in picked)
            act.grad = None
            score.backward(retain_graph=r + 1 < rounds)
            rows = torch.tensor([cells[n][0] for n in picked])  # the image encoder's rows start with the main images
            maps = cam_maps(act.detach()[rows], act.grad[rows], main.shape[-1])
            for n, m in zip(picked, maps):
                out[n] = m
    return out
