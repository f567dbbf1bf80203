"""ReAl (Lu et al., MICCAI 2024): difference VQA with a residual branch and residual feature
alignment. Architecture and the exact L_con are written down in docs/model.md.

    main, ref ──E_I (shared)──> image projection (shared) ──> main tokens, ref tokens
    main − ref ──E_R──────────> residual projection ────────> residual tokens
    GPT-2 over [residual, ref, main, question tokens, bos + answer] -> answer (+ eos)
    loss = L_gen + λ·L_con,  L_con = mean_p ‖f_ref − f_main − f_R‖² / D  (pooled projected tokens)

Batches are grouped by pair: `encode_pairs` runs the image encoder once for P pairs, and
`forward` gathers those features for the Q questions through `pair_index`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from assets.finding_states import N_FINDINGS, N_LEVELS
from models.amif import Alignment, GatedFusion
from models.config import ModelConfig
from models.encoders import ImageEncoder
from models.finding_heads import BACKWARDS, FindingHeads, FindingLogits, finding_loss
from models.projection import Projection
from models.vocabulary import mean_word_embeddings, padded_ids


@dataclass
class PairFeatures:
    """Projected tokens of P pairs; residual is None for the baseline (use_residual=False)."""

    main: torch.Tensor               # (P, n_queries, n_embd)
    ref: torch.Tensor                # (P, n_queries, n_embd)
    residual: torch.Tensor | None    # (P, n_queries, n_embd)
    findings: FindingLogits | None = None       # the finding heads' outputs (finding_heads)
    finding_tokens: torch.Tensor | None = None  # (P, 30, n_embd) (finding_tokens)

    def tokens(self) -> torch.Tensor:
        parts = ([self.residual] if self.residual is not None else []) + [self.ref, self.main]
        if self.finding_tokens is not None:
            parts.append(self.finding_tokens)
        return torch.cat(parts, dim=1)  # (P, n_prefix, n_embd)


def rfa_loss(ref: torch.Tensor, main: torch.Tensor, residual: torch.Tensor,
             stop_grad: bool = False) -> torch.Tensor:
    """L_con = ‖f_ref − f_main − f_R‖², the paper's sign, with f = the projected tokens of each
    image mean-pooled over the n_queries tokens: (P, n_queries, D) -> (P, D). The squared norm is
    divided by D and averaged over pairs (an MSE), so λ does not scale with the decoder width.
    The residual input is main − ref, so this asks E_R to produce −(f_main − f_ref); a learned
    linear map absorbs the sign, so we keep the paper's formula as written.

    stop_grad detaches f_ref − f_main: the image branch is then a fixed target and L_con cannot be
    lowered by making the image features alike (their collapse is L_con's trivial minimum)."""
    # float32: under bf16 autocast a squared-error mean loses digits the loss curve needs
    f_ref, f_main, f_res = (t.float().mean(dim=1) for t in (ref, main, residual))  # (P, D) each
    target = f_ref - f_main
    if stop_grad:
        target = target.detach()
    return (target - f_res).pow(2).mean()


class ReAl(nn.Module):
    def __init__(self, cfg: ModelConfig, pad_token_id: int, bos_token_id: int, eos_token_id: int,
                 finding_name_ids: list[list[int]] | None = None,
                 level_name_ids: list[list[int]] | None = None):
        super().__init__()
        self.cfg = cfg
        self.pad_token_id, self.bos_token_id, self.eos_token_id = pad_token_id, bos_token_id, eos_token_id
        proj = dict(out_dim=cfg.n_embd, n_queries=cfg.n_queries, n_layers=cfg.proj_layers,
                    n_head=cfg.n_head, dropout=cfg.dropout)
        self.image_encoder = ImageEncoder(cfg.backbone, centered=False, pretrained=cfg.pretrained_resnet)
        self.image_proj = Projection(self.image_encoder.out_channels, **proj)
        self.residual_encoder = self.residual_proj = None
        if cfg.use_residual:  # the baseline has no residual branch at all, not a zeroed one
            # "stack": E_R sees [main, ref, residual] (early fusion: it can tell which image a
            # change sits in); "residual": main − ref alone, as in the paper
            centered = (False, False, True) if cfg.residual_input == "stack" else True
            self.residual_encoder = ImageEncoder(cfg.backbone, centered=centered, pretrained=cfg.pretrained_resnet)
            self.residual_proj = Projection(self.residual_encoder.out_channels, **proj)
        self.gpt = GPT2LMHeadModel(GPT2Config(
            vocab_size=cfg.vocab_size, n_positions=cfg.n_positions, n_embd=cfg.n_embd,
            n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
            pad_token_id=pad_token_id))
        if cfg.pretrained_gpt2:
            load_gpt2_body(self.gpt, cfg.pretrained_gpt2)
        self.finding_heads = None
        if cfg.finding_heads:
            res_ch = self.residual_encoder.out_channels if cfg.use_residual else 0
            self.finding_heads = FindingHeads(self.image_encoder.out_channels, res_ch, cfg.n_embd,
                                              name_ids=finding_name_ids, pair_states=cfg.pair_states,
                                              attributes=cfg.attribute_heads)
        # the answer vocabulary as decoder token ids (AMiF's text side and knowledge bank); rebuilt
        # from the tokenizer saved with every checkpoint, so not stored in the weights
        words = (finding_name_ids or []) + (level_name_ids or [])
        ids, mask = padded_ids(words)
        self.register_buffer("vocab_ids", ids, persistent=False)
        self.register_buffer("vocab_mask", mask, persistent=False)
        self.has_vocabulary = len(words) == N_FINDINGS + N_LEVELS
        self.alignment = self.fusion = None
        if cfg.amif_align:
            self.alignment = Alignment(cfg.n_embd, cfg.use_residual, negatives=cfg.amif_negatives,
                                       tau=cfg.amif_tau)
        if cfg.gated_fusion:
            self.fusion = GatedFusion(cfg.n_embd, cfg.n_head, N_FINDINGS + N_LEVELS)

    def vocabulary_embeddings(self) -> torch.Tensor | None:
        """(30 + 17, D): the decoder's embedding of each finding name and level word, or None
        when the model was built without a tokenizer (tests, benchmarks)."""
        if not self.has_vocabulary:
            return None
        return mean_word_embeddings(self.gpt.transformer.wte, self.vocab_ids, self.vocab_mask)

    # ---- images ----------------------------------------------------------------------------
    def encode_pairs(self, main: torch.Tensor, ref: torch.Tensor,
                     residual: torch.Tensor | None = None) -> PairFeatures:
        """main, ref, residual: (P, 1, S, S). Main and reference go through E_I and the image
        projection as one batch of 2P: one encoder pass per pair whatever its question count."""
        P = main.shape[0]
        fmap = self.image_encoder(torch.cat([main, ref], dim=0))  # (2P, C, h, w)
        tokens = self.image_proj(fmap)  # (2P, nq, D)
        res = res_map = None
        if self.cfg.use_residual:
            if residual is None:
                raise ValueError("this model has a residual branch: pass the residual image")
            res_map = self.residual_encoder(self._residual_input(main, ref, residual))
            res = self.residual_proj(res_map)  # (P, nq, D)
        feats = PairFeatures(main=tokens[:P], ref=tokens[P:], residual=res)
        if self.finding_heads is not None:
            pooled = fmap.mean(dim=(2, 3))
            feats.findings = self.finding_heads(pooled[:P], pooled[P:],
                                                res_map.mean(dim=(2, 3)) if res_map is not None else None)
            if self.cfg.swap_average and not self.training:
                feats.findings.change = self._swap_averaged_change(feats.findings.change, pooled, main, ref, residual)
            if self.cfg.finding_tokens:  # inference tokens; training may force some (forward)
                feats.finding_tokens = self.finding_heads.tokens(feats.findings, wte=self.gpt.transformer.wte)
        return feats

    def _swap_averaged_change(self, change: torch.Tensor, pooled: torch.Tensor, main, ref, residual):
        """Change log-probabilities averaged with those of the pair read backwards (reference as
        main: added and missing trade places, a level change stays one). Training reads half the
        pairs backwards (train.swap_prob), so both readings are answers the model has learned to
        give; their mean is a test-time augmentation that costs one more E_R pass, E_I's
        features are only swapped."""
        P = main.shape[0]
        res_pooled = None
        if self.cfg.use_residual:
            res_pooled = self.residual_encoder(self._residual_input(ref, main, -residual)).mean(dim=(2, 3))
        back = self.finding_heads(pooled[P:], pooled[:P], res_pooled).change
        kinds = torch.tensor(BACKWARDS, device=change.device)
        probs = 0.5 * (change.float().softmax(-1) + back.float().softmax(-1)[..., kinds])
        return probs.log()

    def _residual_input(self, main: torch.Tensor, ref: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """What E_R sees: main − ref alone (the paper), or [main, ref, main − ref] stacked."""
        return torch.cat([main, ref, residual], dim=1) if self.cfg.residual_input == "stack" else residual

    # ---- text ------------------------------------------------------------------------------
    def _prompt(self, feats: PairFeatures, pair_index, question_ids, question_mask):
        """[image tokens, question tokens, bos] embeddings and their attention mask."""
        Q, Lq = question_ids.shape
        assert Lq <= self.cfg.max_question_len, f"question length {Lq} > max_question_len"
        wte = self.gpt.transformer.wte
        prefix = feats.tokens()  # (P, n_prefix, D)
        if self.fusion is not None:
            prefix = self.fusion(prefix, self.vocabulary_embeddings())
        prefix = prefix[pair_index]  # (Q, n_prefix, D)
        bos = torch.full((Q, 1), self.bos_token_id, dtype=torch.long, device=question_ids.device)
        emb = torch.cat([prefix, wte(question_ids), wte(bos)], dim=1)  # (Q, n_prefix+Lq+1, D)
        ones = question_mask.new_ones(Q, prefix.shape[1])
        mask = torch.cat([ones, question_mask, ones[:, :1]], dim=1)  # (Q, n_prefix+Lq+1)
        return emb, mask

    def forward(self, feats: PairFeatures, pair_index, question_ids, question_mask,
                answer_ids, answer_mask, finding_targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """answer_ids (Q, La): answer tokens ending with eos, then pad (models/tokenizer.py).
        Teacher forcing: the input is [bos, a_1 .. a_{La-1}], the target a_1 .. eos."""
        Q, La = answer_ids.shape
        assert La <= self.cfg.max_answer_len, f"answer length {La} > max_answer_len"
        if (self.training and self.cfg.finding_tokens and self.cfg.finding_forcing > 0
                and finding_targets is not None):
            forced = torch.rand(finding_targets.shape[0], device=finding_targets.device) < self.cfg.finding_forcing
            feats = dataclasses.replace(feats, finding_tokens=self.finding_heads.tokens(
                feats.findings, finding_targets, forced, wte=self.gpt.transformer.wte))
        emb, mask = self._prompt(feats, pair_index, question_ids, question_mask)
        wte = self.gpt.transformer.wte
        emb = torch.cat([emb, wte(answer_ids[:, :-1])], dim=1)  # (Q, T, D), T = n_prefix+Lq+La
        mask = torch.cat([mask, answer_mask[:, :-1]], dim=1)  # (Q, T)
        # positions skip padding, so a question padded to any length yields the same numbers
        pos = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
        h = self.gpt.transformer(inputs_embeds=emb, attention_mask=mask, position_ids=pos).last_hidden_state
        logits = self.gpt.lm_head(h[:, -La:])  # (Q, La, V): only the answer positions
        labels = answer_ids.masked_fill(answer_mask == 0, -100)  # prefix is never a target
        nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
        if self.cfg.gen_loss == "answer":
            # paper §2.1: L_gen = −(1/T) Σ_t log p(a_t | a_<t) per answer, then the batch mean
            l_gen = (nll.sum(dim=1) / answer_mask.sum(dim=1).clamp(min=1)).mean()
        else:
            # every answer token weighs the same: under the paper's 1/T the 5-token "nothing has
            # changed." outweighs each token of a 30-token change list six-fold
            l_gen = nll.sum() / answer_mask.sum().clamp(min=1)
        zero = torch.zeros((), device=l_gen.device)
        l_con = (rfa_loss(feats.ref, feats.main, feats.residual, self.cfg.rfa_stop_grad)
                 if self.cfg.use_rfa else zero)
        l_find = zero
        if feats.findings is not None and finding_targets is not None:
            l_find = finding_loss(feats.findings, finding_targets, self.cfg.change_weight)
        l_align = zero
        if self.alignment is not None and finding_targets is not None:
            vocab = self.vocabulary_embeddings()
            l_align = self.alignment(feats.main, feats.ref, feats.residual, finding_targets,
                                     names=None if vocab is None else vocab[:N_FINDINGS])
        loss = (l_gen + self.cfg.rfa_weight * l_con + self.cfg.finding_weight * l_find
                + self.cfg.amif_weight * l_align)
        out = {"loss": loss, "l_gen": l_gen, "l_con": l_con, "l_find": l_find, "l_align": l_align}
        if self.fusion is not None and self.fusion.last_gate is not None:
            out["gate"] = self.fusion.last_gate  # how much vocabulary the tokens let through
        return out

    @torch.no_grad()
    def generate(self, feats: PairFeatures, pair_index, question_ids, question_mask,
                 max_new_tokens: int, num_beams: int = 1, logits_processor=None) -> list[list[int]]:
        """Token ids of each answer, without bos/eos. Greedy when num_beams == 1.
        logits_processor: e.g. models.constrained.GrammarLogitsProcessor (one row per question,
        or per beam), which keeps every answer in the Medical-Diff-VQA grammar."""
        from models.generate import beam_search, greedy

        emb, mask = self._prompt(feats, pair_index, question_ids, question_mask)
        # the position table ends at max_answer_len answer tokens
        max_new_tokens = min(max_new_tokens, self.cfg.max_answer_len)
        banned = (self.bos_token_id, self.pad_token_id)
        if num_beams == 1:
            return greedy(self.gpt, emb, mask, self.eos_token_id, max_new_tokens, banned,
                          logits_processor=logits_processor)
        return beam_search(self.gpt, emb, mask, self.eos_token_id, max_new_tokens, num_beams, banned,
                           logits_processor=logits_processor)


def load_gpt2_body(gpt: GPT2LMHeadModel, path: str) -> None:
    """Copy a local GPT-2's blocks, final norm and positions into `gpt`. The token embedding
    (tied to the LM head) is kept only if the vocabularies match: spotdiff's BPE is not GPT-2's,
    so with the paper's GPT-2 small the token table is learned anew."""
    src = GPT2LMHeadModel.from_pretrained(path, local_files_only=True).state_dict()
    own = gpt.state_dict()
    for name, value in src.items():
        if name not in own:
            continue
        if name.endswith("wpe.weight") and value.shape[0] >= own[name].shape[0]:
            value = value[: own[name].shape[0]]
        if value.shape == own[name].shape:
            own[name] = value
        elif ".h." in name or "ln_f" in name:
            raise ValueError(f"{path}: {name} has shape {tuple(value.shape)}, this model needs "
                             f"{tuple(own[name].shape)} (n_embd/n_layer must match the checkpoint)")
    gpt.load_state_dict(own)
