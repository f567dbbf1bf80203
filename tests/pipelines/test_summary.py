"""The main job's closing table: every pipeline command notes its wall time and outcome, and
`spotdiff summary` reports what ran, what DVC found up to date, the rows and the results.
`python -m pytest tests/pipelines/test_summary.py`"""

import json
import time

from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.journal import read_notes
from tests.fixtures.tiny_mimic import write_tiny

runner = CliRunner()


def test_stages_note_their_run_and_the_summary_reports_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOTDIFF_JOURNAL_DIR", str(tmp_path / "journal"))
    t = write_tiny(tmp_path / "raw", subjects=3)
    before = time.time()
    r = runner.invoke(app, ["ingest", "--mimic-root", str(t.mimic_root), "--diffvqa-root", str(t.diffvqa_root),
                            "--out", str(tmp_path / "prep"), "--profile", "smoke"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["residuals", "--prepared", str(tmp_path), "--group", "p42"])
    assert r.exit_code == 2
    notes = read_notes()
    assert notes["ingest"]["ok"] is True and notes["ingest"]["started"] >= before
    assert notes["residuals"]["ok"] is False
    assert "summary" not in notes and "pairs" not in notes  # only stages that ran, no summary note

    r = runner.invoke(app, ["summary", "--since", str(before)])
    assert r.exit_code == 0, r.output
    # the status column alone: a rows cell such as "0 quarantined" holds the letters "ran" too
    rows = {line.split("│")[1].strip(): line.split("│")[2] for line in r.output.splitlines() if line.count("│") > 4}
    assert "ran" in rows["ingest"] and "failed" in rows["residuals"]
    assert "ran" not in rows["pairs"] and "champion" in r.output

    # a later job in which DVC found ingest up to date: its old note no longer counts as run
    r = runner.invoke(app, ["summary", "--since", str(time.time() + 1)])
    rows = {line.split("│")[1].strip(): line.split("│")[2] for line in r.output.splitlines() if line.count("│") > 4}
    assert "up to date" in rows["ingest"]


def test_summary_reads_the_results_the_stages_left(tmp_path, monkeypatch):
    """The evaluate and promote rows quote the metrics file and champion.json, whatever ran."""
    monkeypatch.setenv("SPOTDIFF_JOURNAL_DIR", str(tmp_path / "journal"))
    params = tmp_path / "params.yaml"
    text = open("params.yaml").read()
    params.write_text(text.replace("metrics_file: metrics.json", "metrics_file: out/metrics.json")
                      .replace("output_dir: runs/registry", "output_dir: out/registry"))
    monkeypatch.setenv("SPOTDIFF_PARAMS", str(params))
    (tmp_path / "out/registry").mkdir(parents=True)
    (tmp_path / "out/metrics.json").write_text(json.dumps(
        {"n": 327, "change_f1": 0.5461, "ci95": {"change_f1": [0.503, 0.585]}, "prediction_parse_rate": 1.0}))
    (tmp_path / "out/registry/champion.json").write_text(json.dumps(
        {"name": "spotdiff-real", "champion": "3", "promoted": False, "reason": "candidate not better"}))
    r = runner.invoke(app, ["summary"])
    assert r.exit_code == 0, r.output
    assert "change-F1 0.546 [0.503, 0.585]" in r.output and "327 test answers" in r.output
    assert "kept: candidate not better" in r.output and "version 3" in r.output


def test_malformed_notes_and_reports_are_rows_not_tracebacks(tmp_path, monkeypatch):
    journal = tmp_path / "journal"
    journal.mkdir()
    monkeypatch.setenv("SPOTDIFF_JOURNAL_DIR", str(journal))
    (journal / "ingest.json").write_text("{not json")
    (journal / "pairs.json").write_text(json.dumps({"started": "yesterday", "wall_s": 1, "ok": True}))
    (journal / "residuals.json").write_bytes(b"\x00" * 10_000)  # past the note bound
    params = tmp_path / "params.yaml"
    params.write_text(open("params.yaml").read().replace("metrics_file: metrics.json", "metrics_file: out/metrics.json"))
    monkeypatch.setenv("SPOTDIFF_PARAMS", str(params))
    (tmp_path / "out").mkdir()
    (tmp_path / "out/metrics.json").write_text(json.dumps({"change_f1": "high", "n": 3}))
    r = runner.invoke(app, ["summary"])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    rows = {line.split("│")[1].strip(): line for line in r.output.splitlines() if line.count("│") > 4}
    assert "unexpected shape" in rows["evaluate"]
    assert all("ran" not in rows[s] for s in ("ingest", "pairs", "residuals"))
