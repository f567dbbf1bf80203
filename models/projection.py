"""Projection module: a spatial feature map -> a few tokens of the GPT-2 width.

Paper §3.2: "a transformer decoder and fully connected layers". Here: n_queries learned queries
cross-attend (transformer decoder) over the flattened feature map with fixed 2-D sin-cos
positions, then an FC maps each query to the decoder width. The reference and main images share
one Projection; the residual has its own (models/model.py)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def sincos_2d(h: int, w: int, dim: int, device=None) -> torch.Tensor:
    """(h*w, dim) fixed positions (MAE-style): no parameters, so any crop size works."""
    assert dim % 4 == 0, "projection width must be divisible by 4 for 2-D sin-cos positions"
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    freqs = torch.exp(-math.log(10000.0) * torch.arange(dim // 4, device=device) / (dim // 4))
    out = []
    for pos in (ys.flatten(), xs.flatten()):
        ang = pos[:, None] * freqs[None, :]  # (h*w, dim/4)
        out += [ang.sin(), ang.cos()]
    return torch.cat(out, dim=1)  # (h*w, dim)


class Projection(nn.Module):
    def __init__(self, in_channels: int, out_dim: int, n_queries: int, n_layers: int, n_head: int,
                 dropout: float):
        super().__init__()
        d = out_dim
        self.inp = nn.Linear(in_channels, d)  # 2048 ResNet channels are too wide to attend in
        self.queries = nn.Parameter(torch.randn(n_queries, d) * 0.02)
        layer = nn.TransformerDecoderLayer(d, n_head, dim_feedforward=4 * d, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, n_layers)
        self.ln = nn.LayerNorm(d)
        self.fc = nn.Linear(d, out_dim)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        P, C, h, w = fmap.shape
        mem = self.inp(fmap.flatten(2).transpose(1, 2))  # (P, h*w, d)
        mem = mem + sincos_2d(h, w, mem.shape[-1], fmap.device)
        tgt = self.queries.expand(P, -1, -1)  # (P, n_queries, d)
        out = self.decoder(tgt, mem)  # (P, n_queries, d)
        return self.fc(self.ln(out))  # (P, n_queries, n_embd)
