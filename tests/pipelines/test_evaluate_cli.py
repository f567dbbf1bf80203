"""`spotdiff evaluate --predictions FILE`: one JSON object whose NLG numbers equal a direct
pycocoevalcap call on the same pairs, whose change metrics equal models.metrics, and clear
one-line errors for bad input. `python -m pytest tests/pipelines/test_evaluate_cli.py`"""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from assets.diffvqa.grammar import ChangeSet, LevelChange, compose_answer
from assets.diffvqa.vocabulary import AREA_QUESTION, DIFFERENCE_QUESTION
from models.metrics import change_scores
from pipelines.cli import app

REPO = Path(__file__).resolve().parents[2]
EFF, EDEMA, PTX = "pleural effusion", "edema", "pneumothorax"

ANSWERS = [
    compose_answer(ChangeSet()),
    compose_answer(ChangeSet(added=(EFF,))),
    compose_answer(ChangeSet(added=(EFF, EDEMA), missing=(PTX,))),
    compose_answer(ChangeSet(levels=(LevelChange(EFF, "small", "moderate"),))),
    compose_answer(ChangeSet(missing=(PTX, EDEMA))),
    compose_answer(ChangeSet(levels=(LevelChange(EDEMA, "mild", "moderate to severe"),))),
]
PREDICTIONS = [
    ANSWERS[0],                                        # exact
    compose_answer(ChangeSet(added=(EDEMA,))),         # wrong finding
    compose_answer(ChangeSet(added=(EFF, EDEMA))),     # the missing sentence dropped
    ANSWERS[3].strip(),                                # exact up to the trailing space
    "",                                                # empty
    "the heart is enlarged.",                          # off-grammar
]


