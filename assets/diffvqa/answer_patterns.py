"""The answer language of each Medical-Diff-VQA question type as one regular expression, and the
question type of a question read off its template.

Used by constrained decoding (models/constrained.py): with the `regex` package's partial
matching, "can this text still become a valid answer?" is one call, so a decoder can be kept in
the grammar token by token. The difference pattern is the grammar of assets/diffvqa/grammar.py
written as a regular language (level* added? missing?, with the serial-comma lists).
"""

from __future__ import annotations

import functools

import regex

from assets.diffvqa.vocabulary import FINDINGS, LEVELS, LOCATION_WORDS, QUESTION_TYPES, TYPES


def _alt(words) -> str:
    # longest first, so "moderate to large" is tried before "moderate"
    return "(?:" + "|".join(regex.escape(w) for w in sorted(words, key=len, reverse=True)) + ")"


# Repetitions are bounded so that every answer fits the decoder's token budget (an unbounded
# "(sentence)*" lets an untrained model loop until it is cut off mid-sentence): at most 3 level
# sentences, 6 items per list, 4 location words — more than any embedded answer has.
_F, _L = _alt(FINDINGS), _alt(LEVELS)
_LIST = rf"{_F}(?:, {_F}){{0,4}}, and {_F}"
_LEVEL = rf"the level of {_F} has changed from {_L} to {_L}\. "
_ADDED = (rf"the main image has (?:an additional finding of {_F}|additional findings of {_LIST}) "
          r"than the reference image\. ")
_MISSING = (rf"the main image is missing (?:the finding of {_F}|the findings of {_LIST}) "
            r"than the reference image\. ")
_CHANGES = rf"(?:{_LEVEL}){{0,3}}(?:{_ADDED})?(?:{_MISSING})?"
_YES_NO = "(?:yes|no)"

ANSWER_PATTERNS: dict[str, str] = {
    # "nothing has changed." or at least one sentence (the lookahead forbids the empty answer)
    "difference": rf"nothing has changed\.|(?=t){_CHANGES}",
    "abnormality": rf"{_YES_NO}|{_F}(?:, {_F}){{0,5}}",
    "presence": _YES_NO,
    "view": rf"{_YES_NO}|(?:PA|AP|LL|LATERAL|AP AXIAL|PA LLD|AP LLD|AP RLD) view",
    "location": rf"(?:left|right) side|{_alt(LOCATION_WORDS)}(?: {_alt(LOCATION_WORDS)}){{0,3}} area",
    "type": _alt(TYPES),
    "level": _L,
}
assert set(ANSWER_PATTERNS) == set(QUESTION_TYPES)


@functools.cache
def answer_pattern(question_type: str) -> regex.Pattern:
    if question_type not in ANSWER_PATTERNS:
        raise ValueError(f"unknown question type {question_type!r} (known: {sorted(ANSWER_PATTERNS)})")
    return regex.compile(ANSWER_PATTERNS[question_type])


def is_answer(text: str, question_type: str) -> bool:
    return answer_pattern(question_type).fullmatch(text) is not None


def could_become_answer(text: str, question_type: str) -> bool:
    """True if `text` is a prefix of some valid answer (or a whole one)."""
    return answer_pattern(question_type).fullmatch(text, partial=True) is not None


def question_type_of(question: str) -> str:
    """The type of a question by its template (the dataset's templates are fixed strings)."""
    q = question.strip().lower()
    if q.startswith("what has changed"):
        return "difference"
    if "abnormalit" in q:
        return "abnormality"
    if "view" in q:
        return "view"
    if q.startswith("where") or "left side or right side" in q:
        return "location"
    if q.startswith("what type"):
        return "type"
    if q.startswith("what level"):
        return "level"
    return "presence"
