"""Finding heads: what the encoders must see before the decoder can say it.

ReAl learns its encoders only through the answer tokens, and on the embedded default that signal
was too weak: the decoder learned the answer prior and the encoders little else (change-F1 0.13).
Medical-Diff-VQA's single-image questions say which findings a study has and at which level, and
its difference answer names each finding's change (assets/finding_states.py reads them into
per-pair targets). These heads put that supervision straight on the encoders:

    pooled E_I(main) ─┬─ presence (30 logits), level (30 × 17 logits)    one head for main and ref
    pooled E_I(ref)  ─┘
    [main, ref, main − ref, pooled E_R(residual)] ── change (30 × 4: unchanged/added/missing/level)
    pooled E_R(residual) ── pair states: presence and level of each finding in main AND reference
                            (pair_states; E_R sees both images when residual_input is stack)

and, with `finding_tokens`, hand their (detached) beliefs to GPT-2 as one prefix token per
finding: token_f = e_f + W·[p_main(f), p_ref(f), p_change(f)]. The decoder then reads a finding
list instead of having to discover one in pixels; detaching keeps L_gen from bending the heads
away from what the labels say.

Loss (L_find): masked BCE on presence, masked CE on level and change — cells the questions do not
determine are -1 and ignored. Changed kinds get `change_weight` against `unchanged` (28 of 30
findings are unchanged in a typical pair; without it the head never says "missing").

Pair states (`pair_states`): E_R, which sees [main, ref, main − ref], also predicts each
finding's state in both images, and the change logits add the log-evidence of the change the
two presences imply (a product of experts with the learned change head; levels only word a
level change, see implied_change_logprobs). The state targets are
dense — every determined cell of both studies, where the change target has a handful of changed
cells per pair — and "added / missing / level" falls out of comparing two states. A throwaway
probe built only this way (one ResNet-18 on the stacked input, states in both images, answers
composed from the compared states) reached change-F1 0.71 on the embedded default."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from assets.diffvqa.vocabulary import LOCATION_WORDS, TYPES, VIEWS
from assets.finding_states import CHANGE_KINDS, N_FINDINGS, N_LEVELS, TARGET_COLUMNS
from models.vocabulary import mean_word_embeddings, padded_ids

# The target rows of a batch (models/data.py), in TARGET_COLUMNS order: per finding main/ref
# presence and level, change, main/ref type and location; then each image's view, repeated
# across the row so that one (rows, 30) tensor carries a pair.
_ROW = {c: i for i, c in enumerate(TARGET_COLUMNS[1:])}
MAIN_PRESENCE, MAIN_LEVEL, REF_PRESENCE, REF_LEVEL, CHANGE = (
    _ROW[c] for c in ("main_presence", "main_level", "ref_presence", "ref_level", "change"))
MAIN_TYPE, REF_TYPE, MAIN_LOCATION, REF_LOCATION, MAIN_VIEW, REF_VIEW = (
    _ROW[c] for c in ("main_type", "ref_type", "main_location", "ref_location", "main_view", "ref_view"))
# each row as the pair read backwards holds it: main and reference rows trade places
SWAPPED_ROWS = tuple(_ROW["ref_" + c[5:] if c.startswith("main_") else "main_" + c[4:] if c.startswith("ref_") else c]
                     for c in TARGET_COLUMNS[1:])
N_TYPES, N_PLACES, N_VIEWS = len(TYPES), len(LOCATION_WORDS), len(VIEWS)
N_CHANGE = len(CHANGE_KINDS)
# each change kind as the pair read backwards (reference as main) states it: added and missing
# trade places, unchanged and level stay (swapped training pairs, swap averaging)
BACKWARDS = (0, 2, 1, 3)


@dataclass
class FindingLogits:
    main_presence: torch.Tensor  # (P, F)
    ref_presence: torch.Tensor   # (P, F)
    main_level: torch.Tensor     # (P, F, L)
    ref_level: torch.Tensor      # (P, F, L)
    change: torch.Tensor         # (P, F, 4)
    # E_R's view of both images (pair_states), else None
    pair_main_presence: torch.Tensor | None = None  # (P, F)
    pair_ref_presence: torch.Tensor | None = None   # (P, F)
    pair_main_level: torch.Tensor | None = None     # (P, F, L)
    pair_ref_level: torch.Tensor | None = None      # (P, F, L)
    # each image's attributes (attribute_heads), else None: what the view, type and location
    # questions ask
    main_type: torch.Tensor | None = None       # (P, F, T)
    ref_type: torch.Tensor | None = None        # (P, F, T)
    main_location: torch.Tensor | None = None   # (P, F, W) one logit per location word
    ref_location: torch.Tensor | None = None    # (P, F, W)
    main_view: torch.Tensor | None = None       # (P, V)
    ref_view: torch.Tensor | None = None        # (P, V)

    def change_probs(self) -> torch.Tensor:
        return self.change.float().softmax(dim=-1)

    def levels(self, pair: int, finding: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(reference, main) level logits of one finding: from the head that saw both images
        when there is one (a level change is a comparison), else from E_I's per-image head."""
        if self.pair_ref_level is not None:
            return self.pair_ref_level[pair, finding], self.pair_main_level[pair, finding]
        return self.ref_level[pair, finding], self.main_level[pair, finding]