@pytest.fixture
def params_env(monkeypatch):
    monkeypatch.setenv("SPOTDIFF_PARAMS", str(REPO / "params.yaml"))
    monkeypatch.delenv("SPOTDIFF_PROFILE", raising=False)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def direct_pycocoevalcap(answers, predictions) -> dict:
    """The coco-caption recipe, written out independently of models/metrics.py."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({str(i): [{"caption": a}] for i, a in enumerate(answers)})
    res = tok.tokenize({str(i): [{"caption": p}] for i, p in enumerate(predictions)})
    out = {}
    for scorer, names in ((Bleu(4), ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"]), (Meteor(), "METEOR"),
                          (Rouge(), "ROUGE-L"), (Cider(), "CIDEr")):
        score, _ = scorer.compute_score(gts, res)
        out.update(zip(names, score) if isinstance(names, list) else [(names, score)])
    return out


@pytest.mark.slow  # Java METEOR twice: kept out of the fast lane
def test_evaluate_equals_direct_pycocoevalcap(tmp_path, params_env):
    questions = [DIFFERENCE_QUESTION] * 5 + [AREA_QUESTION.format(words="left lung")]
    rows = [{"question": q, "answer": a, "prediction": p} for q, a, p in zip(questions, ANSWERS, PREDICTIONS)]
    preds = write_jsonl(tmp_path / "preds.jsonl", rows)
    result = CliRunner().invoke(app, ["evaluate", "--predictions", str(preds), "--bootstrap", "200",
                                      "--out", str(tmp_path / "metrics.json")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # exactly one JSON object on stdout
    assert report == json.loads((tmp_path / "metrics.json").read_text())
    expected = direct_pycocoevalcap(ANSWERS, PREDICTIONS)
    for key, value in expected.items():
        assert report[key] == pytest.approx(value, abs=1e-9), key
    assert 0 < report["BLEU-4"] < report["BLEU-1"] < 1
    for key, value in change_scores(PREDICTIONS, ANSWERS).items():
        assert report[key] == pytest.approx(value), key
    assert report["exact_match"] == pytest.approx(2 / 6)
    assert report["n"] == 6 and report["per_question_form"]["area"]["n"] == 1
    for key in ("change_f1", "ROUGE-L", "CIDEr"):
        lo, hi = report["ci95"][key]
        assert lo <= report[key] <= hi


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"answer": "nothing has changed."}'], "preds.jsonl:1: field 'prediction' missing"),
        (['{"answer": "a", "prediction": "b"}', "{not json"], "preds.jsonl:2: not valid JSON"),
        (["[1, 2]"], "preds.jsonl:1: expected a JSON object"),
        ([], "no predictions"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, params_env, lines, message):
    preds = write_jsonl(tmp_path / "preds.jsonl", lines)
    result = CliRunner().invoke(app, ["evaluate", "--predictions", str(preds)])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_missing_file(tmp_path, params_env):
    result = CliRunner().invoke(app, ["evaluate", "--predictions", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2 and "no such file" in result.output


def test_summary_prints_the_headline_and_writes_the_whole_report(tmp_path, params_env):
    questions = [DIFFERENCE_QUESTION] * 5 + [AREA_QUESTION.format(words="left lung")]
    rows = [{"question": q, "answer": a, "prediction": p} for q, a, p in zip(questions, ANSWERS, PREDICTIONS)]
    preds = write_jsonl(tmp_path / "preds.jsonl", rows)
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(app, ["evaluate", "--predictions", str(preds), "--bootstrap", "50",
                                      "--out", str(out), "--summary"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3 and f"change-F1 {report['change_f1']:.3f}" in lines[1]


def test_summary_adds_the_other_question_types_and_counts_only_difference_in_the_headline(tmp_path, params_env):
    rows = [{"question": DIFFERENCE_QUESTION, "answer": a, "prediction": p, "question_type": "difference"}
            for a, p in zip(ANSWERS[:5], PREDICTIONS[:5])]
    rows += [{"question": "is there edema?", "answer": "yes", "prediction": "yes", "question_type": "presence"},
             {"question": "is there edema?", "answer": "no", "prediction": "yes", "question_type": "presence"}]
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(app, ["evaluate", "--predictions", str(write_jsonl(tmp_path / "p.jsonl", rows)),
                                      "--bootstrap", "20", "--out", str(out), "--summary"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert "7 answers, 5 of them difference" in lines[0]
    assert lines[3] == "other types: presence accuracy 0.500"
    report = json.loads(out.read_text())
    assert report["n"] == 5 and report["per_type"]["presence"]["n"] == 2


@pytest.mark.slow  # Java METEOR: kept out of the fast lane
def test_the_pipeline_evaluation_reuses_trainings_report_only_for_the_same_file(tmp_path, monkeypatch):
    """Without --predictions: train.output_dir's predictions into evaluate.metrics_file. Training's
    test_report.json is the evaluation when it scored exactly this file with these settings
    (sha256 + bootstrap + seed); any other file or setting is scored afresh."""
    import yaml

    from models.metrics import SCORED_WITH, score_predictions, scored_with

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["output_dir"] = str(tmp_path / "model")
    raw["evaluate"].update({"metrics_file": str(tmp_path / "metrics.json"), "bootstrap": 20})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("SPOTDIFF_PARAMS", str(tmp_path / "params.yaml"))
    monkeypatch.delenv("SPOTDIFF_PROFILE", raising=False)
    (tmp_path / "model").mkdir()
    preds = write_jsonl(tmp_path / "model/test_predictions.jsonl",
                        [{"answer": a, "prediction": p} for a, p in zip(ANSWERS[:4], PREDICTIONS[:4])])
    scored = score_predictions(PREDICTIONS[:4], ANSWERS[:4], n_boot=20, seed=0, nlg=False)
    # what training writes (nlg off here only to keep it quick; the marker tells the two apart)
    report = {**scored, "reused_marker": 1, SCORED_WITH: scored_with(preds, 20, 0)}
    (tmp_path / "model/test_report.json").write_text(json.dumps(report))

    r = CliRunner().invoke(app, ["evaluate", "--summary"])
    assert r.exit_code == 0, r.output
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["reused_marker"] == 1 and SCORED_WITH not in written
    assert f"wrote {tmp_path / 'metrics.json'}: 4 answers" in r.output

    r = CliRunner().invoke(app, ["evaluate", "--bootstrap", "30"])  # another setting: scored again
    assert r.exit_code == 0, r.output
    assert "reused_marker" not in json.loads((tmp_path / "metrics.json").read_text())

    write_jsonl(preds, [{"answer": a, "prediction": a} for a in ANSWERS[:4]])  # another file
    r = CliRunner().invoke(app, ["evaluate"])
    again = json.loads((tmp_path / "metrics.json").read_text())
    assert "reused_marker" not in again and again["change_f1"] == 1.0
