"""`spotdiff ingest | pairs | residuals` in-process through typer: the files of the output
contract, and a user mistake as one line with exit code 2. `python -m pytest tests/pipelines/test_data_cli.py`"""

import polars as pl
from typer.testing import CliRunner

from pipelines.cli import app
from tests.fixtures.tiny_mimic import write_tiny

runner = CliRunner()


def test_pairs_then_residuals(tmp_path):
    t = write_tiny(tmp_path / "raw", subjects=3)
    out = tmp_path / "prep"
    r = runner.invoke(app, ["pairs", "--mimic-root", str(t.mimic_root), "--diffvqa-root", str(t.diffvqa_root),
                            "--out", str(out), "--profile", "smoke"])
    assert r.exit_code == 0, r.output
    for f in ("images.parquet", "questions.parquet", "pairs.parquet", "quarantine.parquet",
              "finding_targets.parquet"):
        assert (out / f).exists(), f
    pairs = pl.read_parquet(out / "pairs.parquet")
    assert pairs.height == len(t.questions)  # pairs.question_types: [all]
    # one row of finding targets per pair
    assert pl.read_parquet(out / "finding_targets.parquet").height == pairs["pair_id"].n_unique()
    r = runner.invoke(app, ["residuals", "--prepared", str(out), "--out", str(tmp_path / "res"), "--group", "p10",
                            "--profile", "smoke"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "res/group=p10/manifest.json").exists() and not (tmp_path / "res/group=p11").exists()


def test_user_mistakes_are_one_line_exit_2(tmp_path):
    r = runner.invoke(app, ["ingest", "--mimic-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "nowhere" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["residuals", "--prepared", str(tmp_path), "--group", "p42"])
    assert r.exit_code == 2 and "p42" in r.output
    r = runner.invoke(app, ["pairs", "--from-ingest", "--out", str(tmp_path / "empty")])
    assert r.exit_code == 2 and "spotdiff ingest" in r.output
