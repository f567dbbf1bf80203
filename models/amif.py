"""AMiF's three parts (alignment, hard-negative mining, selective fusion) as switchable parts of
ReAl. What the paper does and where this differs: docs/model.md, "AMiF".

Alignment (`amif_align`): a contrastive loss between what the images show and what the text
says, at two levels —
    pooled residual tokens  <->  the pair's change set ("added X", "missing Y", "level of Z")
    pooled main/ref tokens  <->  that study's finding set ("X present")
The text side is the answer vocabulary itself: an item (finding, kind) is embedded as the
decoder's own embedding of the finding's name plus a learned kind vector, a set as the mean of
its items. So alignment pulls the image tokens GPT-2 reads towards the words it has to say.

Mining (`amif_negatives`): each pair also meets texts that differ from its own by exactly one
cell — one finding added, dropped, turned from added into missing, or into a level change — the
hardest negatives there are, built from the targets the grammar parser already read.
Labels are soft: a column's target weight is softmax(Jaccard(own set, column's set) / SOFT_TAU),
so two pairs with the same change set (many "nothing has changed") are both positives instead of
being pushed apart, and a one-cell negative keeps a little mass but less than the truth.

Fusion (`gated_fusion`): the image tokens cross-attend to a bank of the answer vocabulary (the
30 finding names and 17 level words, as decoder embeddings) and a learned sigmoid gate per token
decides how much of what they retrieved to add: x + g·attn(x, bank)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from assets.finding_states import N_FINDINGS

# Item kinds of a text: "present" (a study's finding set), then the change kinds added/missing/level
# (assets/finding_states.py CHANGE_KINDS 1..3; slot 0 is free since "unchanged" is no item).
PRESENT, N_KINDS = 0, 4
SOFT_TAU = 0.1        # temperature of the soft labels over Jaccard similarities
GATE_INIT_BIAS = -2.0  # the gate starts mostly closed (sigmoid(-2) = 0.12): fusion must earn its way in


def change_items(change: torch.Tensor) -> torch.Tensor:
    """(N, F) change codes (-1 unknown, 0 unchanged, 1..3 added/missing/level) -> (N, F, 4) items."""
    items = F.one_hot(change.clamp(min=0), N_KINDS).float()
    items[..., PRESENT] = 0.0  # "unchanged" is not an item of the answer
    return items


def presence_items(presence: torch.Tensor) -> torch.Tensor:
    """(N, F) presence codes (-1 unknown, 0 absent, 1 present) -> (N, F, 4) items in the PRESENT slot."""
    items = torch.zeros(*presence.shape, N_KINDS, device=presence.device)
    items[..., PRESENT] = (presence == 1).float()
    return items


def one_cell_negatives(codes: torch.Tensor, k: int, n_codes: int, generator=None) -> torch.Tensor:
    """(N, F) codes -> (N, k, F): each negative changes exactly one cell to another code, so its
    set differs from the truth by one finding or one change kind (the hardest negatives)."""
    N, Fn = codes.shape
    base = codes.clamp(min=0)
    cell = torch.randint(0, Fn, (N, k), generator=generator, device=codes.device)
    shift = torch.randint(1, n_codes, (N, k), generator=generator, device=codes.device)
    negs = base[:, None, :].repeat(1, k, 1)
    old = negs.gather(2, cell[..., None])
    negs.scatter_(2, cell[..., None], (old + shift[..., None]) % n_codes)
    return negs


def jaccard(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, F, K) and (M, F, K) item sets -> (N, M) |a ∩ b| / |a ∪ b|; two empty sets are equal (1)."""
    a, b = a.flatten(1), b.flatten(1)
    inter = a @ b.T
    union = a.sum(1, keepdim=True) + b.sum(1)[None] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-6), torch.ones_like(inter))


def soft_contrastive(image: torch.Tensor, texts: torch.Tensor, similarity: torch.Tensor,
                     tau: float) -> torch.Tensor:
    """Cross-entropy of softmax(image·text/tau) against softmax(similarity/SOFT_TAU), per row.
    image (N, E) and texts (M, E) are L2-normalised here; similarity (N, M) in [0, 1]."""
    logits = F.normalize(image, dim=-1) @ F.normalize(texts, dim=-1).T / tau
    target = (similarity / SOFT_TAU).softmax(dim=-1)
    return -(target * logits.log_softmax(dim=-1)).sum(dim=-1).mean()


