"""Identifiers in MIMIC-CXR's own forms and ranges, so code written for the real files (path
builders, regexes, integer dtypes) runs unchanged on the embedded dataset.

subject_id: 8 digits starting with 1 (folders p10-p19); study_id: 8 digits starting with 5;
dicom_id: 40 hex digits in five dash-separated groups of 8."""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath

import numpy as np


def unique_ids(rng: np.random.Generator, n: int, low: int, high: int) -> list[int]:
    """n distinct integers in [low, high), in draw order."""
    out: list[int] = []
    seen: set[int] = set()
    while len(out) < n:
        for v in rng.integers(low, high, size=n - len(out) + 8).tolist():
            if v not in seen and len(out) < n:
                seen.add(v)
                out.append(v)
    return out


def subject_ids(rng: np.random.Generator, n: int) -> list[int]:
    return unique_ids(rng, n, 10_000_000, 20_000_000)


def study_ids(rng: np.random.Generator, n: int) -> list[int]:
    return unique_ids(rng, n, 50_000_000, 60_000_000)


def dicom_id(seed: int, subject_id: int, study_id: int, image: int) -> str:
    h = hashlib.sha1(f"spotdiff:{seed}:{subject_id}:{study_id}:{image}".encode()).hexdigest()
    return "-".join(h[i:i + 8] for i in range(0, 40, 8))


def image_path(subject_id: int, study_id: int, dicom: str) -> PurePosixPath:
    """files/p{first 2 digits}/p{subject_id}/s{study_id}/{dicom_id}.jpg, relative to the root."""
    s = str(subject_id)
    return PurePosixPath("files", f"p{s[:2]}", f"p{s}", f"s{study_id}", f"{dicom}.jpg")
