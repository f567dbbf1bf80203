"""Change-level metrics: the parser on every answer form, change P/R/F1 against counts derived
from the sets, exact match, nothing-changed accuracy, bootstrap intervals, per-template
breakdown. (NLG metrics vs pycocoevalcap: tests/pipelines/test_evaluate_cli.py.)
`python -m pytest tests/models/test_metrics.py`"""

import random

import numpy as np
import pytest

from assets.diffvqa.grammar import ChangeSet, LevelChange, compose_answer
from assets.diffvqa.vocabulary import FINDINGS, LEVELS, NOTHING_CHANGED
from models.metrics import (
    _per_question, _stats_from_sums, bootstrap_ci, change_counts, change_scores, normalize_answer,
    parse_prediction, score_predictions, template_of,
)

EFF, EDEMA, PTX, CARDIO = "pleural effusion", "edema", "pneumothorax", "cardiomegaly"

EVERY_FORM = {
    "nothing": ChangeSet(),
    "added one": ChangeSet(added=(EFF,)),
    "added two": ChangeSet(added=(EFF, EDEMA)),
    "added three": ChangeSet(added=(EFF, EDEMA, CARDIO)),
    "missing one": ChangeSet(missing=(PTX,)),
    "missing two": ChangeSet(missing=(PTX, EDEMA)),
    "level": ChangeSet(levels=(LevelChange(EFF, "small", "moderate"),)),
    "level, multi-word": ChangeSet(levels=(LevelChange(EDEMA, "moderate to large", "mild"),)),
    "two levels": ChangeSet(levels=(LevelChange(EFF, "small", "moderate"), LevelChange(EDEMA, "mild", "severe"))),
    "all three kinds": ChangeSet(added=(CARDIO, EDEMA), missing=(PTX,),
                                 levels=(LevelChange(EFF, "mild to moderate", "minimal"),)),
}


@pytest.mark.parametrize("name", EVERY_FORM)
def test_parser_on_every_answer_form(name):
    changes = EVERY_FORM[name]
    answer = compose_answer(changes)
    assert parse_prediction(answer).items() == changes.items()
    # a decoder that stops after the final '.' (or adds spaces) said the same thing
    assert parse_prediction(answer.strip() + "  ").items() == changes.items()
    expected_template = "nothing" if changes.is_empty else "+".join(
        k for k, v in (("level", changes.levels), ("added", changes.added), ("missing", changes.missing)) if v)
    assert template_of(parse_prediction(answer)) == expected_template


def test_prediction_with_an_invented_finding_keeps_its_other_atoms():
    pred = "the main image has additional findings of edema, and nodule than the reference image. "
    assert parse_prediction(pred).items() == {("added", EDEMA), ("added", "nodule")}
    assert parse_prediction("the lungs are clear.") is None
    assert normalize_answer(" nothing  has changed. ") == NOTHING_CHANGED


def _random_changes(rng: random.Random) -> ChangeSet:
    if rng.random() < 0.3:
        return ChangeSet()
    f = rng.sample(FINDINGS, 6)
    levels = tuple(LevelChange(x, *rng.sample(LEVELS, 2)) for x in f[:rng.randint(0, 2)])
    return ChangeSet(added=tuple(f[2:2 + rng.randint(0, 2)]), missing=tuple(f[4:4 + rng.randint(0, 2)]),
                     levels=levels)


def _corpus(n=120, seed=0):
    """Gold change sets and predictions: exact, perturbed (an atom dropped or swapped), off-grammar."""
    rng = random.Random(seed)
    golds = [_random_changes(rng) for _ in range(n)]
    preds = []
    for g in golds:
        r = rng.random()
        if r < 0.4:
            preds.append(compose_answer(g))
        elif r < 0.8:
            preds.append(compose_answer(_random_changes(rng)) if g.is_empty else
                         compose_answer(ChangeSet(added=g.added[:1] + ("edema",), missing=g.missing,
                                                  levels=g.levels[1:])))
        else:
            preds.append("the image looks different." if r < 0.9 else "")
    return golds, preds


def test_change_f1_matches_counts_derived_from_the_sets():
    golds, preds = _corpus()
    tp = fp = fn = 0
    for g, p in zip(golds, preds):
        got = parse_prediction(p)
        P = got.items() if got is not None else frozenset()  # off-grammar: an empty change set
        G = g.items()
        tp, fp, fn = tp + len(G & P), fp + len(P - G), fn + len(G - P)
    assert tp > 0 and fp > 0 and fn > 0  # the corpus exercises all three
    scores = change_scores(preds, [compose_answer(g) for g in golds])
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert scores["change_precision"] == pytest.approx(precision)
    assert scores["change_recall"] == pytest.approx(recall)
    assert scores["change_f1"] == pytest.approx(2 * precision * recall / (precision + recall))


