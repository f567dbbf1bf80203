"""Ground truth and the Diff-VQA pairs agree: every difference answer parses back to the stored
change set, and that change set is what the studies' findings imply; references are earlier
studies of the same subject."""

import json

import re

import polars as pl

from assets.diffvqa.grammar import ChangeSet, parse_answer
from assets.diffvqa.vocabulary import LOCATION_WORDS


def _load(root):
    pairs = pl.read_csv(root / "medical-diff-vqa" / "mimic_pair_questions.csv")
    qtruth = pl.read_parquet(root / "ground_truth" / "questions.parquet")
    studies = pl.read_parquet(root / "ground_truth" / "studies.parquet")
    return pairs, qtruth, studies


def test_question_truth_joins_row_for_row(smoke_dataset):
    pairs, qtruth, _ = _load(smoke_dataset)
    assert qtruth.height == pairs.height
    assert qtruth["row"].to_list() == list(range(pairs.height))
    for col in ("study_id", "ref_id", "question", "answer"):
        assert qtruth[col].to_list() == pairs[col].to_list()


def test_every_difference_answer_parses_to_its_change_set(smoke_dataset):
    pairs, qtruth, studies = _load(smoke_dataset)
    findings = {r["study_id"]: {f["name"]: f["level"] for f in r["findings"]} for r in studies.iter_rows(named=True)}
    diff = qtruth.filter(pl.col("question_type") == "difference")
    assert diff.height > 0 and diff["change_set"].null_count() == 0
    kinds = set()
    for r in diff.iter_rows(named=True):
        truth = ChangeSet.from_dict(json.loads(r["change_set"]))
        parsed = parse_answer(r["answer"])
        assert parsed == truth, r["answer"]
        # ... and the change set is what the two studies' findings say.
        main, ref = findings[r["study_id"]], findings[r["ref_id"]]
        if r["question"] == "what has changed compared to the reference image?":
            assert set(truth.added) == set(main) - set(ref)
            assert set(truth.missing) == set(ref) - set(main)
            assert {(c.finding, c.ref_level, c.main_level) for c in truth.levels} == {
                (n, ref[n], main[n]) for n in set(main) & set(ref) if main[n] != ref[n]}
        else:  # area question: one level sentence about a finding in both
            assert len(truth.levels) == 1 and not truth.added and not truth.missing
            c = truth.levels[0]
            assert (ref[c.finding], main[c.finding]) == (c.ref_level, c.main_level)
        kinds |= {k[0] for k in truth.items()} or {"nothing"}
    assert kinds >= {"added", "missing", "level", "nothing"}


def test_references_are_earlier_studies_of_the_same_subject(smoke_dataset):
    pairs, _, studies = _load(smoke_dataset)
    info = {r["study_id"]: (r["subject_id"], r["study_date"], r["study_order"]) for r in studies.iter_rows(named=True)}
    for r in pairs.select("study_id", "subject_id", "ref_id").unique().iter_rows(named=True):
        main, ref = info[r["study_id"]], info[r["ref_id"]]
        assert main[0] == ref[0] == r["subject_id"]
        assert ref[1] < main[1] and ref[2] < main[2]
    # Every non-first study is a main study; first studies never are.
    firsts = set(studies.filter(pl.col("study_order") == 1)["study_id"])
    assert not firsts & set(pairs["study_id"])
    assert set(pairs["study_id"]) == set(studies["study_id"]) - firsts


def test_mimic_all_matches_ground_truth(smoke_dataset):
    mimic_all = pl.read_csv(smoke_dataset / "medical-diff-vqa" / "mimic_all.csv",
                            schema_overrides={"No Finding": pl.Float64, "Pleural Effusion": pl.Float64})
    studies = pl.read_parquet(smoke_dataset / "ground_truth" / "studies.parquet")
    joined = mimic_all.join(studies, on="study_id", suffix="_gt")
    assert joined.height == studies.height
    assert (joined["dicom_id"] == joined["dicom_id_gt"]).all()
    assert (joined["study_order"] == joined["study_order_gt"].cast(pl.Float64)).all()
    for r in joined.iter_rows(named=True):
        names = {f["name"] for f in r["findings"]}
        assert (r["No Finding"] == 1.0) == (not names)
        if "pleural effusion" in names:
            assert r["Pleural Effusion"] in (1.0, -1.0)


def test_area_questions_use_location_words_and_never_bare_bilateral(smoke_dataset):
    pairs = pl.read_csv(smoke_dataset / "medical-diff-vqa" / "mimic_pair_questions.csv")
    area = pairs.filter(pl.col("question").str.starts_with("what has changed in the "))
    assert area.height > 0
    for q in area["question"]:
        m = re.fullmatch(r"what has changed in the (.+) area\?", q)
        assert m and m[1] != "bilateral", q
        assert set(m[1].split()) <= set(LOCATION_WORDS), q


def test_the_default_plan_never_asks_one_question_twice_about_a_pair():
    """Planned only (no rendering), the whole default profile: two findings changing level in one
    area must give one area question, not two rows with one question and two answers (ingestion
    would quarantine the second as a conflicting duplicate)."""
    from pathlib import Path

    from assets.synth.plan import SynthConfig, make_plan
    from assets.synth.writer import question_tables
    from assets.params import load_params

    section = load_params(Path(__file__).resolve().parents[2] / "params.yaml", profile="default")["synth"]
    cfg = SynthConfig.from_section(section, workers=1)
    pairs, _ = question_tables(make_plan(cfg), cfg.seed)
    keys = ["study_id", "ref_id", "question_type", "question"]
    repeated = pairs.group_by(keys).len().filter(pl.col("len") > 1)
    assert pairs.filter(pl.col("question_type") == "difference").height > 3000
    assert repeated.height == 0, repeated.head()
