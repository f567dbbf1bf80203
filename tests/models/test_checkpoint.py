"""Checkpoint folders: python -m pytest tests/models/test_checkpoint.py -q"""

import pickle

import pytest
import torch

from models import checkpoint as ckpt
from models.tokenizer import train_tokenizer
from models.train_loop import build_model, lr_lambda

TEXTS = ["what has changed compared to the reference image?", "nothing has changed.",
         "the main image has an additional finding of edema than the reference image. "]
MODEL = dict(backbone="tiny", image_size=32, n_queries=2, proj_layers=1, n_embd=32, n_layer=1,
             n_head=2, vocab_size=300, max_question_len=16, max_answer_len=24,
             use_residual=True, use_rfa=True, residual_kind="registered", rfa_weight=0.5,
             dropout=0.0)


class NotAWeight:
    """Anything a weights-only unpickler must refuse."""


def _inputs():
    g = torch.Generator().manual_seed(0)
    imgs = [torch.rand(2, 1, 32, 32, generator=g) for _ in range(3)]
    q = torch.randint(3, 100, (3, 5), generator=g)
    a = torch.randint(3, 100, (3, 6), generator=g)
    return imgs, torch.tensor([0, 1, 1]), q, torch.ones_like(q), a, torch.ones_like(a)


@pytest.fixture
def trained(tmp_path):
    tok = train_tokenizer(TEXTS * 5, 300)
    cfg = {**MODEL, "vocab_size": len(tok)}
    model = build_model(cfg, tok)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(2, 10))
    (m, r, res), pi, q, qm, a, am = _inputs()
    for _ in range(2):  # real optimizer state (exp_avg...) and a moved scheduler
        model(model.encode_pairs(m, r, res), pi, q, qm, a, am)["loss"].backward()
        opt.step(); sched.step(); opt.zero_grad()
    state = ckpt.TrainState(epoch=1, step=2, samples=6, best_metric=0.25, best_epoch=1)
    folder = ckpt.save(tmp_path / "c", model, cfg, tok, state, opt, sched)
    return folder, model, cfg, opt, sched


def test_round_trip_rebuilds_the_same_model(trained):
    folder, model, cfg, _, _ = trained
    loaded, tok, state = ckpt.load_model_from(folder)
    assert state.step == 2 and state.best_metric == 0.25
    assert ckpt.read_config(folder)[0] == cfg
    assert len(tok) == cfg["vocab_size"]
    model.eval()
    (m, r, res), pi, q, qm, a, am = _inputs()
    with torch.no_grad():
        want = model(model.encode_pairs(m, r, res), pi, q, qm, a, am)
        got = loaded(loaded.encode_pairs(m, r, res), pi, q, qm, a, am)
    for k in ("loss", "l_gen", "l_con"):
        assert torch.equal(want[k], got[k]), k


def test_optimizer_and_scheduler_resume(trained):
    folder, model, cfg, opt, sched = trained
    fresh_model = build_model(cfg, ckpt.load_model_from(folder)[1])
    opt2 = torch.optim.AdamW(fresh_model.parameters(), lr=1e-3)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lr_lambda(2, 10))
    assert ckpt.load_optimizer(folder, opt2, sched2)
    assert sched2.last_epoch == sched.last_epoch == 2
    a, b = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k]["exp_avg"], b[k]["exp_avg"]) for k in a)


def test_optimizer_file_is_loaded_weights_only(trained):
    """A tampered optimizer.pt holding an arbitrary object is refused, not executed."""
    folder, model, cfg, _, _ = trained
    torch.save({"optimizer": NotAWeight(), "scheduler": None}, folder / ckpt.OPTIM)
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(pickle.UnpicklingError):
        ckpt.load_optimizer(folder, opt)


def test_weights_of_another_architecture_are_rejected(trained, tmp_path):
    folder, _, cfg, _, _ = trained
    tok = ckpt.load_model_from(folder)[1]
    baseline = build_model({**cfg, "use_residual": False, "use_rfa": False}, tok)
    with pytest.raises(RuntimeError):
        ckpt.load_weights(folder, baseline)
