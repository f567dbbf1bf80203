"""Closing a partial answer along its shortest completion (assets/diffvqa/completion.py): on the
pattern's automaton it is as short as the character search finds, valid for the real pattern,
and found where that search gives up (finding lists); syntax the automaton does not build, or a
completion a lookahead refuses, falls back to the search."""

import random

import regex

from assets.diffvqa.answer_patterns import (ANSWER_PATTERNS, _searched_completion, answer_pattern,
                                            change_set_pattern, shortest_completion)
from assets.diffvqa.completion import automaton
from assets.diffvqa.grammar import ChangeSet, LevelChange, compose_answer
from assets.diffvqa.vocabulary import FINDINGS, LEVELS

ANSWERS = {
    "difference": [
        "nothing has changed.",
        compose_answer(ChangeSet(added=("pleural effusion", "edema"), missing=("pneumothorax",),
                                 levels=(LevelChange("cardiomegaly", "mild", "moderate to severe"),))),
        compose_answer(ChangeSet(missing=("atelectasis",))),
        compose_answer(ChangeSet(levels=(LevelChange("edema", "mild", "moderate"),))),
    ],
    "abnormality": ["pleural effusion, edema", "yes"], "view": ["PA view", "no"],
    "location": ["left lower lung area", "right side"], "type": ["plate-like"], "level": ["moderate to severe"],
}


def test_as_short_as_the_character_search_wherever_that_finds_one():
    rng = random.Random(0)
    compared = 0
    for qtype, answers in ANSWERS.items():
        pattern = answer_pattern(qtype)
        for answer in answers:
            for cut in sorted(rng.sample(range(len(answer)), min(10, len(answer)))):
                prefix = answer[:cut]
                if pattern.fullmatch(prefix):
                    assert shortest_completion(pattern, prefix) == ""  # already whole ("moderate")
                    continue
                searched = _searched_completion(pattern, prefix, 400, 20_000)
                got = shortest_completion(pattern, prefix)
                assert got is not None and pattern.fullmatch(prefix + got), (prefix, got)
                if searched is not None:
                    assert len(got) == len(searched), (prefix, got, searched)
                    compared += 1
    assert compared >= 30


def test_a_finding_list_is_closed_where_the_search_gives_up():
    pattern = answer_pattern("difference")
    short = min(FINDINGS, key=len)
    for prefix in ("the main image is missing the findings of ",
                   "the main image has additional findings of pleural effusion, ",
                   "the main image has additional findings of pleu"):
        assert _searched_completion(pattern, prefix, 400, 60_000) is None  # what decoding met before
        tail = shortest_completion(pattern, prefix)
        assert tail is not None and pattern.fullmatch(prefix + tail), (prefix, tail)
    # shortest: two of the shortest finding, the list's ", and", the sentence's close
    tail = shortest_completion(pattern, "the main image is missing the findings of ")
    assert len(tail) == len(f"{short}, and {short} than the reference image. ")


def test_no_completion_for_what_cannot_become_an_answer():
    for qtype in ANSWER_PATTERNS:
        assert shortest_completion(answer_pattern(qtype), "qqq") is None
    assert shortest_completion(answer_pattern("level"), "mild") == ""  # already whole


def test_a_change_set_is_closed_with_exactly_its_items():
    cs = ChangeSet(added=("edema", "pneumothorax"), levels=(LevelChange("atelectasis", min(LEVELS, key=len), "severe"),))
    pattern = change_set_pattern(cs)
    for prefix in ("", "the level of atelectasis has changed from ", "the level of atelectasis has changed from "
                   f"{min(LEVELS, key=len)} to severe. the main image has additional findings of pneumothorax, "):
        tail = shortest_completion(pattern, prefix)
        assert tail is not None and pattern.fullmatch(prefix + tail), (prefix, tail)


def test_unknown_syntax_and_lookaheads_fall_back_to_the_search():
    negated = regex.compile(r"[^z] done\.")
    assert automaton(negated.pattern, negated.flags) is None  # a negated set: not built
    assert shortest_completion(negated, "a") == " done."
    # ignoring the lookahead, "b" would close it; the real pattern refuses that, the search does not
    ahead = regex.compile(r"(?=a)b|ab")
    assert automaton(ahead.pattern, ahead.flags) is not None
    assert shortest_completion(ahead, "") == "ab"


def test_a_completion_of_exactly_max_len_is_found():
    # the accepting state is reached by free moves after the last character
    assert shortest_completion(regex.compile("a(?:bc|de)"), "a", max_len=2) == "bc"
    assert shortest_completion(regex.compile("x(?:ab){2,3}"), "x", max_len=4) == "abab"
    assert shortest_completion(regex.compile("x(?:ab){2,3}"), "x", max_len=3) is None


def test_flags_that_change_what_matches_are_left_to_the_search():
    for pattern in (regex.compile("ab done", regex.IGNORECASE), regex.compile("(?i)ab done")):
        assert automaton(pattern.pattern, pattern.flags) is None
        tail = shortest_completion(pattern, "A")
        assert tail is not None and pattern.fullmatch("A" + tail), tail
    branch_reset = regex.compile("(?|ab|cd) x")  # the regex package's own syntax
    assert automaton(branch_reset.pattern, branch_reset.flags) is None
    assert shortest_completion(branch_reset, "a") == "b x"
