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


@pytest.mark.parametrize("num_beams, budget", [(1, 63), (3, 63), (1, 40)])
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


def _heads_model():
    """A tiny untrained model that decodes with its heads, and its tokenizer."""
    from models.vocabulary import finding_name_ids

    tok = train_tokenizer(TEXTS * 5, vocab_size=1000)
    cfg = ModelConfig(backbone="tiny", image_size=32, n_queries=2, n_embd=32, n_layer=1, n_head=2,
                      vocab_size=len(tok), max_question_len=32, max_answer_len=64, dropout=0.0,
                      finding_heads=True, finding_tokens=True, decode_with_heads=True)
    torch.manual_seed(1)
    return tok, ReAl(cfg, tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, finding_name_ids(tok)).eval()


def test_heads_decide_the_change_set_the_decoder_may_state():
    """decode_with_heads: whatever the (untrained) decoder prefers, a difference answer states
    exactly the change set read off the change and level heads."""
    import dataclasses

    from models.finding_heads import predicted_changes
    from models.predict import head_patterns

    tok, model = _heads_model()
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


def _logits_with(present: dict[str, float], levels: dict[str, str]):
    """FindingLogits of one pair whose main image has `present` {finding: probability} and the
    most likely level `levels` {finding: level}."""
    from assets.diffvqa.vocabulary import FINDINGS, LEVELS
    from models.finding_heads import FindingLogits

    p = torch.full((1, len(FINDINGS)), 0.02)
    for name, prob in present.items():
        p[0, FINDINGS.index(name)] = prob
    level = torch.zeros(1, len(FINDINGS), len(LEVELS))
    for name, lv in levels.items():
        level[0, FINDINGS.index(name), LEVELS.index(lv)] = 5.0
    z = torch.zeros(1, len(FINDINGS))
    return FindingLogits(main_presence=torch.logit(p), ref_presence=z, main_level=level,
                         ref_level=level, change=torch.zeros(1, len(FINDINGS), 4))


def test_heads_answer_presence_abnormality_and_level_about_the_main_image():
    from models.finding_heads import single_image_answer

    lg = _logits_with({"edema": 0.9, "pleural effusion": 0.7, "atelectasis": 0.4}, {"edema": "severe"})
    ask = lambda q, t: single_image_answer(lg, 0, q, t)
    assert ask("is there edema?", "presence") == "yes"
    assert ask("is there evidence of atelectasis in this image?", "presence") == "no"  # 0.4
    assert ask("is there pleural effusion in the left lung?", "presence") == "yes"
    # the findings above 0.5, most likely first; the yes/no form says whether there is any
    assert ask("what abnormalities are seen in this image?", "abnormality") == "edema, pleural effusion"
    assert ask("is there evidence of any abnormalities in this image?", "abnormality") == "yes"
    assert ask("what level is the edema?", "level") == "severe"
    # no head knows views, places or types; a question naming no known finding gets no answer
    assert ask("which view is this image taken?", "view") is None
    assert ask("where is the edema?", "location") is None
    assert ask("is there a unicorn?", "presence") is None
    healthy = _logits_with({}, {})
    assert single_image_answer(healthy, 0, "is there evidence of any abnormalities in this image?",
                               "abnormality") == "no"
    # "what abnormalities" presumes one: the most likely finding, even below 0.5
    assert single_image_answer(_logits_with({"hernia": 0.3}, {}), 0,
                               "what abnormalities are seen in this image?", "abnormality") == "hernia"