class SetText(nn.Module):
    """A set of (finding, kind) items as one vector in the alignment space."""

    def __init__(self, n_embd: int, dim: int):
        super().__init__()
        self.finding = nn.Parameter(torch.randn(N_FINDINGS, n_embd) * 0.02)  # used without a tokenizer
        self.kind = nn.Parameter(torch.randn(N_KINDS, n_embd) * 0.02)
        self.empty = nn.Parameter(torch.randn(n_embd) * 0.02)  # "nothing has changed" / "no finding"
        self.proj = nn.Sequential(nn.Linear(n_embd, n_embd), nn.GELU(), nn.Linear(n_embd, dim))

    def forward(self, items: torch.Tensor, names: torch.Tensor | None) -> torch.Tensor:
        """items (N, F, K); names (F, n_embd) the decoder's embedding of each finding's name or None."""
        word = self.finding if names is None else names + self.finding
        item = word[:, None, :] + self.kind[None]  # (F, K, D)
        count = items.sum(dim=(1, 2))[:, None]
        mean = torch.einsum("nfk,fkd->nd", items, item.to(items.dtype)) / count.clamp(min=1)
        return self.proj(torch.where(count > 0, mean, self.empty[None].to(mean.dtype)))


class Alignment(nn.Module):
    """L_align: residual <-> change set and image <-> finding set, with one-cell hard negatives."""

    def __init__(self, n_embd: int, residual: bool, dim: int = 128, negatives: int = 4, tau: float = 0.1):
        super().__init__()
        self.negatives, self.tau = negatives, tau
        self.text = SetText(n_embd, dim)
        self.image = nn.Linear(n_embd, dim)      # main and reference share E_I, so one map
        # only with a residual branch: DDP refuses parameters that never get a gradient
        self.residual = nn.Linear(n_embd, dim) if residual else None

    def _level(self, feats: torch.Tensor, proj: nn.Module, codes: torch.Tensor, to_items,
               n_codes: int, names) -> torch.Tensor:
        known = (codes >= 0).all(dim=1)
        if int(known.sum()) < 2:  # nothing to contrast; stays in the graph for DDP
            return feats.sum() * 0.0 + sum(p.sum() for p in self.parameters()) * 0.0
        codes, img = codes[known], proj(feats[known].float().mean(dim=1))
        items = to_items(codes)
        cols = [items]
        if self.negatives:
            negs = one_cell_negatives(codes, self.negatives, n_codes)
            cols.append(to_items(negs.flatten(0, 1)))
        bank = torch.cat(cols)  # (N + N·k, F, K): the batch's texts, then the negatives
        texts = self.text(bank, names)
        sim = jaccard(items, bank)
        img, texts = img.float(), texts.float()  # a softmax over many columns: not in bf16
        i2t = soft_contrastive(img, texts, sim, self.tau)
        t2i = soft_contrastive(texts[: len(items)], img, sim[:, : len(items)].T, self.tau)
        return 0.5 * (i2t + t2i)

    def forward(self, main, ref, residual, targets: torch.Tensor, names=None) -> torch.Tensor:
        """main/ref/residual: projected tokens (P, nq, D) (residual may be None); targets (P, 5, F)."""
        from models.finding_heads import CHANGE, MAIN_PRESENCE, REF_PRESENCE

        loss = self._level(torch.cat([main, ref]), self.image,
                           torch.cat([targets[:, MAIN_PRESENCE], targets[:, REF_PRESENCE]]),
                           presence_items, 2, names)
        if residual is not None and self.residual is not None:
            loss = loss + self._level(residual, self.residual, targets[:, CHANGE], change_items,
                                      N_KINDS, names)
        return loss


class GatedFusion(nn.Module):
    """Tokens attend to the answer vocabulary; a per-token gate lets through what helps."""

    def __init__(self, n_embd: int, n_head: int, n_words: int):
        super().__init__()
        self.words = nn.Parameter(torch.randn(n_words, n_embd) * 0.02)  # used without a tokenizer
        self.attn = nn.MultiheadAttention(n_embd, n_head, batch_first=True)
        self.gate = nn.Linear(2 * n_embd, 1)
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, GATE_INIT_BIAS)
        self.last_gate: torch.Tensor | None = None  # mean gate of the last call, for logging

    def forward(self, x: torch.Tensor, vocab: torch.Tensor | None) -> torch.Tensor:
        """x (P, n, D); vocab (n_words, D) the decoder's embeddings of the answer words, or None."""
        bank = self.words if vocab is None else vocab + self.words
        bank = bank[None].expand(x.shape[0], -1, -1).to(x.dtype)
        found, _ = self.attn(x, bank, bank, need_weights=False)
        g = torch.sigmoid(self.gate(torch.cat([x, found], dim=-1)))  # (P, n, 1)
        self.last_gate = g.detach().mean()
        return x + g * found
