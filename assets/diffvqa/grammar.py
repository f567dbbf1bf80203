"""The difference-answer grammar of Medical-Diff-VQA: compose a change set into the exact answer
string, and parse an answer string back into its change set.

One module serves three users: the embedded-dataset generator (compose), the data validation
("100 % of difference answers parse") and the change-level F1 of the evaluation (parse). Keeping
both directions here is what makes `parse(compose(c)) == c` testable.

Grammar (docs/data.md, "The Medical-Diff-VQA format"):
    answer   := "nothing has changed." | level* added? missing?
    level    := "the level of {f} has changed from {a} to {b}. "
    added    := "the main image has an additional finding of {f} than the reference image. "
              | "the main image has additional findings of {list} than the reference image. "
    missing  := "the main image is missing the finding of {f} than the reference image. "
              | "the main image is missing the findings of {list} than the reference image. "
    list     := f1, f2, ..., and fn      (two items: "f1, and f2")
Every sentence ends in ". ", so a non-empty answer ends with a space.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from assets.diffvqa.vocabulary import EXTRA_FINDINGS, FINDINGS, LEVELS, NOTHING_CHANGED

_KNOWN_FINDINGS = frozenset(FINDINGS) | frozenset(EXTRA_FINDINGS)
_KNOWN_LEVELS = frozenset(LEVELS)

_LEVEL_RE = re.compile(r"^the level of (?P<finding>.+?) has changed from (?P<levels>.+)$")
_ADDED_ONE_RE = re.compile(r"^the main image has an additional finding of (?P<items>.+) than the reference image$")
_ADDED_MANY_RE = re.compile(r"^the main image has additional findings of (?P<items>.+) than the reference image$")
_MISSING_ONE_RE = re.compile(r"^the main image is missing the finding of (?P<items>.+) than the reference image$")
_MISSING_MANY_RE = re.compile(r"^the main image is missing the findings of (?P<items>.+) than the reference image$")


class AnswerParseError(ValueError):
    """An answer that is not a sentence of the difference grammar. `reason` is machine-readable."""

    def __init__(self, answer: str, reason: str, detail: str):
        super().__init__(f"{reason}: {detail} (answer={answer!r})")
        self.answer, self.reason, self.detail = answer, reason, detail


@dataclass(frozen=True)
class LevelChange:
    finding: str
    ref_level: str
    main_level: str


@dataclass(frozen=True)
class ChangeSet:
    """What changed from the reference to the main study. Order is kept (it is part of the
    answer string) but ignored by `items()`, which is what change-F1 counts."""

    added: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    levels: tuple[LevelChange, ...] = field(default_factory=tuple)

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.missing or self.levels)

    def items(self) -> frozenset[tuple[str, ...]]:
        """Order-free atoms: ("added", f), ("missing", f), ("level", f, from, to)."""
        out: set[tuple[str, ...]] = {("added", f) for f in self.added}
        out |= {("missing", f) for f in self.missing}
        out |= {("level", c.finding, c.ref_level, c.main_level) for c in self.levels}
        return frozenset(out)

    def to_dict(self) -> dict:
        return {
            "added": list(self.added),
            "missing": list(self.missing),
            "levels": [[c.finding, c.ref_level, c.main_level] for c in self.levels],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ChangeSet":
        return cls(
            added=tuple(d.get("added", ())),
            missing=tuple(d.get("missing", ())),
            levels=tuple(LevelChange(*triple) for triple in d.get("levels", ())),
        )


def join_items(items: tuple[str, ...] | list[str]) -> str:
    """'a' / 'a, and b' / 'a, b, and c' — the dataset's serial-comma quirk, two items included."""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + ", and " + items[-1]


def compose_answer(changes: ChangeSet) -> str:
    if changes.is_empty:
        return NOTHING_CHANGED
    parts = [f"the level of {c.finding} has changed from {c.ref_level} to {c.main_level}. " for c in changes.levels]
    if len(changes.added) == 1:
        parts.append(f"the main image has an additional finding of {changes.added[0]} than the reference image. ")
    elif changes.added:
        parts.append(f"the main image has additional findings of {join_items(changes.added)} than the reference image. ")
    if len(changes.missing) == 1:
        parts.append(f"the main image is missing the finding of {changes.missing[0]} than the reference image. ")
    elif changes.missing:
        parts.append(f"the main image is missing the findings of {join_items(changes.missing)} than the reference image. ")
    return "".join(parts)


