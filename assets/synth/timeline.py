"""A subject's history: 2-5 studies in which findings appear, resolve and change level.

Everything here is drawn from one per-subject generator, so a subject's history depends on
(seed, subject index) only, never on how subjects are spread over worker processes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from assets.synth.findings import SPECS, Finding

# How often each finding starts or appears: effusion and cardiomegaly are the commonest changes
# in real follow-up films.
PREVALENCE = {"pleural effusion": 0.22, "cardiomegaly": 0.15, "edema": 0.12, "atelectasis": 0.15,
              "consolidation": 0.13, "lung opacity": 0.13, "pneumothorax": 0.10}
MAX_FINDINGS = 4


@dataclass(frozen=True)
class StudyPlan:
    order: int  # 0-based position in the subject's history
    day: int  # days after the subject's first study
    seconds: float  # time of day, seconds after midnight
    view: str  # "PA" (erect, department) or "AP" (portable)
    lateral: bool  # a lateral view was also taken
    findings: tuple[Finding, ...]

    def finding(self, name: str) -> Finding | None:
        return next((f for f in self.findings if f.name == name), None)


def _draw_names(rng: np.random.Generator, k: int, exclude: set[str]) -> list[str]:
    names = [n for n in PREVALENCE if n not in exclude]
    if not names or k <= 0:
        return []
    p = np.array([PREVALENCE[n] for n in names])
    return list(rng.choice(names, size=min(k, len(names)), replace=False, p=p / p.sum()))


def _new_level(rng: np.random.Generator, name: str, current: str | None = None) -> str:
    levels = SPECS[name].levels
    if current is None:
        return levels[int(rng.integers(len(levels)))]
    i = levels.index(current)
    # Mostly one step up or down, as a condition progresses or improves.
    steps = [j for j in range(len(levels)) if j != i]
    w = np.array([2.0 if abs(j - i) == 1 else 1.0 for j in steps])
    return levels[steps[int(rng.choice(len(steps), p=w / w.sum()))]]


def sample_timeline(rng: np.random.Generator, min_studies: int, max_studies: int,
                    lateral_fraction: float) -> tuple[StudyPlan, ...]:
    counts = np.arange(min_studies, max_studies + 1)
    n = int(rng.choice(counts, p=counts / counts.sum()))  # longer histories a little likelier
    # A finding keeps its site and type for the whole history (a returning effusion is on the
    # same side), so level changes are level changes, not new findings.
    sites = {name: s.sites[int(rng.integers(len(s.sites)))] for name, s in SPECS.items()}
    types = {name: (s.types[int(rng.integers(len(s.types)))] if s.types else None) for name, s in SPECS.items()}
    current: dict[str, str] = {}
    for name in _draw_names(rng, int(rng.choice(4, p=[0.3, 0.35, 0.25, 0.1])), set()):
        current[name] = _new_level(rng, name)

    studies, day = [], 0
    p_lateral_given_pa = min(1.0, lateral_fraction / 0.6)
    for order in range(n):
        if order:
            day += int(rng.integers(1, 20)) if rng.random() < 0.4 else int(rng.integers(20, 400))
            nxt: dict[str, str] = {}
            for name, level in current.items():
                u = rng.random()
                if u < 0.22:
                    continue  # resolved
                nxt[name] = _new_level(rng, name, level) if u < 0.6 else level
            k_new = int(rng.choice(3, p=[0.55, 0.35, 0.10]))
            for name in _draw_names(rng, min(k_new, MAX_FINDINGS - len(nxt)), set(current) | set(nxt)):
                nxt[name] = _new_level(rng, name)
            current = nxt
        view = "PA" if rng.random() < 0.6 else "AP"
        lateral = view == "PA" and rng.random() < p_lateral_given_pa
        findings = tuple(Finding(name, sites[name], level, types[name]) for name, level in current.items())
        studies.append(StudyPlan(order=order, day=day, seconds=float(rng.uniform(6 * 3600, 23 * 3600)),
                                 view=view, lateral=lateral, findings=findings))
    return tuple(studies)
