"""The whole dataset decided up front, before any pixel is rendered: subjects, IDs, splits,
dates, timelines, reference choices. Rendering (assets/synth/render.py) then only turns plans
into pixels, so the files cannot depend on how subjects are spread over worker processes."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from assets.synth import ids
from assets.synth.anatomy import Anatomy, sample_anatomy
from assets.synth.timeline import StudyPlan, sample_timeline

SPLIT_SHARES = (("test", 0.1), ("validate", 0.1))  # the rest is train; MIMIC-CXR-JPG's words


@dataclass(frozen=True)
class SynthConfig:
    subjects: int
    seed: int
    image_size: int
    render_size: int
    min_studies: int = 2
    max_studies: int = 5
    lateral_fraction: float = 0.25
    workers: int = 1
    jpeg_quality: int = 92
    # subjects that arrived after the first `subjects` (a new upload batch): each drawn from its
    # own streams, so adding them never changes an existing subject, file or table row
    added_subjects: int = 0

    @property
    def total_subjects(self) -> int:
        return self.subjects + self.added_subjects

    @classmethod
    def from_section(cls, section: dict, **overrides) -> "SynthConfig":
        """From params.yaml's `synth` section (a plain dict); `overrides` that are None are
        ignored, so CLI options left unset fall back to the section."""
        keys = ("subjects", "seed", "image_size", "render_size", "min_studies", "max_studies",
                "lateral_fraction", "workers", "jpeg_quality", "added_subjects")
        values = {k: section[k] for k in keys if k in section}
        values.update({k: v for k, v in overrides.items() if v is not None})
        # Rendering above the output size would only be thrown away by the downsampling.
        values["render_size"] = min(int(values["render_size"]), int(values["image_size"]))
        return cls(**values)

    def __post_init__(self):
        if self.subjects < 3:
            raise ValueError(f"subjects={self.subjects}: need at least 3 (one per split)")
        if self.added_subjects < 0:
            raise ValueError(f"added_subjects={self.added_subjects}: must be 0 or more")
        if not 2 <= self.min_studies <= self.max_studies:
            raise ValueError(f"studies per subject {self.min_studies}..{self.max_studies}: need 2 <= min <= max")
        if self.render_size < 32 or self.image_size < 32:
            raise ValueError("render_size and image_size must be at least 32 px")
        if not 0 <= self.lateral_fraction <= 1:
            raise ValueError(f"lateral_fraction={self.lateral_fraction}: must be in [0, 1]")


@dataclass(frozen=True)
class SubjectPlan:
    index: int
    subject_id: int
    split: str  # train / validate / test
    anatomy: Anatomy
    first_date: dt.date
    studies: tuple[StudyPlan, ...]
    study_ids: tuple[int, ...]
    dicom_ids: tuple[tuple[str, ...], ...]  # per study: (frontal,) or (frontal, lateral)
    references: tuple[int | None, ...]  # per study: index of its reference study, None for the first
    shape_seeds: dict[str, int]  # per finding name: fixes its shape across this subject's studies

    def study_date(self, i: int) -> int:
        d = self.first_date + dt.timedelta(days=self.studies[i].day)
        return d.year * 10000 + d.month * 100 + d.day


def subject_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """Independent streams per subject: 0 timeline/anatomy/dates, 1 references/shapes, 3 questions,
    4 CheXpert labels, 5 an added subject's ID and split, 6 its study IDs, 10 + j study j's rendering."""
    return np.random.default_rng([seed, index, stream])


def _splits(rng: np.random.Generator, n: int) -> list[str]:
    order = rng.permutation(n)
    out = ["train"] * n
    start = 0
    for name, share in SPLIT_SHARES:
        k = max(1, int(round(share * n)))
        for i in order[start:start + k]:
            out[int(i)] = name
        start += k
    return out


def _reference(rng: np.random.Generator, main: int) -> int:
    # The original shuffles the subject's other frontal studies and takes the first earlier one;
    # weighting the previous study mimics follow-up films compared with the last one.
    return main - 1 if rng.random() < 0.6 else int(rng.integers(main))


def _subject(cfg: SynthConfig, i: int, subject_id: int, split: str, study_ids: tuple[int, ...] | None,
             taken_studies: set[int] | None = None) -> SubjectPlan:
    """Subject i's plan from its own streams (0 timeline/anatomy/dates, 1 references/shapes).
    study_ids None: drawn from stream 6, avoiding taken_studies (an added subject)."""
    rng = subject_rng(cfg.seed, i, 0)
    anatomy = sample_anatomy(rng)
    timeline = sample_timeline(rng, cfg.min_studies, cfg.max_studies, cfg.lateral_fraction)
    # Dates shifted into 2100-2200 as MIMIC does.
    first = dt.date(int(rng.integers(2105, 2190)), 1, 1) + dt.timedelta(days=int(rng.integers(365)))
    if study_ids is None:
        taken, study_rng = taken_studies or set(), subject_rng(cfg.seed, i, 6)
        fresh = (v for v in iter(lambda: int(study_rng.integers(50_000_000, 60_000_000)), None) if v not in taken)
        study_ids = tuple(_distinct(fresh, len(timeline)))
    dicoms = tuple(tuple(ids.dicom_id(cfg.seed, subject_id, st, k) for k in range(1 + s.lateral))
                   for st, s in zip(study_ids, timeline))
    rng = subject_rng(cfg.seed, i, 1)
    refs = tuple(None if j == 0 else _reference(rng, j) for j in range(len(timeline)))
    seeds = {name: int(rng.integers(2 ** 31)) for name in sorted({f.name for s in timeline for f in s.findings})}
    return SubjectPlan(index=i, subject_id=subject_id, split=split, anatomy=anatomy, first_date=first,
                       studies=timeline, study_ids=study_ids, dicom_ids=dicoms, references=refs,
                       shape_seeds=seeds)


def _distinct(values, n: int) -> list[int]:
    out: list[int] = []
    for v in values:
        if v not in out:
            out.append(v)
        if len(out) == n:
            return out
    return out


def _added_identity(cfg: SynthConfig, i: int, taken: set[int]) -> tuple[int, str]:
    """An added subject's ID (not taken) and split (the split shares as probabilities): stream 5."""
    rng = subject_rng(cfg.seed, i, 5)
    u = float(rng.random())
    split, edge = "train", 0.0
    for name, share in SPLIT_SHARES:
        edge += share
        if u < edge:
            split = name
            break
    sid = next(v for v in iter(lambda: int(rng.integers(10_000_000, 20_000_000)), None) if v not in taken)
    return sid, split