def _split_items(answer: str, text: str, many: bool, strict: bool) -> tuple[str, ...]:
    if not many:
        items = [text]
    else:
        head, sep, last = text.rpartition(", and ")
        if not sep:
            raise AnswerParseError(answer, "bad_list", f"plural list without ', and ': {text!r}")
        items = head.split(", ") + [last]
    for item in items:
        if not item or item != item.strip():
            raise AnswerParseError(answer, "bad_list", f"empty or padded item in {text!r}")
        if strict and item not in _KNOWN_FINDINGS:
            raise AnswerParseError(answer, "unknown_finding", f"{item!r} is not a Medical-Diff-VQA finding")
    return tuple(items)


def _split_levels(answer: str, finding: str, text: str, strict: bool) -> LevelChange:
    # Level words may contain " to " themselves ("moderate to large"), so try every split point
    # and keep the first whose two sides are both known levels. The only ambiguous form,
    # "from mild to moderate to severe", resolves to the shorter reference level (documented).
    pieces = text.split(" to ")
    candidates = [(" to ".join(pieces[:i]), " to ".join(pieces[i:])) for i in range(1, len(pieces))]
    if not candidates:
        raise AnswerParseError(answer, "bad_level", f"no ' to ' in level change {text!r}")
    if not strict:
        return LevelChange(finding, *candidates[0])
    for ref_level, main_level in candidates:
        if ref_level in _KNOWN_LEVELS and main_level in _KNOWN_LEVELS:
            return LevelChange(finding, ref_level, main_level)
    raise AnswerParseError(answer, "unknown_level", f"no split of {text!r} into two known levels")


def parse_answer(answer: str, strict: bool = True) -> ChangeSet:
    """Invert `compose_answer`. `strict` also checks findings and levels against the vocabulary.

    Raises AnswerParseError (with a machine-readable `reason`) on anything off-grammar, so a
    validation step can quarantine the row with that reason."""
    if answer == NOTHING_CHANGED:
        return ChangeSet()
    if not answer:
        raise AnswerParseError(answer, "empty_answer", "the answer is empty")
    if not answer.endswith(". "):
        raise AnswerParseError(answer, "bad_terminator", "a difference answer must end with '. '")
    levels: list[LevelChange] = []
    added: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    stage = 0  # 0: level sentences allowed, 1: after added, 2: after missing
    for sentence in answer[:-2].split(". "):
        if m := _LEVEL_RE.match(sentence):
            if stage:
                raise AnswerParseError(answer, "bad_order", "level sentence after added/missing")
            finding = m["finding"]
            if strict and finding not in _KNOWN_FINDINGS:
                raise AnswerParseError(answer, "unknown_finding", f"{finding!r} is not a Medical-Diff-VQA finding")
            levels.append(_split_levels(answer, finding, m["levels"], strict))
        elif (m := _ADDED_ONE_RE.match(sentence)) or (m2 := _ADDED_MANY_RE.match(sentence)):
            if stage >= 1:
                raise AnswerParseError(answer, "bad_order", "added sentence repeated or after missing")
            added = _split_items(answer, (m or m2)["items"], many=m is None, strict=strict)
            stage = 1
        elif (m := _MISSING_ONE_RE.match(sentence)) or (m2 := _MISSING_MANY_RE.match(sentence)):
            if stage >= 2:
                raise AnswerParseError(answer, "bad_order", "missing sentence repeated")
            missing = _split_items(answer, (m or m2)["items"], many=m is None, strict=strict)
            stage = 2
        else:
            raise AnswerParseError(answer, "unknown_sentence", f"{sentence!r} is not a difference sentence")
    return ChangeSet(added=added, missing=missing, levels=tuple(levels))


def try_parse_answer(answer: str, strict: bool = True) -> ChangeSet | None:
    """For scoring generated text: an off-grammar prediction is an empty change set, not a crash."""
    try:
        return parse_answer(answer, strict=strict)
    except AnswerParseError:
        return None
