"""AMiF's parts in ReAl (models/amif.py): each option changes what it claims — L_align is zero
off and trains the encoders on, the mined negatives differ from the truth by one cell, the soft
labels treat equal sets as positives, and the fusion gate moves in training."""

import pytest
import torch

from models.amif import (N_KINDS, change_items, jaccard, one_cell_negatives, presence_items,
                         soft_contrastive)
from models.config import ModelConfig
from models.model import ReAl

P = 4


def _model(**kw) -> ReAl:
    cfg = ModelConfig(backbone="tiny", image_size=32, n_queries=2, n_embd=32, n_layer=1, n_head=2,
                      vocab_size=20, max_question_len=4, max_answer_len=6, dropout=0.0, **kw)
    torch.manual_seed(0)
    return ReAl(cfg, 0, 1, 2)


def _batch():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(P, 1, 32, 32, generator=g), torch.rand(P, 1, 32, 32, generator=g)
    q, a = torch.randint(3, 20, (P, 4), generator=g), torch.randint(3, 20, (P, 5), generator=g)
    # like a real pair: a few findings per study, a change set of one or two items
    sparse = lambda high: torch.randint(0, high, (P, 30), generator=g) * (torch.rand(P, 30, generator=g) < 0.08)  # noqa: E731
    t = torch.stack([sparse(2), torch.full((P, 30), -1), sparse(2), torch.full((P, 30), -1), sparse(4)], dim=1)
    return (x, y, x - y), (torch.arange(P), q, torch.ones_like(q), a, torch.ones_like(a), t)


def test_alignment_loss_is_zero_off_and_reaches_both_encoders_on():
    images, args = _batch()
    off = _model()
    assert off.alignment is None and float(off(off.encode_pairs(*images), *args)["l_align"]) == 0.0
    on = _model(amif_align=True)
    out = on(on.encode_pairs(*images), *args)
    assert float(out["l_align"].detach()) > 0
    out["l_align"].backward()
    for enc in (on.image_encoder, on.residual_encoder):
        stem = enc.backbone.body[0].weight.grad
        assert stem is not None and stem.abs().sum() > 0
    # weighted into the total: the same model with weight 0 has a different loss
    images, args = _batch()
    zero = _model(amif_align=True, amif_weight=0.0)
    assert float(zero(zero.encode_pairs(*images), *args)["loss"].detach()) < float(out["loss"].detach())


def test_unknown_change_sets_are_left_out_of_the_alignment():
    images, args = _batch()
    args[-1][:, 4] = -1  # no pair has a general difference question
    args[-1][:, 0] = -1
    args[-1][:, 2] = -1
    m = _model(amif_align=True)
    assert float(m(m.encode_pairs(*images), *args)["l_align"]) == 0.0


def test_mined_negatives_differ_from_the_truth_by_exactly_one_cell():
    codes = torch.randint(0, N_KINDS, (50, 30))
    negs = one_cell_negatives(codes, 6, N_KINDS)
    assert negs.shape == (50, 6, 30)
    assert bool(((negs != codes[:, None]).sum(-1) == 1).all())
    assert int(negs.max()) < N_KINDS and int(negs.min()) >= 0
    # a presence set flips one finding in or out
    pres = torch.randint(0, 2, (10, 30))
    assert bool(((one_cell_negatives(pres, 3, 2) != pres[:, None]).sum(-1) == 1).all())


def test_jaccard_and_soft_labels_keep_equal_sets_positive():
    none = torch.zeros(1, 30, dtype=torch.long)
    one = none.clone()
    one[0, 5] = 1  # "added finding 5"
    two = one.clone()
    two[0, 7] = 2
    sets = change_items(torch.cat([none, none, one, two]))
    sim = jaccard(sets, sets)
    assert sim[0, 1] == 1.0 and sim[0, 2] == 0.0 and sim[2, 3] == pytest.approx(0.5)
    assert sim[2, 2] == 1.0
    # "present" items never collide with change items
    assert float(jaccard(presence_items(one), change_items(one))) == 0.0
    # two pairs that both say "nothing has changed": pulling one image towards either text is
    # equally right, so the loss is the same whichever of the two it matches
    texts = torch.eye(4)
    a = soft_contrastive(texts[:1], texts, sim[:1], tau=0.1)
    b = soft_contrastive(texts[1:2], texts, sim[:1], tau=0.1)
    assert float(a) == pytest.approx(float(b))


def test_the_fusion_gate_starts_mostly_closed_and_moves_in_training():
    images, args = _batch()
    m = _model(gated_fusion=True)
    assert _model().fusion is None
    opt = torch.optim.AdamW(m.parameters(), lr=3e-2)
    gates = []
    for _ in range(15):
        out = m(m.encode_pairs(*images), *args)
        gates.append(float(out["gate"]))
        out["loss"].backward()
        opt.step()
        opt.zero_grad()
    assert gates[0] == pytest.approx(torch.sigmoid(torch.tensor(-2.0)).item(), abs=1e-4)
    assert abs(gates[-1] - gates[0]) > 1e-3, gates


def test_alignment_is_learnable_on_a_fixed_batch():
    images, args = _batch()
    m = _model(amif_align=True, amif_negatives=2)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    torch.manual_seed(1)
    first = None
    for _ in range(25):
        out = m(m.encode_pairs(*images), *args)
        first = first if first is not None else float(out["l_align"])
        out["l_align"].backward()
        opt.step()
        opt.zero_grad()
    assert float(out["l_align"]) < 0.8 * first


def test_options_validate():
    with pytest.raises(ValueError, match="amif"):
        _model(amif_negatives=-1)
    with pytest.raises(ValueError, match="amif"):
        _model(amif_tau=0.0)
