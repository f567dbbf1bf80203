"""Bad predictions files for `spotdiff evaluate`: each is one line naming the file, the line and
the field with the reason, exit code 2, no traceback, refused while reading (before any scorer
or JVM starts), so nothing hangs. And the METEOR wrapper never waits forever on its JVM.
`python -m pytest tests/reliability/test_bad_predictions.py`"""

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from models.lifecycle.evaluate import MAX_LINE_BYTES

REPO = Path(__file__).resolve().parents[2]
ANSWER = "the main image has an additional finding of edema than the reference image. "
GOOD = json.dumps({"answer": ANSWER, "prediction": ANSWER})


@pytest.fixture
def params_env(monkeypatch):
    monkeypatch.setenv("SPOTDIFF_PARAMS", str(REPO / "params.yaml"))
    monkeypatch.delenv("SPOTDIFF_PROFILE", raising=False)


def _fail_if_scored(monkeypatch):
    """Refusal must come from reading the file: the scorers (Java) are never reached."""
    import models.metrics

    def boom(*a, **k):
        raise AssertionError("scored a file that should have been refused")
    monkeypatch.setattr(models.metrics, "score_predictions", boom)


CASES = {
    # name: (file bytes, the message, after file:line)
    "non_utf8": (GOOD.encode() + b'\n{"answer": "a", "prediction": "wh\xe4t"}\n',
                 "preds.jsonl:2: not UTF-8 (byte 0xe4 at column 34)"),
    "question_int": (json.dumps({"question": 5, "answer": ANSWER, "prediction": ANSWER}).encode() + b"\n",
                     "preds.jsonl:1: field 'question' is int, not a string"),
    "prediction_null": (json.dumps({"answer": ANSWER, "prediction": None}).encode() + b"\n",
                        "preds.jsonl:1: field 'prediction' is null, not a string"),
    "all_empty": (b'{"answer": "", "prediction": ""}\n' * 3,
                  "preds.jsonl:1: field 'answer' has no word"),
    "punctuation_answer": (GOOD.encode() + b'\n{"answer": " . ", "prediction": ""}\n',
                           "preds.jsonl:2: field 'answer' has no word"),
    # 1 MB of a sentence on one line: METEOR's JVM dies on it and pycocoevalcap then hangs
    "megabyte_line": ((GOOD + "\n" + json.dumps({"answer": ANSWER, "prediction": ANSWER * 13000})).encode() + b"\n",
                      f"preds.jsonl:2: line longer than {MAX_LINE_BYTES} bytes"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(CASES))
def test_bad_predictions_file_is_one_clear_line(tmp_path, params_env, monkeypatch, name):
    data, message = CASES[name]
    preds = tmp_path / "preds.jsonl"
    preds.write_bytes(data)
    _fail_if_scored(monkeypatch)
    result = CliRunner().invoke(app, ["evaluate", "--predictions", str(preds)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert str(preds) in "".join(result.output.split())
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_predictions_path_that_is_not_a_file(tmp_path, params_env, monkeypatch, kind):
    """A FIFO would block the reader forever waiting for a writer: refused from its kind."""
    preds = tmp_path / "preds.jsonl"
    preds.mkdir() if kind == "directory" else os.mkfifo(preds)
    _fail_if_scored(monkeypatch)
    result = CliRunner().invoke(app, ["evaluate", "--predictions", str(preds)])
    assert result.exit_code == 2 and "not a regular file" in result.output, result.output


def test_line_bound_is_far_above_a_real_record():
    # the longest Diff-VQA answer is ~360 bytes; a record carries answer + prediction + question
    assert MAX_LINE_BYTES >= 10 * 3 * 400


class _StalledMeteor:
    """pycocoevalcap's Meteor around a process that never answers (a stalled JVM), built
    without starting Java: the wrapper's wait must end by its timeout, and its cleanup must not
    deadlock on the lock compute_score leaves held."""

    def __new__(cls):
        from pycocoevalcap.meteor.meteor import Meteor

        m = Meteor.__new__(Meteor)
        m.meteor_p = subprocess.Popen(["sleep", "60"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
        m.lock = threading.Lock()
        return m


@pytest.mark.timeout(60)
def test_meteor_that_stalls_is_killed_and_its_cleanup_does_not_hang():
    from models.metrics import _meteor

    m = _StalledMeteor()
    t = time.monotonic()
    with pytest.raises(RuntimeError, match="METEOR scorer failed"):
        _meteor(m, {0: ["a b"]}, {0: ["a b"]}, timeout_s=1.0)
    assert time.monotonic() - t < 30
    assert not m.lock.locked() and m.meteor_p.poll() is not None
    m.__del__()  # what garbage collection runs: returns instead of waiting on the lock


@pytest.mark.timeout(60)
def test_meteor_whose_process_died_fails_at_once():
    from models.metrics import _meteor

    m = _StalledMeteor()
    m.meteor_p.kill()
    m.meteor_p.wait()
    with pytest.raises(RuntimeError, match="METEOR scorer failed"):
        _meteor(m, {0: ["a b"]}, {0: ["a b"]}, timeout_s=30.0)
    assert not m.lock.locked()
    m.__del__()


def test_scoring_with_no_reference_word_names_the_reason(monkeypatch):
    """Below the CLI (training's own test scoring): a clear ValueError, not CIDEr's max()."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from models.metrics import nlg_scores

    monkeypatch.setattr(PTBTokenizer, "tokenize",  # the Java tokenizer's result, without Java
                        lambda self, caps: {k: [v[0]["caption"].strip(" .")] for k, v in caps.items()})
    with pytest.raises(ValueError, match="no reference answer has a word"):
        nlg_scores(["", "."], ["", " . "])


def test_a_question_type_the_project_does_not_know_is_scored_not_refused(tmp_path, params_env):
    """A user's own question type in the predictions: scored by its kind of answer in per_type,
    without an interval (no headline metric is defined for it), and never a KeyError."""
    rows = [{"answer": ANSWER, "prediction": ANSWER, "question_type": "difference"},
            {"answer": "yes", "prediction": "no", "question_type": "closed"}]
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "m.json"
    r = CliRunner().invoke(app, ["evaluate", "--predictions", str(preds), "--bootstrap", "20", "--out", str(out)])
    assert r.exit_code == 0, r.output
    per = json.loads(out.read_text())["per_type"]
    assert per["closed"]["n"] == 1 and "ci95" not in per["closed"] and "ci95" in per["difference"]
