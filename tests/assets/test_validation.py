"""GX suites: each passes on clean tables and fails, naming the expectation, on a planted bad
value. `python -m pytest tests/assets/test_validation.py`"""

import polars as pl
import pytest

from assets import validation as v
from assets.ingest import ingest_images, ingest_questions
from assets.pairs import build_pairs
from assets.storage import Storage
from tests.fixtures.tiny_mimic import write_tiny


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    t = write_tiny(tmp_path_factory.mktemp("v"), subjects=3)
    im = ingest_images(Storage(str(t.mimic_root))).table
    qs = ingest_questions(Storage(str(t.diffvqa_root)), ["difference"]).table
    return im, qs, build_pairs(qs, im).table, Storage(str(t.mimic_root)).list_files("files")


def failed(res):
    return {(f["type"], f["columns"]) for f in res.failures}


def test_clean_tables_pass(tables):
    im, qs, pairs, files = tables
    for res in (v.validate_images(im, files), v.validate_questions(qs), v.validate_pairs(pairs),
                v.validate_subject_disjoint(pairs)):
        assert res.success, res.markdown()
        assert res.statistics["evaluated_expectations"] > 0


def test_images_missing_file_and_duplicate_id(tables):
    im, _, _, files = tables
    gone = im["rel_path"][0]
    res = v.validate_images(pl.concat([im, im.head(1)]), files - {gone})
    assert ("expect_column_values_to_be_in_set", "file_exists") in failed(res)
    assert ("expect_column_values_to_be_unique", "dicom_id") in failed(res)


def test_questions_unparseable_answer_and_split(tables):
    _, qs, _, _ = tables
    bad = qs.with_columns(
        answer=pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("nothing changed")).otherwise("answer"),
        split=pl.when(pl.int_range(pl.len()) == 1).then(pl.lit("validate")).otherwise("split"))
    res = v.validate_questions(bad)
    f = failed(res)
    assert ("expect_column_values_to_be_in_set", "answer_parses") in f and ("expect_column_values_to_be_in_set", "split") in f
    assert not res.success and "FAILED" in res.markdown()


def test_pairs_order_and_subject(tables):
    _, _, pairs, _ = tables
    swapped = pairs.with_columns(main_acquired=pl.col("ref_acquired"))
    assert ("expect_column_pair_values_a_to_be_greater_than_b", "main_acquired, ref_acquired") in failed(v.validate_pairs(swapped))
    other = pairs.with_columns(ref_subject_id=pl.col("ref_subject_id") + 1)
    assert ("expect_column_pair_values_to_be_equal", "subject_id, ref_subject_id") in failed(v.validate_pairs(other))


def test_subject_disjoint(tables):
    _, _, pairs, _ = tables
    leak = pairs.with_columns(split=pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("test")).otherwise(pl.lit("train")))
    assert not v.validate_subject_disjoint(leak).success


def test_residual_stats_range_and_finite():
    ok = pl.DataFrame({"pair_id": ["a", "b"], "finite": [True, True], "min": [-0.5, 0.0], "max": [0.5, 1.0]})
    assert v.validate_residual_stats(ok).success
    bad = ok.with_columns(finite=pl.Series([True, False]), max=pl.Series([0.5, 1.5]))
    assert {f["columns"] for f in v.validate_residual_stats(bad).failures} == {"finite", "max"}
