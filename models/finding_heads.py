"""Finding heads: what the encoders must see before the decoder can say it.

ReAl learns its encoders only through the answer tokens, and on the embedded default that signal
was too weak: the decoder learned the answer prior and the encoders little else (change-F1 0.13).
Medical-Diff-VQA's single-image questions say which findings a study has and at which level, and
its difference answer names each finding's change (assets/finding_states.py reads them into
per-pair targets). These heads put that supervision straight on the encoders:

    pooled E_I(main) ─┬─ presence (30 logits), level (30 × 17 logits)    one head for main and ref
    pooled E_I(ref)  ─┘
    [main, ref, main − ref, pooled E_R(residual)] ── change (30 × 4: unchanged/added/missing/level)

and, with `finding_tokens`, hand their (detached) beliefs to GPT-2 as one prefix token per
finding: token_f = e_f + W·[p_main(f), p_ref(f), p_change(f)]. The decoder then reads a finding
list instead of having to discover one in pixels; detaching keeps L_gen from bending the heads
away from what the labels say.

Loss (L_find): masked BCE on presence, masked CE on level and change — cells the questions do not
determine are -1 and ignored. Changed kinds get `change_weight` against `unchanged` (28 of 30
findings are unchanged in a typical pair; without it the head never says "missing")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from assets.finding_states import CHANGE_KINDS, N_FINDINGS, N_LEVELS

# Order of the five target rows in a batch (models/data.py): main/ref presence and level, change.
MAIN_PRESENCE, MAIN_LEVEL, REF_PRESENCE, REF_LEVEL, CHANGE = range(5)
N_CHANGE = len(CHANGE_KINDS)


@dataclass
class FindingLogits:
    main_presence: torch.Tensor  # (P, F)
    ref_presence: torch.Tensor   # (P, F)
    main_level: torch.Tensor     # (P, F, L)
    ref_level: torch.Tensor      # (P, F, L)
    change: torch.Tensor         # (P, F, 4)

    def change_probs(self) -> torch.Tensor:
        return self.change.float().softmax(dim=-1)


class FindingHeads(nn.Module):
    def __init__(self, image_channels: int, residual_channels: int, n_embd: int, hidden: int = 256,
                 name_ids: list[list[int]] | None = None):
        """name_ids: each finding's name as decoder token ids (from the tokenizer). With them a
        finding token also carries the decoder's own embedding of the name (mean over its
        tokens): attention that picks the token retrieves the word, and the tied LM head maps it
        back to that word — reading a finding token becomes a copy, not a learned lookup."""
        super().__init__()
        self.presence = nn.Linear(image_channels, N_FINDINGS)
        self.level = nn.Linear(image_channels, N_FINDINGS * N_LEVELS)
        self.change = nn.Sequential(
            nn.Linear(3 * image_channels + residual_channels, hidden), nn.GELU(),
            nn.Linear(hidden, N_FINDINGS * N_CHANGE))
        self.finding_embed = nn.Parameter(torch.randn(N_FINDINGS, n_embd) * 0.02)
        self.state_proj = nn.Linear(2 + N_CHANGE, n_embd)
        width = max((len(x) for x in name_ids), default=0) if name_ids else 0
        ids = torch.zeros(N_FINDINGS, max(width, 1), dtype=torch.long)
        mask = torch.zeros(N_FINDINGS, max(width, 1))
        for f, seq in enumerate(name_ids or []):
            ids[f, :len(seq)], mask[f, :len(seq)] = torch.tensor(seq, dtype=torch.long), 1.0
        # rebuilt from the tokenizer saved with every checkpoint, so not stored in the weights
        self.register_buffer("name_ids", ids, persistent=False)
        self.register_buffer("name_mask", mask, persistent=False)

    def forward(self, main: torch.Tensor, ref: torch.Tensor, residual: torch.Tensor | None) -> FindingLogits:
        """main, ref (P, C) and residual (P, C_R) or None: globally pooled encoder features."""
        P = main.shape[0]
        parts = [main, ref, main - ref] + ([residual] if residual is not None else [])
        return FindingLogits(
            main_presence=self.presence(main), ref_presence=self.presence(ref),
            main_level=self.level(main).view(P, N_FINDINGS, N_LEVELS),
            ref_level=self.level(ref).view(P, N_FINDINGS, N_LEVELS),
            change=self.change(torch.cat(parts, dim=1)).view(P, N_FINDINGS, N_CHANGE))

    def tokens(self, logits: FindingLogits, targets: torch.Tensor | None = None,
               forced: torch.Tensor | None = None, wte: nn.Embedding | None = None) -> torch.Tensor:
        """(P, F, n_embd): one decoder prefix token per finding, from the detached beliefs.

        forced (P,) bool, with targets (P, 5, F): those pairs' tokens carry the known targets
        instead of the heads' beliefs (unknown cells keep the belief). Early in training the
        beliefs are noise, and a decoder fed only noise learns to ignore the tokens and answer
        the question prior; fed the truth for some pairs, it learns to read them — and at
        inference reads what the heads believe."""
        state = torch.cat([logits.main_presence.sigmoid()[..., None], logits.ref_presence.sigmoid()[..., None],
                           logits.change_probs()], dim=-1).detach()
        if forced is not None and targets is not None and bool(forced.any()):
            truth = torch.cat([targets[:, MAIN_PRESENCE, :, None].float(), targets[:, REF_PRESENCE, :, None].float(),
                               F.one_hot(targets[:, CHANGE].clamp(min=0), N_CHANGE).float()], dim=-1)
            known = torch.stack([targets[:, MAIN_PRESENCE] >= 0, targets[:, REF_PRESENCE] >= 0]
                                + [targets[:, CHANGE] >= 0] * N_CHANGE, dim=-1)
            use = known & forced[:, None, None]
            state = torch.where(use, truth.to(state.dtype), state)
        base = self.finding_embed
        if wte is not None and bool(self.name_mask.any()):
            emb = wte(self.name_ids) * self.name_mask[..., None]  # (F, L, D)
            # the first token is the word the decoder must emit next; the mean tells apart
            # names that share it ("pleural effusion" / "pleural thickening")
            base = base + emb[:, 0] + emb.sum(1) / self.name_mask.sum(1, keepdim=True).clamp(min=1)
        return base[None] + self.state_proj(state.to(self.finding_embed.dtype))


def predicted_changes(logits: FindingLogits, pair: int, fits=None):
    """The change set the heads predict for one pair (a grammar ChangeSet): each finding's most
    likely change kind; a level change takes the level heads' most likely reference and main
    levels (the runner-up for main when both agree, since a change needs two levels).

    fits(ChangeSet) -> bool, when given: the least confident changes are dropped until the set
    fits (an answer naming more than the decoder's token budget holds would be cut off)."""
    from assets.diffvqa.grammar import ChangeSet, LevelChange
    from assets.diffvqa.vocabulary import FINDINGS, LEVELS

    probs = logits.change_probs()[pair].detach()  # (F, 4)
    conf, kinds = probs.max(dim=-1)
    atoms = []  # (confidence, kind, finding, level change or None)
    for f in range(len(FINDINGS)):
        k = int(kinds[f])
        if k == 0:
            continue
        lc = None
        if k == 3:
            ref = int(logits.ref_level[pair, f].argmax())
            main_order = logits.main_level[pair, f].argsort(descending=True).tolist()
            main = main_order[0] if main_order[0] != ref else main_order[1]
            lc = LevelChange(FINDINGS[f], LEVELS[ref], LEVELS[main])
        atoms.append((float(conf[f]), k, FINDINGS[f], lc))
    atoms.sort(key=lambda a: -a[0])

    def build(kept):
        kept = sorted(kept, key=lambda a: FINDINGS.index(a[2]))
        return ChangeSet(added=tuple(a[2] for a in kept if a[1] == 1),
                         missing=tuple(a[2] for a in kept if a[1] == 2),
                         levels=tuple(a[3] for a in kept if a[1] == 3))

    while atoms and fits is not None and not fits(build(atoms)):
        atoms = atoms[:-1]
    return build(atoms)


def _masked_mean(values: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    # stays in the graph when nothing is known, so DDP sees every head parameter used each step
    return (values * known).sum() / known.sum().clamp(min=1)


def state_loss(presence: torch.Tensor, level: torch.Tensor, presence_t: torch.Tensor,
               level_t: torch.Tensor) -> torch.Tensor:
    """One image's findings: masked BCE on presence (N, F) + masked CE on level (N, F, L);
    targets (N, F) long, -1 unknown. Shared by L_find and encoder pretraining (models/pretrain.py)."""
    bce = F.binary_cross_entropy_with_logits(presence.float(), presence_t.clamp(min=0).float(), reduction="none")
    ce = F.cross_entropy(level.float().transpose(1, 2), level_t.clamp(min=0), reduction="none")
    return _masked_mean(bce, (presence_t >= 0).float()) + _masked_mean(ce, (level_t >= 0).float())


def finding_loss(logits: FindingLogits, targets: torch.Tensor, change_weight: float) -> torch.Tensor:
    """targets (P, 5, F) long, -1 = unknown (rows in the order MAIN_PRESENCE .. CHANGE)."""
    loss = (state_loss(logits.main_presence, logits.main_level, targets[:, MAIN_PRESENCE], targets[:, MAIN_LEVEL])
            + state_loss(logits.ref_presence, logits.ref_level, targets[:, REF_PRESENCE], targets[:, REF_LEVEL]))
    t = targets[:, CHANGE]
    weight = torch.full((N_CHANGE,), float(change_weight), device=t.device)
    weight[0] = 1.0
    ce = F.cross_entropy(logits.change.float().transpose(1, 2), t.clamp(min=0), weight=weight,
                         reduction="none")
    w = weight[t.clamp(min=0)] * (t >= 0).float()  # a weighted mean, as cross_entropy's own
    return loss + (ce * (t >= 0).float()).sum() / w.sum().clamp(min=1e-6)
