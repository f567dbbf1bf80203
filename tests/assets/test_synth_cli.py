"""`spotdiff synth` as a user runs it: options over params.yaml, one clear line on bad input."""

import polars as pl
from typer.testing import CliRunner

from pipelines.cli import app


def test_cli_writes_a_dataset_with_the_options_given(tmp_path):
    out = tmp_path / "ds"
    res = CliRunner().invoke(app, ["synth", "--out", str(out), "--profile", "smoke", "--subjects", "3",
                                   "--image-size", "64", "--workers", "1"])
    assert res.exit_code == 0, res.output
    meta = pl.read_csv(out / "mimic-cxr-jpg" / "mimic-cxr-2.0.0-metadata.csv.gz")
    assert meta["subject_id"].n_unique() == 3 and set(meta["Rows"]) == {64}
    assert (out / "contact_sheet.png").stat().st_size > 0
    assert "wrote 3 subjects" in res.output


def test_cli_rejects_bad_options_with_one_line(tmp_path):
    res = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "x"), "--profile", "smoke", "--subjects", "1"])
    assert res.exit_code == 2
    assert "subjects=1" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "x"), "--profile", "nope"])
    assert res.exit_code == 2 and "nope" in res.output
