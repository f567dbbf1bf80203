"""Pair construction: one row per question with its main and reference study and the image chosen
for each. The rules (docs/data.md "Pairing rules"), each tested in tests/assets/test_pairs.py:

1. Same subject: main and reference study both belong to the question's subject_id.
2. Reference strictly earlier: by StudyDate, then StudyTime (the study's first acquisition).
3. Frontal only: a study's image is PA or AP; a study with only lateral views cannot be paired.
4. Image per study: the dicom Medical-Diff-VQA's mimic_all.csv names for the study wins when it is
   an ingested frontal image of that study; else PA over AP, then the latest acquisition, then
   the smallest dicom_id (a deterministic tie-break).
5. Split from the question file (or, with resplit_by_subject, a hash of the subject); subject
   disjointness is checked by validation, not enforced here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import polars as pl

from assets import quarantine as q
from assets.ingest import DICOM_RE, MIMIC_ALL_CSV, collect_table, scan_table
from assets.storage import Storage

FRONTAL = ("PA", "AP")
PAIR_COLUMNS = (
    "question_id", "pair_id", "subject_id", "group", "main_study_id", "ref_study_id", "main_dicom_id",
    "ref_dicom_id", "main_path", "ref_path", "question_type", "question", "answer", "split",
    "ref_subject_id", "main_acquired", "ref_acquired", "main_view", "ref_view",
    "reference",  # "previous": the patient's earlier study | "control": a matched normal study (assets/controls.py)
)


@dataclass
class Paired:
    table: pl.DataFrame
    quarantine: pl.DataFrame
    counts: dict[str, int] = field(default_factory=dict)


def read_mimic_all(diffvqa: Storage) -> pl.DataFrame | None:
    """study_id -> the dicom Medical-Diff-VQA used; None when the file is not there (it is
    optional: the rules fall back to our own choice). A file that is there is checked like the
    ingested tables (a FIFO, an empty file or no study_id/dicom_id column: one line naming it)."""
    if not diffvqa.exists(MIMIC_ALL_CSV):
        return None
    lf = scan_table(diffvqa, MIMIC_ALL_CSV, ("study_id", "dicom_id"))
    return collect_table(
        lf.select(pl.col("study_id").str.strip_chars().cast(pl.Int64, strict=False),
                  pl.col("dicom_id").str.strip_chars().alias("named_dicom_id"))
        .filter(pl.col("study_id").is_not_null() & pl.col("named_dicom_id").str.contains(DICOM_RE))
        .unique("study_id", keep="first", maintain_order=True),
        diffvqa.url(MIMIC_ALL_CSV))


def studies(images: pl.DataFrame, mimic_all: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per study: subject, first acquisition, and the chosen frontal image (null when
    the study has only non-frontal views)."""
    per_study = images.group_by("study_id").agg(
        pl.col("subject_id").first(), pl.col("acquired").min().alias("study_acquired"),
        pl.col("subject_id").n_unique().alias("n_subjects"))
    frontal = images.filter(pl.col("ViewPosition").is_in(FRONTAL))
    if mimic_all is not None:
        frontal = frontal.join(mimic_all, on="study_id", how="left")
        named = pl.col("dicom_id") == pl.col("named_dicom_id")
    else:
        named = pl.lit(False)
    chosen = (
        frontal.with_columns(_named=named.fill_null(False), _pa=pl.col("ViewPosition") == "PA")
        .sort(["study_id", "_named", "_pa", "acquired", "dicom_id"],
              descending=[False, True, True, True, False])
        .group_by("study_id", maintain_order=True).first()
        .select("study_id", "dicom_id", "path", pl.col("ViewPosition").alias("view"))
    )
    return per_study.join(chosen, on="study_id", how="left")


def resplit(subject_id: int, fractions: tuple[float, float] = (0.8, 0.1)) -> str:
    """A subject-disjoint split from a hash of the subject: stable whatever else is in the data."""
    u = int(hashlib.sha1(str(subject_id).encode()).hexdigest()[:8], 16) / 2**32
    return "train" if u < fractions[0] else ("val" if u < fractions[0] + fractions[1] else "test")


