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

from assets.diffvqa.completion import automaton
from assets.diffvqa.vocabulary import FINDINGS, LEVELS, LOCATION_WORDS, QUESTION_TYPES, TYPES, VIEWS


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
    "view": rf"{_YES_NO}|{_alt(VIEWS)} view",
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


def _orders(items: tuple, cap: int = 24) -> list[tuple]:
    """Every order of a few items (the dataset orders added items and level sentences at random)."""
    import itertools

    return list(itertools.islice(itertools.permutations(items), cap))


def change_set_pattern(changes, area_question: bool = False) -> regex.Pattern:
    """The answers that state exactly `changes` (a grammar ChangeSet), in any order of items and
    level sentences. For an area question: any one of its level sentences (the dataset answers
    an area question with one), or any level sentence when it names none."""
    esc = regex.escape
    levels = [f"the level of {esc(c.finding)} has changed from {esc(c.ref_level)} to {esc(c.main_level)}\\. "
              for c in changes.levels]
    if area_question:
        return regex.compile("(?:" + "|".join(levels) + ")" if levels else _LEVEL)
    if changes.is_empty:
        return regex.compile(r"nothing has changed\.")

    def listed(items: tuple, one: str, many: str) -> str:
        if not items:
            return ""
        if len(items) == 1:
            return one.format(esc(items[0]))
        lists = ["(?:" + ", ".join(esc(x) for x in order[:-1]) + ", and " + esc(order[-1]) + ")"
                 for order in _orders(items)]
        return many.format("(?:" + "|".join(lists) + ")")

    level_part = "(?:" + "|".join("".join(order) for order in _orders(tuple(levels))) + ")" if levels else ""
    added = listed(changes.added, "the main image has an additional finding of {} than the reference image\\. ",
                   "the main image has additional findings of {} than the reference image\\. ")
    missing = listed(changes.missing, "the main image is missing the finding of {} than the reference image\\. ",
                     "the main image is missing the findings of {} than the reference image\\. ")
    return regex.compile(level_part + added + missing)


_ALPHABET = "".join(sorted({c for w in (*FINDINGS, *LEVELS, *TYPES, *LOCATION_WORDS, *VIEWS, "view",
                                        "the main image has an additional findings of than reference is missing",
                                        "nothing changed level from to yes no left right side area")
                            for c in w} | set(" ,.-")))


def shortest_completion(pattern: regex.Pattern, prefix: str, max_len: int = 400,
                        max_states: int = 400_000) -> str | None:
    """The shortest text that makes prefix + text a whole answer, or None if none within
    max_len. Used to close an answer when the token budget runs out. Found on the pattern's
    automaton (assets/diffvqa/completion.py); where that cannot decide (syntax it does not
    build, a completion a lookahead refuses), by the character search below."""
    if pattern.fullmatch(prefix):
        return ""
    if pattern.fullmatch(prefix, partial=True) is None:
        return None  # cannot become an answer at all
    auto = automaton(pattern.pattern, pattern.flags)
    if auto is not None:
        # the automaton admits at least what the pattern does (lookaheads left out), so no
        # tail within max_len there means none in the pattern; a prefix the pattern can
        # continue and the automaton cannot would be a builder's mistake: left to the search
        states = auto.after(prefix)
        if states:
            tail = auto.shortest_tail(states, max_len)
            if tail is None or pattern.fullmatch(prefix + tail):
                return tail
    return _searched_completion(pattern, prefix, max_len, max_states)


def _searched_completion(pattern: regex.Pattern, prefix: str, max_len: int, max_states: int) -> str | None:
    """Breadth-first over characters, pruned by partial matching: exact, but its frontier
    explodes in finding lists (gives up after max_states)."""
    frontier, seen = [""], 0
    for _ in range(max_len):
        nxt = []
        for tail in frontier:
            for c in _ALPHABET:
                text = prefix + tail + c
                seen += 1
                if pattern.fullmatch(text, partial=True) is None:
                    continue
                if pattern.fullmatch(text):
                    return tail + c
                nxt.append(tail + c)
            if seen > max_states:
                return None
        frontier = nxt
        if not frontier:
            return None
    return None
