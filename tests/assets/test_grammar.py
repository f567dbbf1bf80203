"""The difference-answer grammar: every answer form composes to the format file's exact string
and parses back to the same change set. `python -m pytest tests/assets/test_grammar.py`"""

import itertools

import pytest

from assets.diffvqa.grammar import (
    AnswerParseError, ChangeSet, LevelChange, compose_answer, join_items, parse_answer,
)
from assets.diffvqa.vocabulary import FINDINGS, LEVELS, NOTHING_CHANGED

EFF, CARDIO, EDEMA, PTX = "pleural effusion", "cardiomegaly", "edema", "pneumothorax"


@pytest.mark.parametrize(
    "changes, expected",
    [
        # nothing changed: the one answer without a trailing space
        (ChangeSet(), "nothing has changed."),
        (ChangeSet(added=(EFF,)),
         "the main image has an additional finding of pleural effusion than the reference image. "),
        # two items keep the serial comma: "a, and b"
        (ChangeSet(added=(EFF, EDEMA)),
         "the main image has additional findings of pleural effusion, and edema than the reference image. "),
        (ChangeSet(added=(EFF, EDEMA, CARDIO)),
         "the main image has additional findings of pleural effusion, edema, and cardiomegaly than the reference image. "),
        (ChangeSet(missing=(PTX,)),
         "the main image is missing the finding of pneumothorax than the reference image. "),
        (ChangeSet(missing=(PTX, EFF)),
         "the main image is missing the findings of pneumothorax, and pleural effusion than the reference image. "),
        (ChangeSet(levels=(LevelChange(EFF, "small", "moderate"),)),
         "the level of pleural effusion has changed from small to moderate. "),
        # level sentences first, then added, then missing
        (ChangeSet(added=(EDEMA,), missing=(PTX,), levels=(LevelChange(CARDIO, "mild", "severe"),)),
         "the level of cardiomegaly has changed from mild to severe. "
         "the main image has an additional finding of edema than the reference image. "
         "the main image is missing the finding of pneumothorax than the reference image. "),
    ],
)
def test_compose_exact_strings_and_parse_back(changes, expected):
    assert compose_answer(changes) == expected
    assert parse_answer(expected) == changes


def test_every_finding_and_level_pair_round_trips():
    # multi-word levels containing " to " are the hard case for the parser
    for finding, (a, b) in itertools.product(FINDINGS[:5], itertools.permutations(LEVELS, 2)):
        if {a, b} == {"mild", "moderate to severe"} or {a, b} == {"mild to moderate", "severe"}:
            continue  # "mild to moderate to severe" is ambiguous by construction; see below
        c = ChangeSet(levels=(LevelChange(finding, a, b),))
        assert parse_answer(compose_answer(c)) == c


def test_ambiguous_level_split_takes_shorter_reference_level():
    c = parse_answer("the level of edema has changed from mild to moderate to severe. ")
    assert c.levels == (LevelChange("edema", "mild", "moderate to severe"),)


def test_every_finding_in_lists_round_trips():
    for n in (1, 2, 3, 5):
        items = FINDINGS[:n]
        for c in (ChangeSet(added=items), ChangeSet(missing=items)):
            assert parse_answer(compose_answer(c)) == c


@pytest.mark.parametrize(
    "answer, reason",
    [
        ("", "empty_answer"),
        ("the main image has an additional finding of pleural effusion than the reference image.", "bad_terminator"),
        ("the main image has an additional finding of nodule than the reference image. ", "unknown_finding"),
        ("the level of edema has changed from mild to large. ", "unknown_level"),
        ("the main image has additional findings of edema than the reference image. ", "bad_list"),
        ("the lungs are clear. ", "unknown_sentence"),
        ("the main image is missing the finding of edema than the reference image. "
         "the main image has an additional finding of pneumothorax than the reference image. ", "bad_order"),
    ],
)
def test_off_grammar_answers_raise_with_reason(answer, reason):
    with pytest.raises(AnswerParseError) as err:
        parse_answer(answer)
    assert err.value.reason == reason


def test_change_items_ignore_order():
    a = ChangeSet(added=(EFF, EDEMA))
    b = ChangeSet(added=(EDEMA, EFF))
    assert a != b and a.items() == b.items() == {("added", EFF), ("added", EDEMA)}
    assert ChangeSet.from_dict(a.to_dict()) == a


def test_join_items_forms():
    assert join_items(["a"]) == "a"
    assert join_items(["a", "b"]) == "a, and b"
    assert join_items(["a", "b", "c"]) == "a, b, and c"
    assert NOTHING_CHANGED == "nothing has changed."