def build_pairs(questions: pl.DataFrame, images: pl.DataFrame, mimic_all: pl.DataFrame | None = None,
                resplit_by_subject: bool = False) -> Paired:
    st = studies(images, mimic_all)
    main = st.rename({c: f"main_{c}" for c in st.columns if c != "study_id"}).rename({"study_id": "main_study_id"})
    ref = st.rename({c: f"ref_{c}" for c in st.columns if c != "study_id"}).rename({"study_id": "ref_study_id"})
    df = questions.join(main, on="main_study_id", how="left").join(ref, on="ref_study_id", how="left")
    s = q.Sieve(df, "study_pairs")
    s.drop(pl.col("main_subject_id").is_null(), "unknown_main_study",
           pl.format("main study {} has no ingested image (absent or quarantined in mimic_images)", pl.col("main_study_id")))
    s.drop(pl.col("ref_subject_id").is_null(), "unknown_ref_study",
           pl.format("reference study {} has no ingested image (absent or quarantined in mimic_images)", pl.col("ref_study_id")))
    s.drop(pl.col("main_subject_id") != pl.col("subject_id"), "main_other_subject",
           pl.format("main study {} belongs to subject {}, not {}", pl.col("main_study_id"), pl.col("main_subject_id"), pl.col("subject_id")))
    s.drop(pl.col("ref_subject_id") != pl.col("subject_id"), "ref_other_subject",
           pl.format("reference study {} belongs to subject {}, not {}", pl.col("ref_study_id"), pl.col("ref_subject_id"), pl.col("subject_id")))
    s.drop(pl.col("main_dicom_id").is_null(), "no_frontal_image",
           pl.format("main study {} has no PA or AP image (lateral only)", pl.col("main_study_id")))
    s.drop(pl.col("ref_dicom_id").is_null(), "no_frontal_image",
           pl.format("reference study {} has no PA or AP image (lateral only)", pl.col("ref_study_id")))
    # v1.0.1 swapped main/ref on difference rows only; other types may still carry the reversed
    # pair. Those rows are the known defect, named apart from a genuinely wrong difference row.
    not_earlier = pl.col("ref_study_acquired") >= pl.col("main_study_acquired")
    s.drop(not_earlier & (pl.col("question_type") != "difference"), "reversed_pair_v1_0_1",
           pl.format("reference study {} ({}) is not earlier than main study {} ({}): the v1.0.1 swap left this "
                     "non-difference row reversed", pl.col("ref_study_id"), pl.col("ref_study_acquired"),
                     pl.col("main_study_id"), pl.col("main_study_acquired")))
    s.drop(not_earlier, "ref_not_earlier",
           pl.format("reference study {} ({}) is not earlier than main study {} ({})", pl.col("ref_study_id"),
                     pl.col("ref_study_acquired"), pl.col("main_study_id"), pl.col("main_study_acquired")))
    out = s.df
    if resplit_by_subject:
        subjects = out["subject_id"].unique().to_list()
        out = out.drop("split").join(pl.DataFrame({"subject_id": subjects, "split": [resplit(x) for x in subjects]},
                                                  schema_overrides={"subject_id": pl.Int64}), on="subject_id")
    out = out.with_columns(
        pair_id=pl.concat_str([pl.col("main_dicom_id"), pl.lit("__"), pl.col("ref_dicom_id")]),
        group=pl.concat_str([pl.lit("p"), pl.col("subject_id").cast(pl.String).str.slice(0, 2)]),
        reference=pl.lit("previous"),
    ).rename({"main_study_acquired": "main_acquired", "ref_study_acquired": "ref_acquired"})
    out = out.select(*PAIR_COLUMNS, q.SOURCE_COL, q.ROW_COL).sort(
        ["group", "subject_id", "main_study_id", "question_type", "question_id"])
    return Paired(out, s.quarantine, s.counts(out.height))


def subject_split_leaks(pairs: pl.DataFrame) -> pl.DataFrame:
    """Subjects whose questions sit in more than one split (a leak between train and test)."""
    return (pairs.group_by("subject_id").agg(pl.col("split").n_unique().alias("n_splits"),
                                              pl.col("split").unique().sort().alias("splits"))
            .filter(pl.col("n_splits") > 1).sort("subject_id"))