def make_plan(cfg: SynthConfig) -> list[SubjectPlan]:
    """The first `subjects` are drawn together (IDs, splits, study IDs from one dataset stream);
    the `added_subjects` after them one at a time from their own streams, so a dataset with more
    added subjects has the same plans for every subject it shares with one with fewer."""
    ds_rng = np.random.default_rng([cfg.seed, 1_000_003])
    subject_ids = ids.subject_ids(ds_rng, cfg.subjects)
    splits = _splits(ds_rng, cfg.subjects)
    timelines = [sample_timeline(_timeline_rng(cfg, i), cfg.min_studies, cfg.max_studies, cfg.lateral_fraction)
                 for i in range(cfg.subjects)]
    all_study_ids = iter(ids.study_ids(ds_rng, sum(len(t) for t in timelines)))
    plans = [_subject(cfg, i, sid, splits[i], tuple(next(all_study_ids) for _ in timelines[i]))
             for i, sid in enumerate(subject_ids)]
    taken_subjects = set(subject_ids)
    taken_studies = {s for p in plans for s in p.study_ids}
    for i in range(cfg.subjects, cfg.total_subjects):
        sid, split = _added_identity(cfg, i, taken_subjects)
        plan = _subject(cfg, i, sid, split, None, taken_studies)
        taken_subjects.add(sid)
        taken_studies.update(plan.study_ids)
        plans.append(plan)
    return plans


def _timeline_rng(cfg: SynthConfig, i: int) -> np.random.Generator:
    """Stream 0 advanced past the anatomy draw: where subject i's timeline is drawn from."""
    rng = subject_rng(cfg.seed, i, 0)
    sample_anatomy(rng)
    return rng
