"""Control references (assets/controls.py): the picker never returns the same subject, an
abnormal study, a study outside the training split or another view; rows without a control are quarantined; the
GX suite catches a control that breaks a rule. `python -m pytest tests/assets/test_controls.py`"""

from datetime import datetime, timedelta

import polars as pl

from assets import validation as v
from assets.controls import with_controls
from assets.finding_states import finding_targets
from assets.pairs import build_pairs

T0 = datetime(2150, 1, 1, 9, 0)
NORMAL_Q = "is there evidence of any abnormalities in this image?"
LIST_Q = "what abnormalities are seen in this image?"


def dicom(n: int) -> str:
    return f"{n:08x}-00000000-00000000-00000000-00000000"


def _world(extra_images=(), extra_questions=()):
    """Four patients, two studies each (study ids s*10+1 earlier, s*10+2 later). Patient 1 and 2
    are in train, 3 in test. The later study of patient 1 has effusion; 2's later study is
    normal, 3's both normal; 4 (train) is normal but imaged AP only."""
    imgs, qs = [], []
    for s, view, split in ((1, "PA", "train"), (2, "PA", "train"), (3, "PA", "test"), (4, "AP", "train")):
        for k in (1, 2):
            st = s * 10 + k
            imgs.append({"dicom_id": dicom(st), "subject_id": s, "study_id": st, "ViewPosition": view,
                         "acquired": T0 + timedelta(days=30 * s + k), "path": f"files/{dicom(st)}.jpg"})
        answer = "pleural effusion" if s == 1 else "no"
        qs.append((s, s * 10 + 2, s * 10 + 1, "abnormality", LIST_Q if s == 1 else NORMAL_Q, answer, split))
        qs.append((s, s * 10 + 2, s * 10 + 1, "difference", "what has changed compared to the reference image?",
                   "the main image has an additional finding of pleural effusion than the reference image. "
                   if s == 1 else "nothing has changed.", split))
    imgs += list(extra_images)
    qs += list(extra_questions)
    images = pl.DataFrame(imgs, schema_overrides={"acquired": pl.Datetime("us")})
    questions = pl.DataFrame([{"question_id": f"q{i:016x}", "subject_id": r[0], "main_study_id": r[1],
                               "ref_study_id": r[2], "question_type": r[3], "question": r[4], "answer": r[5],
                               "split": r[6], "_source": "q.csv", "_row": i + 2} for i, r in enumerate(qs)])
    pairs = build_pairs(questions, images).table
    return pairs, finding_targets(pairs)


def test_single_image_rows_get_a_normal_training_control_of_another_patient_in_the_same_view():
    pairs, targets = _world()
    out, quarantined, n_controls = with_controls(pairs, targets)
    assert out.height + quarantined.height == pairs.height
    ctl = out.filter(pl.col("reference") == "control")
    assert ctl.height == 3 and set(ctl["question_type"]) == {"abnormality"}
    by_subject = dict(zip(ctl["subject_id"], ctl["ref_subject_id"]))
    # the two train PA patients serve each other: 2's studies are normal; of 1's, only the earlier
    # one (effusion was added later, every other finding unchanged: all absent)
    assert by_subject[1] == 2 and by_subject[2] == 1
    # the test patient compares with the training bank, never with a test study
    assert by_subject[3] in (1, 2)
    for row in ctl.iter_rows(named=True):
        assert row["ref_subject_id"] != row["subject_id"]
        assert row["ref_view"] == row["main_view"]
        assert row["pair_id"] == f"{row['main_dicom_id']}__{row['ref_dicom_id']}"
    # the control is never an abnormal study: patient 1's later study (effusion) is nobody's control
    assert 12 not in ctl["ref_study_id"].to_list()
    # difference rows keep the patient's previous study
    diff = out.filter(pl.col("question_type") == "difference")
    assert (diff["reference"] == "previous").all() and (diff["subject_id"] == diff["ref_subject_id"]).all()
    assert n_controls == ctl["ref_study_id"].n_unique()


def test_no_candidate_is_quarantined_not_kept_with_its_old_reference():
    pairs, targets = _world()
    out, quarantined, _ = with_controls(pairs, targets)
    # patient 4 is the only one imaged AP: nobody else's normal study matches its view
    assert quarantined["reason"].to_list() == ["no_control"]
    assert "AP image" in quarantined["detail"][0] and "main study 42" in quarantined["detail"][0]
    assert not out.filter((pl.col("subject_id") == 4) & (pl.col("question_type") != "difference")).height


def test_the_closest_acquisition_wins_and_the_pick_is_deterministic():
    pairs, targets = _world()
    a, _, _ = with_controls(pairs, targets)
    b, _, _ = with_controls(pairs.sample(fraction=1.0, shuffle=True, seed=3), targets)
    assert a.equals(b)
    # patient 2's main study is day 62; patient 1's normal earlier study is day 31 -> that one
    row = a.filter((pl.col("subject_id") == 2) & (pl.col("reference") == "control")).row(0, named=True)
    assert row["ref_study_id"] == 11


def test_the_control_suite_passes_and_catches_each_broken_rule():
    pairs, targets = _world()
    out, _, _ = with_controls(pairs, targets)
    targets = finding_targets(out)
    assert v.validate_pairs(out).success
    assert v.validate_control_pairs(out, targets).success
    ctl = pl.col("reference") == "control"

    def failed(df):
        return {f["columns"] for f in v.validate_control_pairs(df, finding_targets(df)).failures}

    same = out.with_columns(ref_subject_id=pl.when(ctl).then(pl.col("subject_id")).otherwise(pl.col("ref_subject_id")))
    assert "other_subject" in failed(same)
    sick = out.with_columns(ref_study_id=pl.when(ctl & (pl.col("subject_id") == 2)).then(12)
                            .otherwise(pl.col("ref_study_id")))
    assert "control_normal" in failed(sick)
    # a control drawn from the test patient's studies
    tested = out.with_columns(ref_subject_id=pl.when(ctl & (pl.col("subject_id") == 1)).then(3)
                              .otherwise(pl.col("ref_subject_id")))
    assert "control_from_train" in failed(tested)
