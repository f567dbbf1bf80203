"""The seven Medical-Diff-VQA question types for one (main, reference) pair, with the dataset's
templates string for string (docs/data.md, "The Medical-Diff-VQA format"). At most one question per type
per main study, difference last; difference answers are composed by the shared grammar, so they
parse back to exactly the change set stored as ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from assets.diffvqa.grammar import ChangeSet, LevelChange, compose_answer
from assets.diffvqa.vocabulary import AREA_QUESTION, DIFFERENCE_QUESTION
from assets.synth.findings import SPECS
from assets.synth.timeline import StudyPlan


@dataclass(frozen=True)
class Question:
    question_type: str
    question: str
    answer: str
    changes: ChangeSet | None = None  # difference questions only


def change_set(ref: StudyPlan, main: StudyPlan, rng: np.random.Generator) -> ChangeSet:
    ref_names = [f.name for f in ref.findings]
    main_names = [f.name for f in main.findings]
    added = [n for n in main_names if n not in ref_names]
    # Added items and level sentences come in random order in the original; missing items keep
    # the reference's order.
    added = [added[i] for i in rng.permutation(len(added))]
    missing = tuple(n for n in ref_names if n not in main_names)
    levels = [LevelChange(n, ref.finding(n).level, main.finding(n).level)  # type: ignore[union-attr]
              for n in main_names if n in ref_names and ref.finding(n).level != main.finding(n).level]  # type: ignore[union-attr]
    levels = [levels[i] for i in rng.permutation(len(levels))]
    return ChangeSet(added=tuple(added), missing=missing, levels=tuple(levels))


def area_words(location: str) -> str | None:
    """The {words} of an area question: never bare "bilateral"; a lone side becomes "... lung"."""
    if location in ("left", "right"):
        return f"{location} lung"
    if location == "bilateral":
        return None
    return location


def difference_questions(ref: StudyPlan, main: StudyPlan, rng: np.random.Generator) -> list[Question]:
    changes = change_set(ref, main, rng)
    out = [Question("difference", DIFFERENCE_QUESTION, compose_answer(changes), changes)]
    # An area question asks about the location both images share a finding in; its answer is
    # that finding's level sentence alone, so two findings changing level in one area (say
    # consolidation and atelectasis in the right lower lung) get one question, about the first:
    # a second row with the same question and another answer is a conflicting duplicate that
    # ingestion would quarantine.
    asked: set[str] = set()
    for lc in changes.levels:
        words = area_words(main.finding(lc.finding).location or "bilateral")  # type: ignore[union-attr]
        if words and words not in asked:
            asked.add(words)
            single = ChangeSet(levels=(lc,))
            out.append(Question("difference", AREA_QUESTION.format(words=words), compose_answer(single), single))
    return out


def _pick(rng: np.random.Generator, items: list):
    return items[int(rng.integers(len(items)))]


def other_questions(main: StudyPlan, rng: np.random.Generator) -> list[Question]:
    out: list[Question] = []
    names = [f.name for f in main.findings]
    if names and rng.random() < 0.7:
        out.append(Question("abnormality", "what abnormalities are seen in this image?", ", ".join(names)))
    else:
        out.append(Question("abnormality", "is there evidence of any abnormalities in this image?",
                            "yes" if names else "no"))
    absent = [n for n in SPECS if n not in names]
    name = _pick(rng, names) if names and (rng.random() < 0.5 or not absent) else _pick(rng, absent)
    template = _pick(rng, ["is there evidence of {} in this image?", "is there {}?"])
    out.append(Question("presence", template.format(name), "yes" if name in names else "no"))
    if rng.random() < 0.5:
        out.append(Question("view", "which view is this image taken?", f"{main.view} view"))
    else:
        asked = _pick(rng, ["PA", "AP"])
        out.append(Question("view", f"is this {asked} view?", "yes" if asked == main.view else "no"))
    located = [f for f in main.findings if f.location]
    if located:
        f = _pick(rng, located)
        if f.side and rng.random() < 0.4:
            out.append(Question("location", f"is the {f.name} located on the left side or right side?", f"{f.side} side"))
        else:
            template = _pick(rng, ["where in the image is the {} located?", "where is the {}?"])
            out.append(Question("location", template.format(f.name), f"{f.location} area"))
    typed = [f for f in main.findings if f.type]
    if typed:
        f = _pick(rng, typed)
        out.append(Question("type", f"what type is the {f.name}?", f.type))  # type: ignore[arg-type]
    if main.findings:
        f = _pick(rng, list(main.findings))
        out.append(Question("level", f"what level is the {f.name}?", f.level))
    return out


def questions_for_pair(ref: StudyPlan, main: StudyPlan, rng: np.random.Generator) -> list[Question]:
    return other_questions(main, rng) + difference_questions(ref, main, rng)