def implied_change_logprobs(main_presence: torch.Tensor, ref_presence: torch.Tensor) -> torch.Tensor:
    """(P, F, 4) log-evidence for unchanged/added/missing/level from two independent presence
    beliefs: added = present in main only, missing = in the reference only; a finding in both
    is evidence for "unchanged" and for "level" alike (log p_main·p_ref each, plus p(absent in
    both) for unchanged), so which of the two is left to the change head.

    Levels are deliberately not compared here: two independent level softmaxes agree with
    probability Σ q_main·q_ref, well below 1 even when both are right (0.6 · 0.6 on the true
    level gives 0.36), so a composed P(level change) claims a change for every finding present
    in both studies — measured: 53 predicted level changes against 23 true on 50 validation
    pairs after one epoch."""
    pm, pr = main_presence.float().sigmoid(), ref_presence.float().sigmoid()
    both = pm * pr
    probs = torch.stack([(1 - pm) * (1 - pr) + both, pm * (1 - pr), pr * (1 - pm), both], -1)
    return probs.clamp(min=1e-6).log()


class FindingHeads(nn.Module):
    def __init__(self, image_channels: int, residual_channels: int, n_embd: int, hidden: int = 256,
                 name_ids: list[list[int]] | None = None, pair_states: bool = False,
                 attributes: bool = False):
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
        # attributes: per image its view, per finding its type and place words (linear, as
        # presence and level: all of it must be in E_I's pooled feature)
        self.attributes = None
        if attributes:
            self.attributes = nn.ModuleDict({
                "kind": nn.Linear(image_channels, N_FINDINGS * N_TYPES),  # ModuleDict reserves "type"
                "location": nn.Linear(image_channels, N_FINDINGS * N_PLACES),
                "view": nn.Linear(image_channels, N_VIEWS)})
        self.pair_states = None
        if pair_states:
            if not residual_channels:
                raise ValueError("model.pair_states needs the residual branch (model.use_residual)")
            # main and reference states from one feature: presence 2F, level 2F·L
            self.pair_states = nn.Linear(residual_channels, 2 * N_FINDINGS * (1 + N_LEVELS))
        self.finding_embed = nn.Parameter(torch.randn(N_FINDINGS, n_embd) * 0.02)
        self.state_proj = nn.Linear(2 + N_CHANGE, n_embd)
        ids, mask = padded_ids(name_ids or [[]] * N_FINDINGS)
        # rebuilt from the tokenizer saved with every checkpoint, so not stored in the weights
        self.register_buffer("name_ids", ids, persistent=False)
        self.register_buffer("name_mask", mask, persistent=False)

    def forward(self, main: torch.Tensor, ref: torch.Tensor, residual: torch.Tensor | None) -> FindingLogits:
        """main, ref (P, C) and residual (P, C_R) or None: globally pooled encoder features."""
        P = main.shape[0]
        parts = [main, ref, main - ref] + ([residual] if residual is not None else [])
        out = FindingLogits(
            main_presence=self.presence(main), ref_presence=self.presence(ref),
            main_level=self.level(main).view(P, N_FINDINGS, N_LEVELS),
            ref_level=self.level(ref).view(P, N_FINDINGS, N_LEVELS),
            change=self.change(torch.cat(parts, dim=1)).view(P, N_FINDINGS, N_CHANGE))
        if self.attributes is not None:
            a = self.attributes
            out.main_type, out.ref_type = (a["kind"](x).view(P, N_FINDINGS, N_TYPES) for x in (main, ref))
            out.main_location, out.ref_location = (a["location"](x).view(P, N_FINDINGS, N_PLACES) for x in (main, ref))
            out.main_view, out.ref_view = a["view"](main), a["view"](ref)
        if self.pair_states is not None:
            s = self.pair_states(residual).view(P, 2, N_FINDINGS, 1 + N_LEVELS)
            out.pair_main_presence, out.pair_ref_presence = s[:, 0, :, 0], s[:, 1, :, 0]
            out.pair_main_level, out.pair_ref_level = s[:, 0, :, 1:], s[:, 1, :, 1:]
            out.change = out.change.float() + implied_change_logprobs(out.pair_main_presence, out.pair_ref_presence)
        return out

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
            # the first token is the word the decoder must emit next; the mean tells apart
            # names that share it ("pleural effusion" / "pleural thickening")
            first = wte(self.name_ids[:, 0]) * self.name_mask[:, :1]
            base = base + first + mean_word_embeddings(wte, self.name_ids, self.name_mask)
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
            ref_level, main_level = logits.levels(pair, f)
            ref = int(ref_level.argmax())
            main_order = main_level.argsort(descending=True).tolist()
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


