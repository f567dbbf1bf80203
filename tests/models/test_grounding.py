"""Grounding: Grad-CAM of change-head cells (models/grounding.py) and the embedded dataset's change
footprints (assets/synth/footprints.py) that the pointing game scores it against."""

import numpy as np
import pytest
import torch

from assets.synth.footprints import change_footprints, change_kind
from assets.synth.plan import SynthConfig, make_plan
from models.config import ModelConfig
from models.grounding import change_cams
from models.model import ReAl


def _model():
    cfg = ModelConfig(backbone="tiny", image_size=32, n_queries=2, n_embd=32, n_layer=1, n_head=2,
                      vocab_size=20, max_question_len=4, max_answer_len=6, dropout=0.0,
                      finding_heads=True, residual_input="stack")
    torch.manual_seed(0)
    return ReAl(cfg, 0, 1, 2).eval()


def test_batched_cams_equal_one_pair_at_a_time():
    """Several cells per pair are explained in rounds over the whole batch; each map must be the
    one a lone pair and a lone cell give (no pair leaks into another, no round into the next)."""
    model = _model()
    g = torch.Generator().manual_seed(1)
    main, ref = torch.rand(3, 1, 32, 32, generator=g), torch.rand(3, 1, 32, 32, generator=g)
    cells = [(0, 4, 1), (0, 7, 3), (1, 2, 2), (2, 4, 1), (2, 9, 1), (2, 0, 3)]
    batched = change_cams(model, main, ref, main - ref, cells)
    assert batched.shape == (6, 32, 32)
    assert batched.min() >= 0 and np.allclose(batched.reshape(6, -1).max(1), 1)
    for n, (p, f, k) in enumerate(cells):
        alone = change_cams(model, main[p:p + 1], ref[p:p + 1], (main - ref)[p:p + 1], [(0, f, k)])[0]
        np.testing.assert_allclose(batched[n], alone, atol=1e-5)
    assert not np.allclose(batched[3], batched[4]), "two cells of one pair gave the same map"
    assert all(p.grad is None for p in model.parameters()), "gradients left on the model"


def test_change_cams_refuse_a_model_without_a_change_head():
    cfg = ModelConfig(backbone="tiny", image_size=32, n_queries=2, n_embd=32, n_layer=1, n_head=2,
                      vocab_size=20, max_question_len=4, max_answer_len=6)
    x = torch.rand(1, 1, 32, 32)
    with pytest.raises(ValueError, match="finding heads"):
        change_cams(ReAl(cfg, 0, 1, 2), x, x, x * 0, [(0, 0, 1)])


def test_footprints_name_exactly_the_changes_and_lie_inside_the_image():
    cfg = SynthConfig(subjects=12, seed=0, image_size=64, render_size=64)
    found = 0
    for plan in make_plan(cfg):
        for j, ref_j in enumerate(plan.references):
            if ref_j is None:
                continue
            main = {f.name: f for f in plan.studies[j].findings}
            ref = {f.name: f for f in plan.studies[ref_j].findings}
            expected = {n: change_kind(main.get(n), ref.get(n)) for n in set(main) | set(ref)}
            expected = {n: k for n, k in expected.items() if k}
            fps = change_footprints(plan, j, ref_j, cfg.seed, cfg.render_size)
            assert {n: k for n, (k, _) in fps.items()} == expected
            for name, (_, m) in fps.items():
                assert m.shape == (64, 64) and m.max() == pytest.approx(1.0)
                assert 0 < (m >= 0.1).mean() < 0.6, f"{name}: footprint covers {(m >= 0.1).mean():.0%}"
            found += len(fps)
            if found >= 3:
                return
    pytest.fail("no changes in 12 planned subjects")


def test_change_kind():
    from assets.synth.findings import Finding

    a, b = Finding("pleural effusion", "left", "small"), Finding("pleural effusion", "left", "large")
    assert change_kind(a, None) == "added" and change_kind(None, a) == "missing"
    assert change_kind(b, a) == "level" and change_kind(a, a) is None and change_kind(None, None) is None