def test_small_hand_case():
    gold = [ChangeSet(added=(EFF, EDEMA)), ChangeSet(missing=(PTX,)), ChangeSet()]
    pred = [ChangeSet(added=(EDEMA, EFF)),  # same atoms, other order: all right
            ChangeSet(missing=(PTX,), added=(CARDIO,)),  # one right, one extra
            ChangeSet(levels=(LevelChange(EFF, "small", "moderate"),))]  # one extra
    G = [g.items() for g in gold]
    P = [p.items() for p in pred]
    tp, fp, fn = (sum(len(x) for x in sets) for sets in (
        [g & p for g, p in zip(G, P)], [p - g for g, p in zip(G, P)], [g - p for g, p in zip(G, P)]))
    s = change_scores([compose_answer(p) for p in pred], [compose_answer(g) for g in gold])
    assert s["change_precision"] == pytest.approx(tp / (tp + fp))
    assert s["change_recall"] == pytest.approx(tp / (tp + fn))
    # order differs in the first answer, so the strings differ: exact match is 0 of 3
    assert s["exact_match"] == 0.0
    # "nothing changed" decision: pair 3 says something changed where nothing did
    decisions = [(g.is_empty, p.is_empty) for g, p in zip(gold, pred)]
    assert s["nothing_changed_accuracy"] == pytest.approx(sum(a == b for a, b in decisions) / 3)
    assert s["nothing_changed_recall"] == 0.0


def test_off_grammar_reference_is_left_out_of_change_counts_only():
    c = change_counts(["yes", compose_answer(ChangeSet(added=(EFF,)))],
                      ["yes", compose_answer(ChangeSet(added=(EFF,)))])
    assert list(c["gold_ok"]) == [0, 1] and list(c["exact"]) == [1, 1]
    assert (c["tp"].sum(), c["fp"].sum(), c["fn"].sum()) == (1, 0, 0)


def test_bootstrap_intervals_contain_the_point_estimate_and_are_seeded():
    golds, preds = _corpus(n=150, seed=1)
    cols = _per_question(change_counts(preds, [compose_answer(g) for g in golds]))
    point = _stats_from_sums({k: v.sum() for k, v in cols.items()})
    ci = bootstrap_ci(cols, _stats_from_sums, n_boot=300, seed=3)
    for k, (lo, hi) in ci.items():
        assert lo <= float(point[k]) <= hi, k
    assert ci["change_f1"][1] - ci["change_f1"][0] > 0  # a real interval, not a point
    assert bootstrap_ci(cols, _stats_from_sums, n_boot=300, seed=3) == ci
    # more data, narrower interval
    golds4, preds4 = golds * 4, preds * 4
    cols4 = _per_question(change_counts(preds4, [compose_answer(g) for g in golds4]))
    lo4, hi4 = bootstrap_ci(cols4, _stats_from_sums, n_boot=300, seed=3)["change_f1"]
    assert hi4 - lo4 < ci["change_f1"][1] - ci["change_f1"][0]


def test_per_template_breakdown_partitions_the_questions():
    golds, preds = _corpus(n=80, seed=2)
    answers = [compose_answer(g) for g in golds]
    report = score_predictions(preds, answers, n_boot=50, nlg=False)
    per = report["per_template"]
    assert sum(t["n"] for t in per.values()) == len(answers)
    for name, t in per.items():
        idx = [i for i, g in enumerate(golds) if template_of(g) == name]
        assert t["n"] == len(idx)
        sub = change_scores([preds[i] for i in idx], [answers[i] for i in idx])
        assert t["change_f1"] == pytest.approx(sub["change_f1"])
    for k in ("change_f1", "exact_match", "nothing_changed_accuracy"):
        lo, hi = report["ci95"][k]
        assert lo <= report[k] <= hi
    assert np.isclose(report["change_f1"], change_scores(preds, answers)["change_f1"])


def test_recall_per_change_kind():
    from models.metrics import change_scores

    added = "the main image has an additional finding of edema than the reference image. "
    missing = "the main image is missing the finding of edema than the reference image. "
    s = change_scores([added, added, "nothing has changed."], [added, missing, missing])
    assert s["change_recall_added"] == 1.0 and s["change_recall_missing"] == 0.0
    assert s["change_recall_level"] == 0.0  # no level change in the gold: 0/0 := 0


