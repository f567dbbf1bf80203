"""The pairing rules of docs/data.md, one test each, on small inline tables.
`python -m pytest tests/assets/test_pairs.py`"""

from datetime import datetime, timedelta

import polars as pl
import pytest

from assets.pairs import PAIR_COLUMNS, build_pairs, resplit, studies, subject_split_leaks

S1, S2 = 10000001, 11000002
T0 = datetime(2150, 1, 1, 9, 0)


def dicom(n: int) -> str:
    return f"{n:08x}-00000000-00000000-00000000-00000000"


def images(rows):
    """rows: (dicom n, subject, study, view, hours after T0)."""
    return pl.DataFrame(
        [{"dicom_id": dicom(n), "subject_id": s, "study_id": st, "ViewPosition": v,
          "acquired": T0 + timedelta(hours=h), "path": f"files/{dicom(n)}.jpg"} for n, s, st, v, h in rows],
        schema_overrides={"acquired": pl.Datetime("us")})


def questions(rows, qtype="difference"):
    """rows: (subject, main study, ref study[, split])."""
    return pl.DataFrame([{"question_id": f"q{i:016x}", "subject_id": r[0], "main_study_id": r[1],
                          "ref_study_id": r[2], "question_type": qtype, "question": "what has changed?",
                          "answer": "nothing has changed.", "split": r[3] if len(r) > 3 else "train",
                          "_source": "q.csv", "_row": i + 2} for i, r in enumerate(rows)])


BASE = [(1, S1, 50000001, "PA", 0), (2, S1, 50000002, "PA", 48)]


def test_valid_pair_has_the_output_contract():
    p = build_pairs(questions([(S1, 50000002, 50000001)]), images(BASE))
    assert p.quarantine.height == 0
    row = p.table.row(0, named=True)
    assert set(PAIR_COLUMNS) <= set(p.table.columns)
    assert row["pair_id"] == f"{dicom(2)}__{dicom(1)}"
    assert (row["main_dicom_id"], row["ref_dicom_id"], row["group"]) == (dicom(2), dicom(1), "p10")


def test_rule_same_subject():
    imgs = images(BASE + [(3, S2, 50000003, "PA", -24)])
    p = build_pairs(questions([(S1, 50000002, 50000003)]), imgs)
    assert p.table.height == 0 and p.quarantine["reason"].to_list() == ["ref_other_subject"]
    p = build_pairs(questions([(S2, 50000002, 50000003)]), imgs)
    assert p.quarantine["reason"].to_list() == ["main_other_subject"]


@pytest.mark.parametrize("ref_hours, ok", [(-1, True), (0, False), (1, False)])
def test_rule_reference_strictly_earlier(ref_hours, ok):
    # same StudyDate: StudyTime decides; the same instant is not "earlier"
    imgs = images([(1, S1, 50000001, "PA", 48 + ref_hours), (2, S1, 50000002, "PA", 48)])
    p = build_pairs(questions([(S1, 50000002, 50000001)]), imgs)
    assert p.table.height == int(ok)
    assert p.quarantine["reason"].to_list() == ([] if ok else ["ref_not_earlier"])


def test_reversed_non_difference_row_is_the_v101_defect():
    p = build_pairs(questions([(S1, 50000001, 50000002)], qtype="abnormality"), images(BASE))
    assert p.quarantine["reason"].to_list() == ["reversed_pair_v1_0_1"]


def test_rule_frontal_only():
    imgs = images([(1, S1, 50000001, "LATERAL", 0), (2, S1, 50000002, "PA", 48)])
    p = build_pairs(questions([(S1, 50000002, 50000001)]), imgs)
    assert p.quarantine["reason"].to_list() == ["no_frontal_image"]
    assert "reference study 50000001" in p.quarantine["detail"][0]


def test_rule_pa_over_ap_then_latest():
    imgs = images([(1, S1, 50000001, "AP", 5), (2, S1, 50000001, "PA", 1), (3, S1, 50000001, "LL", 9),
                   (4, S1, 50000002, "AP", 30), (5, S1, 50000002, "AP", 31)])
    st = studies(imgs).sort("study_id")
    assert st["dicom_id"].to_list() == [dicom(2), dicom(5)]  # PA beats a later AP; else the latest
    assert st["view"].to_list() == ["PA", "AP"]


def test_rule_mimic_all_named_dicom_wins_when_frontal():
    imgs = images([(1, S1, 50000001, "AP", 5), (2, S1, 50000001, "PA", 1), (3, S1, 50000002, "PA", 30),
                   (4, S1, 50000002, "LATERAL", 31)])
    named = pl.DataFrame({"study_id": [50000001, 50000002], "named_dicom_id": [dicom(1), dicom(4)]})
    st = studies(imgs, named).sort("study_id")
    # study 1: the named AP wins over our PA; study 2: the named image is lateral, our rule applies
    assert st["dicom_id"].to_list() == [dicom(1), dicom(3)]


def test_rule_unknown_studies():
    p = build_pairs(questions([(S1, 50000009, 50000001), (S1, 50000002, 50000009)]), images(BASE))
    assert p.quarantine["reason"].to_list() == ["unknown_main_study", "unknown_ref_study"]


def test_rule_split_from_question_file_and_leak_report():
    imgs = images(BASE + [(3, S1, 50000003, "PA", 96)])
    p = build_pairs(questions([(S1, 50000002, 50000001, "train"), (S1, 50000003, 50000002, "test")]), imgs)
    assert sorted(p.table["split"].to_list()) == ["test", "train"]
    leaks = subject_split_leaks(p.table)
    assert leaks["subject_id"].to_list() == [S1] and leaks["splits"].to_list() == [["test", "train"]]
    p = build_pairs(questions([(S1, 50000002, 50000001, "train"), (S1, 50000003, 50000002, "test")]), imgs,
                    resplit_by_subject=True)
    assert p.table["split"].unique().to_list() == [resplit(S1)]
    assert subject_split_leaks(p.table).height == 0


def test_resplit_is_stable_and_roughly_80_10_10():
    splits = [resplit(10000000 + i) for i in range(5000)]
    assert splits == [resplit(10000000 + i) for i in range(5000)]
    share = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert abs(share["train"] - 0.8) < 0.03 and abs(share["val"] - 0.1) < 0.02
