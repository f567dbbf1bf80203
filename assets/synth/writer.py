"""The embedded dataset's tables, in the real files' columns and order, written so the same
content always gives the same bytes (gzip without a timestamp, fixed row order)."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import polars as pl

from assets.synth.findings import Finding
from assets.synth.labels import CHEXPERT, chexpert_labels
from assets.synth.plan import SubjectPlan, subject_rng
from assets.synth.questions import questions_for_pair

METADATA_COLUMNS = ("dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
                    "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
                    "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning")
MIMIC_ALL_COLUMNS = ("subject_id", "study_id", *CHEXPERT, "dicom_id", "view", "split", "study_date", "study_order")
PAIR_COLUMNS = ("study_id", "subject_id", "ref_id", "question_type", "question", "answer", "split")
VIEW_MEANING = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral"}
DIFFVQA_SPLIT = {"train": "train", "validate": "val", "test": "test"}


def write_csv(df: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = df.write_csv().encode()
    if path.suffix == ".gz":
        buf = io.BytesIO()
        # mtime=0 and no file name in the header: otherwise every run differs in bytes 4-8.
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
            gz.write(data)
        data = buf.getvalue()
    path.write_bytes(data)


def _study_time(seconds: float) -> float:
    s = int(seconds)
    return round((s // 3600) * 10000 + (s % 3600 // 60) * 100 + s % 60 + (seconds - s), 3)


def _orientation(view: str, study_id: int) -> str:
    # Portable AP films are often taken lying down; derived from the ID so it needs no RNG.
    return "Recumbent" if view == "AP" and study_id % 3 == 0 else "Erect"


def mimic_tables(plans: list[SubjectPlan], image_size: int, seed: int) -> dict[str, pl.DataFrame]:
    meta, split, chex, allrows = [], [], [], []
    for p in plans:
        rng = subject_rng(seed, p.index, 4)
        for j, study in enumerate(p.studies):
            desc = "CHEST (PA AND LAT)" if study.view == "PA" else "CHEST (PORTABLE AP)"
            for dicom, view in zip(p.dicom_ids[j], [study.view, "LATERAL"]):
                meta.append({"dicom_id": dicom, "subject_id": p.subject_id, "study_id": p.study_ids[j],
                             "PerformedProcedureStepDescription": desc, "ViewPosition": view,
                             "Rows": image_size, "Columns": image_size, "StudyDate": p.study_date(j),
                             "StudyTime": _study_time(study.seconds), "ProcedureCodeSequence_CodeMeaning": desc,
                             "ViewCodeSequence_CodeMeaning": VIEW_MEANING[view],
                             "PatientOrientationCodeSequence_CodeMeaning": _orientation(view, p.study_ids[j])})
                split.append({"dicom_id": dicom, "study_id": p.study_ids[j], "subject_id": p.subject_id, "split": p.split})
            labels = chexpert_labels(study, p.studies[j - 1] if j else None, rng)
            chex.append({"subject_id": p.subject_id, "study_id": p.study_ids[j], **labels})
            allrows.append({"subject_id": p.subject_id, "study_id": p.study_ids[j], **labels,
                            "dicom_id": p.dicom_ids[j][0], "view": VIEW_MEANING[study.view], "split": p.split,
                            "study_date": p.study_date(j), "study_order": float(j + 1)})
    label_schema = {c: pl.Float64 for c in CHEXPERT}
    ids = {"subject_id": pl.Int64, "study_id": pl.Int64}
    return {
        "metadata": pl.DataFrame(meta, schema={**{c: None for c in METADATA_COLUMNS}, **ids, "dicom_id": pl.String,
                                               "PerformedProcedureStepDescription": pl.String, "ViewPosition": pl.String,
                                               "Rows": pl.Int64, "Columns": pl.Int64, "StudyDate": pl.Int64,
                                               "StudyTime": pl.Float64, "ProcedureCodeSequence_CodeMeaning": pl.String,
                                               "ViewCodeSequence_CodeMeaning": pl.String,
                                               "PatientOrientationCodeSequence_CodeMeaning": pl.String}),
        "split": pl.DataFrame(split, schema={"dicom_id": pl.String, "study_id": pl.Int64, "subject_id": pl.Int64,
                                             "split": pl.String}),
        "chexpert": pl.DataFrame(chex, schema={**ids, **label_schema}),
        "mimic_all": pl.DataFrame(allrows, schema={**ids, **label_schema, "dicom_id": pl.String, "view": pl.String,
                                                   "split": pl.String, "study_date": pl.Int64, "study_order": pl.Float64}),
    }


def question_tables(plans: list[SubjectPlan], seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    rows, truth = [], []
    for p in plans:
        rng = subject_rng(seed, p.index, 3)
        for j, ref in enumerate(p.references):
            if ref is None:
                continue
            for q in questions_for_pair(p.studies[ref], p.studies[j], rng):
                rows.append({"study_id": p.study_ids[j], "subject_id": p.subject_id, "ref_id": p.study_ids[ref],
                             "question_type": q.question_type, "question": q.question, "answer": q.answer,
                             "split": DIFFVQA_SPLIT[p.split]})
                truth.append(json.dumps(q.changes.to_dict()) if q.changes is not None else None)
    ids = {"study_id": pl.Int64, "subject_id": pl.Int64, "ref_id": pl.Int64}
    pairs = pl.DataFrame(rows, schema={**ids, "question_type": pl.String, "question": pl.String,
                                       "answer": pl.String, "split": pl.String})
    gt = pairs.select("study_id", "subject_id", "ref_id", "question_type", "question", "answer").with_columns(
        pl.Series("change_set", truth, dtype=pl.String)).with_row_index("row")
    return pairs, gt


def _finding_rows(findings: tuple[Finding, ...]) -> list[dict]:
    return [f.to_dict() for f in findings]


def study_truth(plans: list[SubjectPlan], images: dict[str, dict]) -> pl.DataFrame:
    """Per study: its findings (name, site = side/lobe, level, type, location words), the subject's
    anatomy and each image's acquisition, for exact change scoring and location-aware work."""
    rows = []
    for p in plans:
        for j, study in enumerate(p.studies):
            acq = [{"dicom_id": d, "view": images[d]["view"], "geometry": images[d]["geometry"].__dict__,
                    "exposure": images[d]["exposure"].to_dict()} for d in p.dicom_ids[j]]
            rows.append({"subject_id": p.subject_id, "study_id": p.study_ids[j], "study_order": j + 1,
                         "study_date": p.study_date(j), "split": p.split, "view": study.view,
                         "dicom_id": p.dicom_ids[j][0], "findings": _finding_rows(study.findings),
                         "anatomy": json.dumps(p.anatomy.to_dict()), "acquisition": json.dumps(acq, default=list)})
    finding = pl.Struct({"name": pl.String, "site": pl.String, "level": pl.String, "type": pl.String,
                         "location": pl.String})
    return pl.DataFrame(rows, schema={"subject_id": pl.Int64, "study_id": pl.Int64, "study_order": pl.Int64,
                                      "study_date": pl.Int64, "split": pl.String, "view": pl.String,
                                      "dicom_id": pl.String, "findings": pl.List(finding), "anatomy": pl.String,
                                      "acquisition": pl.String})


def write_parquet(df: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(path, compression="zstd", statistics=False)


