"""The byte-level BPE: exact round trips (the answers' trailing space included), special tokens,
save/load, and the question/answer encoders. `python -m pytest tests/models/test_tokenizer.py`"""

import pytest

from assets.diffvqa.grammar import ChangeSet, LevelChange, compose_answer
from assets.diffvqa.vocabulary import AREA_QUESTION, DIFFERENCE_QUESTION, FINDINGS
from models.tokenizer import (
    decode, encode_answers, encode_questions, load_tokenizer, train_tokenizer,
)

ANSWERS = [
    compose_answer(ChangeSet()),
    compose_answer(ChangeSet(added=FINDINGS[:3])),
    compose_answer(ChangeSet(missing=(FINDINGS[4],))),
    compose_answer(ChangeSet(levels=(LevelChange("edema", "moderate to large", "mild"),))),
]
QUESTIONS = [DIFFERENCE_QUESTION, AREA_QUESTION.format(words="left lung")]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(QUESTIONS * 20 + ANSWERS * 20, vocab_size=400)


def test_round_trips_exactly(tok):
    unseen = compose_answer(ChangeSet(added=(FINDINGS[-1],), missing=(FINDINGS[-2], FINDINGS[-3])))
    for text in QUESTIONS + ANSWERS + [unseen, "é, 肺 and  two  spaces "]:
        ids = tok.encode(text, add_special_tokens=False)
        assert decode(tok, [ids]) == [text]
    assert ANSWERS[1].endswith(". ") and decode(tok, [tok.encode(ANSWERS[1], add_special_tokens=False)])[0].endswith(". ")


def test_special_tokens(tok):
    specials = {tok.pad_token_id, tok.bos_token_id, tok.eos_token_id}
    assert len(specials) == 3 and max(specials) < len(tok) <= 400
    for text in QUESTIONS + ANSWERS:
        assert not specials & set(tok.encode(text, add_special_tokens=False))
    # merges were learned: a frequent answer is far fewer tokens than bytes
    assert len(tok.encode(ANSWERS[1], add_special_tokens=False)) < len(ANSWERS[1].encode()) / 3


def test_save_and_load(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    back = load_tokenizer(tmp_path)
    assert (back.pad_token_id, back.bos_token_id, back.eos_token_id) == (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
    for text in QUESTIONS + ANSWERS:
        assert back.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "missing")


def test_encoders_pad_and_end_answers_with_eos(tok):
    ids, mask = encode_answers(tok, ANSWERS[:2], max_len=64)
    lens = [len(tok.encode(a, add_special_tokens=False)) + 1 for a in ANSWERS[:2]]
    assert ids.shape == (2, max(lens)) and mask.sum(1).tolist() == lens
    for row, n in zip(ids.tolist(), lens):
        assert row[n - 1] == tok.eos_token_id and set(row[n:]) <= {tok.pad_token_id}
    # truncation keeps the eos: the model always learns to stop
    short, short_mask = encode_answers(tok, [ANSWERS[1]], max_len=5)
    assert short.shape == (1, 5) and short[0, -1] == tok.eos_token_id and short_mask.sum() == 5
    q, qm = encode_questions(tok, QUESTIONS, max_len=4)
    assert q.shape == (2, 4) and qm.sum() == 8
