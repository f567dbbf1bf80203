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

    @classmethod
    def from_section(cls, section: dict, **overrides) -> "SynthConfig":
        """From params.yaml's `synth` section (a plain dict); `overrides` that are None are
        ignored, so CLI options left unset fall back to the section."""
        keys = ("subjects", "seed", "image_size", "render_size", "min_studies", "max_studies",
                "lateral_fraction", "workers", "jpeg_quality")
        values = {k: section[k] for k in keys if k in section}
        values.update({k: v for k, v in overrides.items() if v is not None})
        # Rendering above the output size would only be thrown away by the downsampling.
        values["render_size"] = min(int(values["render_size"]), int(values["image_size"]))
        return cls(**values)

    def __post_init__(self):
        if self.subjects < 3:
            raise ValueError(f"subjects={self.subjects}: need at least 3 (one per split)")
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
    """Independent streams per subject: 0 timeline/anatomy, 1 references/questions, 2 rendering."""
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


def make_plan(cfg: SynthConfig) -> list[SubjectPlan]:
    ds_rng = np.random.default_rng([cfg.seed, 1_000_003])
    subject_ids = ids.subject_ids(ds_rng, cfg.subjects)
    splits = _splits(ds_rng, cfg.subjects)
    timelines, anatomies, firsts = [], [], []
    for i in range(cfg.subjects):
        rng = subject_rng(cfg.seed, i, 0)
        anatomies.append(sample_anatomy(rng))
        timelines.append(sample_timeline(rng, cfg.min_studies, cfg.max_studies, cfg.lateral_fraction))
        # Dates shifted into 2100-2200 as MIMIC does.
        firsts.append(dt.date(int(rng.integers(2105, 2190)), 1, 1) + dt.timedelta(days=int(rng.integers(365))))
    all_study_ids = iter(ids.study_ids(ds_rng, sum(len(t) for t in timelines)))
    plans = []
    for i, (sid, timeline) in enumerate(zip(subject_ids, timelines)):
        st_ids = tuple(next(all_study_ids) for _ in timeline)
        dicoms = tuple(tuple(ids.dicom_id(cfg.seed, sid, st, k) for k in range(1 + s.lateral))
                       for st, s in zip(st_ids, timeline))
        rng = subject_rng(cfg.seed, i, 1)
        refs = tuple(None if j == 0 else _reference(rng, j) for j in range(len(timeline)))
        seeds = {name: int(rng.integers(2 ** 31)) for name in sorted({f.name for s in timeline for f in s.findings})}
        plans.append(SubjectPlan(index=i, subject_id=sid, split=splits[i], anatomy=anatomies[i],
                                 first_date=firsts[i], studies=timeline, study_ids=st_ids, dicom_ids=dicoms,
                                 references=refs, shape_seeds=seeds))
    return plans
