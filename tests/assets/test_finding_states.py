"""Finding targets read off the question files: each rule of assets/finding_states.py on a small
inline timeline, and agreement with the embedded generator's exact ground truth.
`python -m pytest tests/assets/test_finding_states.py`"""

import polars as pl
import pytest

from assets.diffvqa.grammar import ChangeSet, LevelChange, compose_answer
from assets.diffvqa.vocabulary import DIFFERENCE_QUESTION, FINDINGS, LEVELS
from assets.finding_states import coverage, finding_targets

EFF, EDEMA, CARDIO = (FINDINGS.index(f) for f in ("pleural effusion", "edema", "cardiomegaly"))


def rows(*qs):
    """qs: (pair, main study, ref study, type, question, answer)."""
    return pl.DataFrame([dict(zip(("pair_id", "main_study_id", "ref_study_id", "question_type",
                                   "question", "answer"), q)) for q in qs])


def by_pair(df):
    return {r["pair_id"]: r for r in df.to_dicts()}


def test_timeline_propagates_through_unchanged_findings():
    # study 1 -> 2: effusion added; 2 -> 3: edema added, cardiomegaly level mild -> moderate
    diff_a = compose_answer(ChangeSet(added=("pleural effusion",)))
    diff_b = compose_answer(ChangeSet(added=("edema",), levels=(LevelChange("cardiomegaly", "mild", "moderate"),)))
    t = by_pair(finding_targets(rows(
        ("a", 2, 1, "difference", DIFFERENCE_QUESTION, diff_a),
        ("b", 3, 2, "difference", DIFFERENCE_QUESTION, diff_b),
        ("b", 3, 2, "abnormality", "what abnormalities are seen in this image?",
         "pleural effusion, edema, cardiomegaly"),
        ("b", 3, 2, "level", "what level is the pleural effusion?", "small"),
    )))
    b, a = t["b"], t["a"]
    assert b["main_presence"] == [int(i in (EFF, EDEMA, CARDIO)) for i in range(len(FINDINGS))]
    # the reference of b (study 2) has what study 3 has, less what was added
    assert b["ref_presence"][EDEMA] == 0 and b["ref_presence"][EFF] == 1 and b["ref_presence"][CARDIO] == 1
    assert b["ref_level"][CARDIO] == LEVELS.index("mild") and b["main_level"][CARDIO] == LEVELS.index("moderate")
    # study 2 is also a's main: the knowledge travels one more step back along the timeline
    assert a["main_presence"] == b["ref_presence"]
    assert a["ref_presence"][EFF] == 0 and a["ref_presence"][CARDIO] == 1
    # effusion's level is known where it was asked (study 3) and tied back to study 2 (unchanged)
    assert b["main_level"][EFF] == LEVELS.index("small") == a["main_level"][EFF]
    assert a["ref_level"][EFF] == -1  # absent there: no level
    assert b["change"][EDEMA] == 1 and b["change"][CARDIO] == 3 and b["change"][EFF] == 0
    assert a["change"][EFF] == 1 and sum(a["change"]) == 1


def test_unknown_and_conflicting_cells_stay_unknown():
    t = by_pair(finding_targets(rows(
        ("a", 2, 1, "presence", "is there edema?", "yes"),
        ("b", 2, 1, "presence", "is there evidence of edema in this image?", "no"),  # conflict
        ("a", 2, 1, "view", "which view is this image taken?", "PA view"),
    )))
    assert t["a"]["main_presence"][EDEMA] == -1  # two answers disagree: no label
    assert set(t["a"]["ref_presence"]) == {-1} and set(t["a"]["change"]) == {-1}  # no difference question


@pytest.fixture(scope="module")
def embedded_smoke(smoke_dataset):
    q = pl.read_csv(smoke_dataset / "medical-diff-vqa" / "mimic_pair_questions.csv", infer_schema=False)
    pairs = q.select(pl.concat_str(["study_id", pl.lit("__"), "ref_id"]).alias("pair_id"),
                     pl.col("study_id").cast(pl.Int64).alias("main_study_id"),
                     pl.col("ref_id").cast(pl.Int64).alias("ref_study_id"),
                     "question_type", "question", "answer")
    studies = pl.read_parquet(smoke_dataset / "ground_truth" / "studies.parquet")
    truth = {r["study_id"]: {f["name"]: f["level"] for f in r["findings"]} for r in studies.to_dicts()}
    return pairs, truth