MAX_LISTED = 6  # an abnormality list names at most this many findings (its answer pattern's bound)
MAX_PLACE_WORDS = 4  # a location names at most this many words (its answer pattern's bound)
# place words in the order answers put them: side, then height, then structure ("left lower lung")
_PLACE_ORDER = {w: r for r, group in enumerate((
    ("left", "right", "bilateral", "bibasilar"),
    ("mid to lower", "upper", "middle", "mid", "lower", "apical", "apicolateral", "basilar", "basal",
     "retrocardiac", "pericardial"),
    ("lung", "pleural", "base", "rib"))) for w in group}


def single_image_answer(logits: FindingLogits, pair: int, question: str, qtype: str) -> str | None:
    """What the heads say about the main image, worded as the answer to a single-image question:
    - presence: "yes" / "no" (the named finding's probability against 0.5; a question naming a
      place, "is there X in the left lung?", also needs the place words above 0.5 — the dataset
      asks it of findings present elsewhere too);
    - abnormality: the findings above 0.5, most likely first ("yes" / "no" for "is there evidence
      of any abnormalities"); "... in the {place}?" is answered with one finding, the likeliest
      there;
    - level, type: the named finding's most likely level or type;
    - location: the named finding's place words above 0.5 (at least the likeliest) + " area", or
      the likelier of "left side" / "right side";
    - view: "{view} view", or "yes" / "no" for "is this PA view?".
    Place words and views need attribute_heads (without them a place is ignored, and view, type
    and location questions get None); None too for a question naming no known finding."""
    from assets.diffvqa.vocabulary import FINDINGS, LEVELS
    from assets.finding_states import named_finding

    q = question.strip().lower()
    probs = logits.main_presence[pair].detach().float().sigmoid()
    places = (logits.main_location[pair].detach().float().sigmoid()
              if logits.main_location is not None else None)  # (F, W)

    def at(f: int, mask: int) -> float:
        """How likely finding f sits at every place word of mask (the least likely word)."""
        return min(float(places[f, i]) for i in range(N_PLACES) if mask >> i & 1)

    if qtype == "abnormality":
        present = [i for i in probs.argsort(descending=True).tolist() if probs[i] > 0.5]
        if q.startswith("is there"):
            return "yes" if present else "no"
        mask = _asked_places(q, "what abnormalities are seen in the ")
        if mask and places is not None:
            return FINDINGS[max(range(len(FINDINGS)), key=lambda f: float(probs[f]) * at(f, mask))]
        if mask:
            return FINDINGS[int(probs.argmax())]
        # the question presumes a finding: name the most likely one when none passes 0.5
        return ", ".join(FINDINGS[i] for i in (present or [int(probs.argmax())])[:MAX_LISTED])
    if qtype == "view":
        if logits.main_view is None:
            return None
        view = VIEWS[int(logits.main_view[pair].argmax())]
        asked = next((v for v in sorted(VIEWS, key=len, reverse=True) if f"is this {v.lower()} view" in q), None)
        return f"{view} view" if asked is None else ("yes" if asked == view else "no")
    if qtype not in ("presence", "level", "type", "location"):
        return None
    name = named_finding(q)
    if name is None:
        return None
    f = FINDINGS.index(name)
    if qtype == "presence":
        mask = _asked_places(q, name)
        here = mask is None or places is None or at(f, mask) > 0.5
        return "yes" if probs[f] > 0.5 and here else "no"
    if qtype == "level":
        return LEVELS[int(logits.main_level[pair, f].argmax())]
    if logits.main_type is None:
        return None
    if qtype == "type":
        return TYPES[int(logits.main_type[pair, f].argmax())]
    if "left side or right side" in q:
        return "left side" if places[f, LOCATION_WORDS.index("left")] >= places[f, LOCATION_WORDS.index("right")] else "right side"
    order = [i for i in places[f].argsort(descending=True).tolist() if LOCATION_WORDS[i] != "area"]
    words = [LOCATION_WORDS[i] for i in order if places[f, i] > 0.5][:MAX_PLACE_WORDS] or [LOCATION_WORDS[order[0]]]
    return " ".join(sorted(words, key=lambda w: _PLACE_ORDER.get(w, 1))) + " area"


