"""Ingestion of the MIMIC tables and the question file: real layouts read as they are, malformed
rows quarantined with their line. `python -m pytest tests/assets/test_ingest.py`"""

import gzip

import polars as pl
import pytest

from assets.ingest import SchemaError, ingest_images, ingest_questions, question_id_of
from assets.storage import Storage
from tests.fixtures.tiny_mimic import META_COLS, read_csv_rows, write_csv, write_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny(tmp_path_factory.mktemp("tiny"), subjects=4)


def test_images_one_row_per_image_with_path(tiny):
    res = ingest_images(Storage(str(tiny.mimic_root)))
    assert res.table.height == len(tiny.images) and res.quarantine.height == 0
    for row in res.table.iter_rows(named=True):
        s = str(row["subject_id"])
        assert row["path"] == f"{tiny.mimic_root}/files/p{s[:2]}/p{s}/s{row['study_id']}/{row['dicom_id']}.jpg"
        assert row["group"] == f"p{s[:2]}"
    # chexpert joined by study
    blob = dict(zip(res.table["study_id"], res.table["Pleural Effusion"]))
    assert all(blob[s] == float(has) for s, has in tiny.blob.items())


def _rewrite_meta(tiny, tmp_path, edit):
    import shutil

    root = tmp_path / "m"
    shutil.copytree(tiny.mimic_root, root)
    rows = read_csv_rows(root / "mimic-cxr-2.0.0-metadata.csv.gz")
    edit(rows)
    write_csv(tmp_path / "meta.csv", [c for c in META_COLS if c in rows[0]], rows)
    (root / "mimic-cxr-2.0.0-metadata.csv.gz").write_bytes(gzip.compress((tmp_path / "meta.csv").read_bytes()))
    return root


@pytest.mark.parametrize("field, value, reason", [
    ("subject_id", "2000001", "bad_subject_id"),
    ("study_id", "40000000", "bad_study_id"),
    ("dicom_id", "not-a-dicom", "bad_dicom_id"),
    ("StudyDate", "21501340", "bad_study_datetime"),
    ("StudyTime", "256000.0", "bad_study_datetime"),
])
def test_malformed_metadata_rows_are_quarantined(tiny, tmp_path, field, value, reason):
    root = _rewrite_meta(tiny, tmp_path, lambda rows: rows[3].__setitem__(field, value))
    res = ingest_images(Storage(str(root)), check_files=False)
    assert res.quarantine.select("reason", "row").rows() == [(reason, 5)]
    assert res.counts == {"rows_in": len(tiny.images), "rows_out": len(tiny.images) - 1, "rows_quarantined": 1}


def test_duplicate_image_and_missing_split(tiny, tmp_path):
    def edit(rows):
        rows.append(dict(rows[0]))
        rows.append({**rows[1], "dicom_id": "ffffffff-00000000-00000000-00000000-00000000"})
    res = ingest_images(Storage(str(_rewrite_meta(tiny, tmp_path, edit))), check_files=False)
    n = len(tiny.images)
    assert sorted(res.quarantine.select("reason", "row").rows()) == [("duplicate_image", n + 2), ("missing_split", n + 3)]


def test_study_time_without_leading_zero(tiny, tmp_path):
    # MIMIC writes 04:59:06 as 45906.0
    def edit(rows):
        rows[0]["StudyTime"] = "45906.0"
    res = ingest_images(Storage(str(_rewrite_meta(tiny, tmp_path, edit))), check_files=False)
    got = res.table.filter(pl.col("dicom_id") == tiny.images[0]["dicom_id"])["acquired"][0]
    assert (got.hour, got.minute, got.second) == (4, 59, 6)


def test_missing_column_is_a_schema_error(tiny, tmp_path):
    root = _rewrite_meta(tiny, tmp_path, lambda rows: [r.pop("StudyDate") for r in rows])
    with pytest.raises(SchemaError, match="StudyDate"):
        ingest_images(Storage(str(root)))


def test_questions_selection_and_stable_ids(tiny):
    all_types = ingest_questions(Storage(str(tiny.diffvqa_root)), "all")
    diff = ingest_questions(Storage(str(tiny.diffvqa_root)), ["difference"])
    n_diff = sum(r["question_type"] == "difference" for r in tiny.questions)
    assert all_types.table.height == len(tiny.questions)
    assert diff.table.height == n_diff and diff.counts["rows_not_selected"] == len(tiny.questions) - n_diff
    r = diff.table.row(0, named=True)
    assert r["question_id"] == question_id_of(str(r["main_study_id"]), str(r["ref_study_id"]), "difference", r["question"])
    assert diff.table["question_id"].is_unique().all()


def test_question_file_defects(tiny, tmp_path):
    rows = [dict(r) for r in tiny.questions]
    diffs = [i for i, r in enumerate(rows) if r["question_type"] == "difference"]
    rows[diffs[0]]["answer"] = "the main image has additional findings of edema than the reference image. "
    rows[diffs[1]]["ref_id"] = rows[diffs[1]]["study_id"]
    rows.append({**rows[diffs[2]], "answer": "nothing has changed."})  # same question, other answer
    cols = list(rows[0])
    root = tmp_path / "dq"
    root.mkdir()
    write_csv(root / "mimic_pair_questions.csv", cols, rows)
    res = ingest_questions(Storage(str(root)), ["difference"])
    got = sorted(res.quarantine.select("reason", "row").rows())
    conflict = "conflicting_duplicate" if tiny.questions[diffs[2]]["answer"] != "nothing has changed." else "duplicate_question"
    assert got == sorted([("bad_list", diffs[0] + 2), ("ref_is_main", diffs[1] + 2), (conflict, len(rows) + 1)])
    assert res.counts["rows_in"] == res.counts["rows_out"] + res.counts["rows_quarantined"]