def test_targets_agree_with_the_generator_truth(embedded_smoke):
    """The smoke dataset's questions against its ground_truth/ (nothing of which they read)."""
    pairs, truth = embedded_smoke
    t = finding_targets(pairs)
    study = pairs.select("pair_id", "main_study_id", "ref_study_id").unique()
    checked = 0
    for r in t.join(study, on="pair_id").to_dicts():
        for side in ("main", "ref"):
            findings = truth[r[f"{side}_study_id"]]
            for i, f in enumerate(FINDINGS):
                if r[f"{side}_presence"][i] >= 0:
                    assert r[f"{side}_presence"][i] == int(f in findings), (r["pair_id"], side, f)
                    checked += 1
                if r[f"{side}_level"][i] >= 0:
                    assert LEVELS[r[f"{side}_level"][i]] == findings[f]
    assert checked > 0 and coverage(t)["change"] > 0.9


def test_type_place_and_view_targets():
    from assets.diffvqa.vocabulary import LOCATION_WORDS, TYPES, VIEWS
    from assets.finding_states import location_mask

    bit = lambda *ws: sum(1 << LOCATION_WORDS.index(w) for w in ws)
    assert location_mask("left lower lung area") == bit("left", "lower", "lung")
    assert location_mask("left lower lung area and right lower lung area") == bit("left", "right", "lower", "lung")
    assert location_mask("mid to lower lung area") == bit("mid to lower", "lung")
    assert location_mask("right side") is None and location_mask("purple area") is None
    df = rows(
        ("a", 2, 1, "type", "what type is the edema?", "interstitial"),
        ("a", 2, 1, "location", "where is the edema?", "bilateral area"),
        ("a", 2, 1, "location", "is the pleural effusion located on the left side or right side?", "left side"),
    ).with_columns(pl.lit("AP").alias("main_view"), pl.lit("PA").alias("ref_view"))
    t = by_pair(finding_targets(df))["a"]
    assert t["main_type"][EDEMA] == TYPES.index("interstitial") and t["main_location"][EDEMA] == bit("bilateral")
    assert t["main_presence"][EFF] == 1 and t["main_location"][EFF] == -1  # a side is not a whole place
    assert t["ref_type"][EDEMA] == -1  # the reference was not asked
    assert (t["main_view"], t["ref_view"]) == (VIEWS.index("AP"), VIEWS.index("PA"))
    assert coverage(finding_targets(df))["main_view"] == 1.0


def test_a_studys_own_type_and_place_win_over_what_its_timeline_says():
    """Type and place travel along a timeline through an unchanged finding (the embedded
    generator keeps them), but a study's own answer wins, also over a conflicting neighbour."""
    from assets.diffvqa.vocabulary import LOCATION_WORDS, TYPES

    bit = lambda *ws: sum(1 << LOCATION_WORDS.index(w) for w in ws)
    diff = compose_answer(ChangeSet(added=("edema",)))  # effusion unchanged between 1 and 2, 2 and 3
    t = by_pair(finding_targets(rows(
        ("a", 2, 1, "difference", DIFFERENCE_QUESTION, diff),
        ("b", 3, 2, "difference", DIFFERENCE_QUESTION, "nothing has changed."),
        ("a", 2, 1, "location", "where is the pleural effusion?", "left lower lung area"),
        ("b", 3, 2, "location", "where is the pleural effusion?", "bilateral area"),
        ("b", 3, 2, "type", "what type is the pleural effusion?", "layering"),
        ("a", 2, 1, "abnormality", "what abnormalities are seen in this image?", "pleural effusion, edema"),
    )))
    assert t["a"]["main_location"][EFF] == bit("left", "lower", "lung")  # study 2's own answer
    assert t["b"]["main_location"][EFF] == bit("bilateral")              # study 3's own answer
    assert t["a"]["ref_location"][EFF] == -1                             # study 1: two neighbours disagree
    assert t["a"]["main_type"][EFF] == TYPES.index("layering") == t["a"]["ref_type"][EFF]  # travelled


def test_a_place_scoped_abnormality_answer_names_one_finding_and_clears_no_other():
    t = by_pair(finding_targets(rows(
        ("a", 2, 1, "abnormality", "what abnormalities are seen in the left lower lung area?", "edema"),
    )))["a"]
    assert t["main_presence"][EDEMA] == 1 and t["main_presence"][EFF] == -1