def _asked_places(q: str, after: str) -> int | None:
    """The place words a question names after `after` ("is there edema in the left lung?" after
    "edema": left, lung) as a LOCATION_WORDS bit mask, or None when it names none."""
    from assets.finding_states import location_mask

    tail = q.split(after, 1)[1] if after in q else ""
    tail = tail.rstrip("?").strip().removeprefix("in the ").removesuffix(" in this image").strip()
    if not tail or tail == "in this image":
        return None
    return location_mask(tail.removeprefix("located ").strip())


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


def attribute_loss(type_: torch.Tensor, location: torch.Tensor, view: torch.Tensor, type_t: torch.Tensor,
                   location_t: torch.Tensor, view_t: torch.Tensor) -> torch.Tensor:
    """One image's attributes: masked CE on each finding's type (N, F, T), masked BCE on each
    location word of a finding whose place is known (N, F, W; the target a bit mask), CE on the
    view (N, V; target (N,), -1 unknown)."""
    ce_type = F.cross_entropy(type_.float().transpose(1, 2), type_t.clamp(min=0), reduction="none")
    bits = (location_t.clamp(min=0)[..., None] >> torch.arange(N_PLACES, device=location_t.device)) & 1
    bce = F.binary_cross_entropy_with_logits(location.float(), bits.float(), reduction="none")
    ce_view = F.cross_entropy(view.float(), view_t.clamp(min=0), reduction="none")
    return (_masked_mean(ce_type, (type_t >= 0).float())
            + _masked_mean(bce, (location_t >= 0).float()[..., None].expand_as(bce))
            + _masked_mean(ce_view, (view_t >= 0).float()))


def finding_loss(logits: FindingLogits, targets: torch.Tensor, change_weight: float) -> torch.Tensor:
    """targets (P, rows, F) long, -1 = unknown (rows in TARGET_COLUMNS order: MAIN_PRESENCE ..)."""
    loss = (state_loss(logits.main_presence, logits.main_level, targets[:, MAIN_PRESENCE], targets[:, MAIN_LEVEL])
            + state_loss(logits.ref_presence, logits.ref_level, targets[:, REF_PRESENCE], targets[:, REF_LEVEL]))
    if logits.pair_main_presence is not None:
        loss = loss + (
            state_loss(logits.pair_main_presence, logits.pair_main_level, targets[:, MAIN_PRESENCE], targets[:, MAIN_LEVEL])
            + state_loss(logits.pair_ref_presence, logits.pair_ref_level, targets[:, REF_PRESENCE], targets[:, REF_LEVEL]))
    if logits.main_type is not None:
        # summed left to right, main then ref: the same float sums as one addition per side
        loss = (loss
                + attribute_loss(logits.main_type, logits.main_location, logits.main_view, targets[:, MAIN_TYPE],
                                 targets[:, MAIN_LOCATION], targets[:, MAIN_VIEW, 0])
                + attribute_loss(logits.ref_type, logits.ref_location, logits.ref_view, targets[:, REF_TYPE],
                                 targets[:, REF_LOCATION], targets[:, REF_VIEW, 0]))
    t = targets[:, CHANGE]
    weight = torch.full((N_CHANGE,), float(change_weight), device=t.device)
    weight[0] = 1.0
    ce = F.cross_entropy(logits.change.float().transpose(1, 2), t.clamp(min=0), weight=weight,
                         reduction="none")
    w = weight[t.clamp(min=0)] * (t >= 0).float()  # a weighted mean, as cross_entropy's own
    return loss + (ce * (t >= 0).float()).sum() / w.sum().clamp(min=1e-6)
