"""`spotdiff ablate --report-only` rebuilds docs/results.md from a real MLflow store: runs tagged
with the group (logged here directly; the training behind them is tested in tests/models), the
question-prior row from a real pairs.parquet, the bar chart.
`python -m pytest tests/pipelines/test_ablate_cli.py -q`"""

import polars as pl
import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from assets.params import params_path

GENERAL = "what has changed compared to the reference image?"
AREA = "what has changed in the left lung area?"
EFFUSION = "the main image has an additional finding of pleural effusion than the reference image. "


def _params(tmp_path, monkeypatch) -> str:
    params = yaml.safe_load(params_path().read_text())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params["tracking"]["uri"] = uri
    params["data"]["prepared_root"] = str(tmp_path / "prepared")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("SPOTDIFF_PARAMS", str(tmp_path / "params.yaml"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return uri


def _pairs(tmp_path):
    rows = ([("train", GENERAL, "nothing has changed.")] * 3 + [("train", GENERAL, EFFUSION)]
            + [("test", GENERAL, EFFUSION), ("test", GENERAL, "nothing has changed.")])
    (tmp_path / "prepared").mkdir()
    pl.DataFrame({"question_type": ["difference"] * len(rows), "split": [r[0] for r in rows],
                  "question": [r[1] for r in rows], "answer": [r[2] for r in rows]}
                 ).write_parquet(tmp_path / "prepared/pairs.parquet")


def test_report_only_rebuilds_the_page_from_mlflow(tmp_path, monkeypatch):
    from models.tracking import client_for

    uri = _params(tmp_path, monkeypatch)
    _pairs(tmp_path)
    client = client_for(uri)
    exp = client.create_experiment("spotdiff-real")
    for variant, f1 in (("baseline", 0.11), ("+residual", 0.25), ("+residual", 0.27)):
        run = client.create_run(exp, tags={"ablation": "g1", "variant": variant, "seed": str(int(f1 * 100))},
                                run_name=f"ablate-g1-{variant}")
        for k, v in {"test_change_f1": f1, "test_CIDEr": 2.0, "val_change_f1": f1}.items():
            client.log_metric(run.info.run_id, k, v)
        client.set_terminated(run.info.run_id, "FINISHED")
    other = client.create_run(exp, tags={"ablation": "g2", "variant": "baseline", "seed": "0"})
    client.set_terminated(other.info.run_id, "FINISHED")

    out = tmp_path / "results.md"
    res = CliRunner().invoke(app, ["ablate", "--report-only", "--group", "g1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    page = out.read_text()
    assert "| baseline | 1 | 0.110 ± 0.000 |" in page
    assert "| +residual | 2 | 0.260 ± 0.014 |" in page
    assert "+residual: Δ change-F1 = +0.150 vs baseline (met)" in page
    assert other.info.run_id not in page  # another group's run is not in this table
    # question prior: "nothing has changed." for the general question -> 1 of 2 test rows exact
    prior = next(line for line in page.splitlines() if line.startswith("| *question prior*"))
    assert "| 0.500 |" in prior
    assert (tmp_path / "figures/ablation-g1.png").stat().st_size > 0


def test_report_only_with_no_runs_is_a_clear_error(tmp_path, monkeypatch):
    _params(tmp_path, monkeypatch)
    res = CliRunner().invoke(app, ["ablate", "--report-only", "--group", "nope", "--out", str(tmp_path / "r.md")])
    assert res.exit_code != 0
    assert "no finished MLflow runs tagged ablation='nope'" in res.output