def test_decoder_states_the_heads_single_image_answer():
    """decode_with_heads: an untrained decoder answers a presence or level question exactly as the
    heads say, and a view question still in its grammar."""
    from models.predict import head_patterns

    tok, model = _heads_model()
    with torch.no_grad():
        x = torch.rand(1, 1, 32, 32)
        feats = model.encode_pairs(x, x.flip(-1), x - x.flip(-1))
        feats.findings = _logits_with({"edema": 0.9}, {"edema": "moderate"})
        qs = ["is there edema?", "is there pneumothorax?", "what level is the edema?", QUESTIONS["view"]]
        types = ["presence", "presence", "level", "view"]
        ids = [tok.encode(q, add_special_tokens=False) for q in qs]
        width = max(map(len, ids))
        q = torch.tensor([i + [tok.pad_token_id] * (width - len(i)) for i in ids])
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids])
        pats = head_patterns(model, feats, torch.zeros(4, dtype=torch.long), qs, types)
        out = model.generate(feats, torch.zeros(4, dtype=torch.long), q, mask, 20,
                             logits_processor=grammar_processor(tok, types, 1, 20, pats))
        texts = [tok.decode(o, skip_special_tokens=True, clean_up_tokenization_spaces=False) for o in out]
    assert texts[:3] == ["yes", "no", "moderate"]
    assert is_answer(texts[3], "view")


def test_attribute_heads_answer_view_type_and_location():
    from assets.diffvqa.vocabulary import FINDINGS, LOCATION_WORDS, TYPES, VIEWS
    from models.finding_heads import single_image_answer

    lg = _logits_with({"edema": 0.9}, {})
    P, Fn = 1, len(FINDINGS)
    lg.main_view = torch.zeros(P, len(VIEWS))
    lg.main_view[0, VIEWS.index("AP")] = 3.0
    lg.main_type = torch.zeros(P, Fn, len(TYPES))
    lg.main_type[0, FINDINGS.index("edema"), TYPES.index("interstitial")] = 3.0
    lg.main_location = torch.full((P, Fn, len(LOCATION_WORDS)), -3.0)
    for w in ("lower", "left", "lung"):
        lg.main_location[0, FINDINGS.index("edema"), LOCATION_WORDS.index(w)] = 2.0
    ask = lambda q, t: single_image_answer(lg, 0, q, t)
    assert ask("which view is this image taken?", "view") == "AP view"
    assert ask("is this AP view?", "view") == "yes" and ask("is this PA view?", "view") == "no"
    assert ask("what type is the edema?", "type") == "interstitial"
    # place words in the order answers put them: side, height, structure
    assert ask("where is the edema?", "location") == "left lower lung area"
    assert ask("where in the image is the edema located?", "location") == "left lower lung area"
    assert ask("is the edema located on the left side or right side?", "location") == "left side"
    # a finding with no word above 0.5 still gets its likeliest place
    assert ask("where is the hernia?", "location").endswith(" area")


def test_a_place_in_the_question_needs_the_finding_there():
    """The dataset asks "is there X in the {place}?" of findings present elsewhere too, and
    "what abnormalities are seen in the {place}?" expects the one finding there."""
    from assets.diffvqa.vocabulary import FINDINGS, LOCATION_WORDS
    from models.finding_heads import single_image_answer

    lg = _logits_with({"edema": 0.9, "pleural effusion": 0.95}, {})
    lg.main_location = torch.full((1, len(FINDINGS), len(LOCATION_WORDS)), -3.0)
    for name, words in (("edema", ("left", "lower", "lung")), ("pleural effusion", ("right", "pleural"))):
        for w in words:
            lg.main_location[0, FINDINGS.index(name), LOCATION_WORDS.index(w)] = 3.0
    ask = lambda q, t: single_image_answer(lg, 0, q, t)
    assert ask("is there edema in the left lower lung area?", "presence") == "yes"
    assert ask("is there edema in the right lower lung area?", "presence") == "no"
    assert ask("Is there edema?", "presence") == "yes"  # case does not matter
    assert ask("what abnormalities are seen in the right pleural area?", "abnormality") == "pleural effusion"
    assert ask("what abnormalities are seen in the left lung area?", "abnormality") == "edema"
    assert ask("what abnormalities are seen in this image?", "abnormality") == "pleural effusion, edema"
