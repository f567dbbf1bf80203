"""Constrained decoding: an untrained model, greedy or beam, answers every question type with a
sentence of that type's grammar; a difference answer parses with the change grammar.
`python -m pytest tests/models/test_constrained.py`"""

import pytest
import torch

from assets.diffvqa.answer_patterns import could_become_answer, is_answer, question_type_of
from assets.diffvqa.grammar import compose_answer, parse_answer, ChangeSet, LevelChange
from models.config import ModelConfig
from models.model import ReAl
from models.predict import grammar_processor
from models.tokenizer import train_tokenizer

TEXTS = [
    "what has changed compared to the reference image?", "nothing has changed.",
    compose_answer(ChangeSet(added=("pleural effusion", "edema"), missing=("pneumothorax",),
                             levels=(LevelChange("cardiomegaly", "mild", "moderate to severe"),))),
    "what abnormalities are seen in this image?", "pleural effusion, edema", "yes", "no",
    "which view is this image taken?", "PA view", "where is the edema?", "left lower lung area",
    "what type is the atelectasis?", "plate-like", "what level is the edema?", "mild",
]
QUESTIONS = {"difference": TEXTS[0], "abnormality": TEXTS[3], "view": TEXTS[7], "location": TEXTS[9],
             "type": TEXTS[11], "level": TEXTS[13], "presence": "is there edema?"}


def test_patterns_accept_the_grammar_and_reject_the_rest():
    assert is_answer(TEXTS[2], "difference") and is_answer("nothing has changed.", "difference")
    assert not is_answer("", "difference") and not is_answer("nothing has changed", "difference")
    assert could_become_answer("the main image has an additional finding of pleu", "difference")
    assert not could_become_answer("the main image has an additional finding of nodule", "difference")
    assert is_answer("moderate to large", "level") and not is_answer("large", "level")
    for qtype, question in QUESTIONS.items():
        assert question_type_of(question) == qtype


@pytest.mark.parametrize("num_beams, budget", [(1, 63), (3, 63), pytest.param(1, 40, marks=pytest.mark.slow)])
@torch.no_grad()
def test_untrained_model_answers_in_the_grammar(num_beams, budget):
    """40 tokens are too few for what an untrained model starts to list: the answer is closed
    along the grammar's shortest completion instead of being cut off."""
    tok = train_tokenizer(TEXTS * 5, vocab_size=300)  # small: long findings take many tokens
    cfg = ModelConfig(backbone="tiny", image_size=32, n_queries=2, n_embd=32, n_layer=2, n_head=2,
                      vocab_size=len(tok), max_question_len=32, max_answer_len=64, dropout=0.0)
    torch.manual_seed(0)
    model = ReAl(cfg, tok.pad_token_id, tok.bos_token_id, tok.eos_token_id).eval()
    types = list(QUESTIONS)
    enc = [tok.encode(QUESTIONS[t], add_special_tokens=False) for t in types]
    L = max(map(len, enc))
    q = torch.tensor([e + [tok.pad_token_id] * (L - len(e)) for e in enc])
    qm = torch.tensor([[1] * len(e) + [0] * (L - len(e)) for e in enc])
    x = torch.rand(1, 1, 32, 32)
    feats = model.encode_pairs(x, x.flip(-1), x - x.flip(-1))
    free = model.generate(feats, torch.zeros(len(types), dtype=torch.long), q, qm, 63, num_beams)
    outs = model.generate(feats, torch.zeros(len(types), dtype=torch.long), q, qm, budget, num_beams,
                          logits_processor=grammar_processor(tok, types, num_beams, budget))
    texts = [tok.decode(o, skip_special_tokens=True, clean_up_tokenization_spaces=False) for o in outs]
    for qtype, text in zip(types, texts):
        assert is_answer(text, qtype), (qtype, text)
    parse_answer(texts[0])  # the difference answer is a change set
    # the constraint is what makes them valid: unconstrained, the untrained model babbles
    raw = [tok.decode(o, skip_special_tokens=True) for o in free]
    assert not all(is_answer(t, qt) for t, qt in zip(raw, types))


def test_change_set_pattern_states_exactly_that_set_in_any_order():
    from assets.diffvqa.answer_patterns import change_set_pattern

    cs = ChangeSet(added=("edema", "pleural effusion"), missing=("pneumothorax",),
                   levels=(LevelChange("cardiomegaly", "mild", "moderate"),))
    p = change_set_pattern(cs)
    assert p.fullmatch(compose_answer(cs))
    assert p.fullmatch(compose_answer(ChangeSet(added=cs.added[::-1], missing=cs.missing, levels=cs.levels)))
    assert not p.fullmatch(compose_answer(ChangeSet(added=("edema",), missing=cs.missing, levels=cs.levels)))
    assert not p.fullmatch("nothing has changed.")
    assert change_set_pattern(ChangeSet()).fullmatch("nothing has changed.")
    area = change_set_pattern(cs, area_question=True)
    assert area.fullmatch("the level of cardiomegaly has changed from mild to moderate. ")
    assert not area.fullmatch(compose_answer(cs))


def test_heads_decide_the_change_set_the_decoder_may_state():
    """decode_with_heads: whatever the (untrained) decoder prefers, a difference answer states
    exactly the change set read off the change and level heads."""
    import dataclasses

    from models.finding_heads import predicted_changes
    from models.vocabulary import finding_name_ids
    from models.predict import head_patterns

    tok = train_tokenizer(TEXTS * 5, vocab_size=1000)
    cfg = ModelConfig(backbone="tiny", image_size=32, n_queries=2, n_embd=32, n_layer=1, n_head=2,
                      vocab_size=len(tok), max_question_len=32, max_answer_len=64, dropout=0.0,
                      finding_heads=True, finding_tokens=True, decode_with_heads=True)
    torch.manual_seed(1)
    model = ReAl(cfg, tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, finding_name_ids(tok)).eval()
    with torch.no_grad():
        # make the change head say: edema added, cardiomegaly's level changed, nothing else
        head = model.finding_heads.change[-1]
        head.weight.zero_()
        bias = torch.zeros(30, 4)
        bias[:, 0] = 5.0
        bias[4, 1] = 10.0   # edema: added
        bias[2, 3] = 10.0   # cardiomegaly: level
        head.bias.copy_(bias.view(-1))
        x = torch.rand(1, 1, 32, 32)
        feats = model.encode_pairs(x, x.flip(-1), x - x.flip(-1))
        expected = predicted_changes(feats.findings, 0)
        assert expected.added == ("edema",) and [c.finding for c in expected.levels] == ["cardiomegaly"]
        q = torch.tensor([tok.encode(QUESTIONS["difference"], add_special_tokens=False)])
        pats = head_patterns(model, feats, torch.tensor([0]), [QUESTIONS["difference"]], ["difference"])
        out = model.generate(feats, torch.tensor([0]), q, torch.ones_like(q), 63,
                             logits_processor=grammar_processor(tok, ["difference"], 1, 63, pats))[0]
        text = tok.decode(out, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        assert parse_answer(text).items() == expected.items()
        # switched off, the same model decodes in the plain grammar
        model.cfg = dataclasses.replace(model.cfg, decode_with_heads=False)
        assert head_patterns(model, feats, torch.tensor([0]), [QUESTIONS["difference"]], ["difference"]) is None