def test_per_type_scores_use_the_measure_of_each_type():
    from models.metrics import answer_items, per_type_scores

    preds = ["yes", "no", "PA view", "pleural effusion, edema", "left lower lung area", "mild",
             "nothing has changed.",
             "the main image has an additional finding of edema than the reference image. "]
    golds = ["yes", "yes", "PA view", "pleural effusion", "left lung area", "severe",
             "nothing has changed.",
             "the main image has an additional finding of edema than the reference image. "]
    types = ["presence", "presence", "view", "abnormality", "location", "level", "difference", "difference"]
    s = per_type_scores(preds, golds, types)
    assert s["presence"] == {"n": 2, "accuracy": 0.5, "parse_rate": 1.0} and s["view"]["accuracy"] == 1.0
    # one of two named findings right: precision 1/2, recall 1/1
    assert s["abnormality"]["item_precision"] == 0.5 and s["abnormality"]["item_recall"] == 1.0
    assert answer_items("left lower lung area", "location") == {"left", "lower", "lung"}
    assert abs(s["location"]["item_f1"] - 0.8) < 1e-9  # {left, lung} of 3 predicted, 2 gold
    assert s["level"]["item_f1"] == 0.0
    assert s["difference"]["n"] == 2 and s["difference"]["change_f1"] == 1.0
    assert answer_items("edema, pleural effusion, and atelectasis", "abnormality") == {
        "edema", "pleural effusion", "atelectasis"}


def test_score_predictions_reports_per_type_when_told_the_types():
    from models.metrics import score_predictions

    a = "the main image has an additional finding of edema than the reference image. "
    r = score_predictions([a, "no"], [a, "yes"], n_boot=0, nlg=False, question_types=["difference", "presence"])
    assert set(r["per_type"]) == {"difference", "presence"} and r["per_type"]["presence"]["accuracy"] == 0.0
    assert "per_type" not in score_predictions([a], [a], n_boot=0, nlg=False)


def test_parse_rates_judge_each_answer_in_its_own_language():
    """A right single-image answer ("yes") is no difference answer: the overall parse rate counts
    the difference questions only, and each type has its own rate in per_type."""
    from models.metrics import per_type_scores, score_predictions

    diff = "the main image has an additional finding of pleural effusion than the reference image. "
    preds = [diff, "yes", "left lung area", "garbled words"]
    golds = [diff, "yes", "left lung area", diff]
    types = ["difference", "presence", "location", "difference"]
    report = score_predictions(preds, golds, nlg=False, n_boot=10, question_types=types)
    assert report["prediction_parse_rate"] == 0.5  # 1 of the 2 difference questions
    per = report["per_type"]
    assert per["presence"]["parse_rate"] == 1.0 and per["location"]["parse_rate"] == 1.0
    assert per["difference"]["parse_rate"] == 0.5


def test_headline_scores_the_difference_questions_alone_when_types_mix():
    """Test scoring covers every type; the headline (change-F1, NLG, exact match) stays the
    difference questions', comparable with a difference-only run, and each type's headline
    metric has its interval."""
    from models.metrics import score_predictions

    add = "the main image has an additional finding of edema than the reference image. "
    miss = "the main image is missing the finding of edema than the reference image. "
    preds = [add, "yes", add, "no", "edema", "mild"]
    golds = [add, "yes", miss, "yes", "edema, pleural effusion", "mild"]
    types = ["difference", "presence", "difference", "presence", "abnormality", "level"]
    mixed = score_predictions(preds, golds, n_boot=50, nlg=False, question_types=types)
    alone = score_predictions([add, add], [add, miss], n_boot=50, nlg=False)
    assert mixed["n"] == 2 and mixed["n_all_types"] == 6
    assert mixed["change_f1"] == alone["change_f1"] == 0.5 and mixed["exact_match"] == 0.5
    per = mixed["per_type"]
    assert per["presence"]["accuracy"] == 0.5 and abs(per["abnormality"]["item_f1"] - 2 / 3) < 1e-9
    for row in per.values():
        lo, hi = row["ci95"]
        assert 0.0 <= lo <= hi <= 1.0
    assert per["level"]["ci95"] == [1.0, 1.0]


def test_a_question_type_of_a_users_own_is_scored_without_an_interval():
    from models.metrics import per_type_scores

    row = per_type_scores(["a", "b"], ["a", "c"], ["closed", "closed"], n_boot=20)["closed"]
    assert row["n"] == 2 and "ci95" not in row
