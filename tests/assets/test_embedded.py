"""The raw-input step (assets/embedded.py) through its three entry points: rendered into
data.embedded_root when the roots point into it, observed (fingerprinted, nothing written but
observed.json) when they name a download; the Dagster asset's data version follows the tables.
`python -m pytest tests/assets/test_embedded.py -q`"""

import hashlib
import json
import shutil

import dagster as dg
import pytest
import yaml
from typer.testing import CliRunner

from assets.embedded import OBSERVED_FILE, data_version, materialize_embedded, renders_embedded
from assets.params import load_params, params_path
from pipelines.cli import app

runner = CliRunner()


def _params_file(tmp_path, monkeypatch, **data) -> dict:
    raw = yaml.safe_load(params_path().read_text())
    raw["data"].update({k: str(v) for k, v in data.items()})
    raw["profile"] = "smoke"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("SPOTDIFF_PARAMS", str(tmp_path / "params.yaml"))
    for k in ("SPOTDIFF_PROFILE", "SPOTDIFF_MIMIC_ROOT", "SPOTDIFF_DIFFVQA_ROOT"):
        monkeypatch.delenv(k, raising=False)
    return load_params()


@pytest.fixture
def download(smoke_dataset, tmp_path):
    """A user's 'download': a copy of the smoke dataset outside the embedded root."""
    root = tmp_path / "download"
    shutil.copytree(smoke_dataset / "medical-diff-vqa", root / "vqa")
    mimic = root / "mimic"
    mimic.mkdir()
    for f in (smoke_dataset / "mimic-cxr-jpg").glob("*.csv.gz"):
        shutil.copy(f, mimic / f.name)
    return root


def test_a_download_is_observed_not_overwritten(tmp_path, monkeypatch, download):
    embedded = tmp_path / "embedded"
    params = _params_file(tmp_path, monkeypatch, embedded_root=embedded, mimic_root=download / "mimic",
                          diffvqa_root=download / "vqa")
    assert not renders_embedded(params)
    before = {p: p.read_bytes() for p in download.rglob("*") if p.is_file()}
    report = materialize_embedded(params)
    assert report["mode"] == "observed"
    meta = download / "mimic" / "mimic-cxr-2.0.0-metadata.csv.gz"
    assert report["tables"]["mimic_root"][meta.name] == {
        "bytes": meta.stat().st_size, "sha256": hashlib.sha256(meta.read_bytes()).hexdigest()}
    assert set(report["tables"]["diffvqa_root"]) == {"mimic_pair_questions.csv", "mimic_all.csv"}
    assert sorted(p.name for p in embedded.iterdir()) == [OBSERVED_FILE]  # nothing rendered
    assert json.loads((embedded / OBSERVED_FILE).read_text()) == report
    assert before == {p: p.read_bytes() for p in download.rglob("*") if p.is_file()}

    # the CLI (and so the DVC stage) makes the same call
    r = runner.invoke(app, ["synth"])
    assert r.exit_code == 0, r.output
    assert "observed the download" in r.output and "5 tables" in r.output


def test_a_missing_table_of_a_download_is_one_line(tmp_path, monkeypatch, download):
    (download / "vqa" / "mimic_pair_questions.csv").unlink()
    _params_file(tmp_path, monkeypatch, embedded_root=tmp_path / "embedded", mimic_root=download / "mimic",
                 diffvqa_root=download / "vqa")
    r = runner.invoke(app, ["synth"])
    assert r.exit_code == 2
    assert "mimic_pair_questions.csv: not found" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_generator_options_need_an_out_folder(tmp_path, monkeypatch):
    _params_file(tmp_path, monkeypatch)
    r = runner.invoke(app, ["synth", "--subjects", "5"])
    assert r.exit_code == 2 and "need --out" in r.output


@pytest.mark.timeout(600)
def test_the_dagster_asset_renders_a_fresh_root_and_versions_by_its_tables(tmp_path, monkeypatch, download):
    from pipelines.defs.data import embedded_dataset
    from pipelines.resources import SpotdiffParams

    embedded = tmp_path / "embedded"
    params = _params_file(tmp_path, monkeypatch, embedded_root=embedded, mimic_root=embedded / "mimic-cxr-jpg",
                          diffvqa_root=embedded / "medical-diff-vqa")
    assert renders_embedded(params)
    instance = dg.DagsterInstance.ephemeral()
    res = dg.materialize([embedded_dataset], resources={"params": SpotdiffParams()}, instance=instance)
    assert res.success
    mat = res.asset_materializations_for_node("embedded_dataset")[0]
    assert mat.metadata["mode"].value == "rendered" and mat.metadata["subjects"].value == 12
    assert (embedded / "mimic-cxr-jpg" / "mimic-cxr-2.0.0-metadata.csv.gz").is_file()
    assert (embedded / "ground_truth" / "config.json").is_file()
    rendered_version = mat.tags["dagster/data_version"]
    assert rendered_version == data_version(materialize_embedded(params))  # byte-stable re-render

    # pointed at a download instead, the same asset only observes it; its version is the tables'
    monkeypatch.setenv("SPOTDIFF_MIMIC_ROOT", str(download / "mimic"))
    monkeypatch.setenv("SPOTDIFF_DIFFVQA_ROOT", str(download / "vqa"))
    res = dg.materialize([embedded_dataset], resources={"params": SpotdiffParams()}, instance=instance)
    mat = res.asset_materializations_for_node("embedded_dataset")[0]
    assert mat.metadata["mode"].value == "observed"
    assert mat.tags["dagster/data_version"] == rendered_version  # the download is a copy: same tables
    with (download / "vqa" / "mimic_all.csv").open("a") as f:
        f.write("\n")
    res = dg.materialize([embedded_dataset], resources={"params": SpotdiffParams()}, instance=instance)
    assert res.asset_materializations_for_node("embedded_dataset")[0].tags["dagster/data_version"] != rendered_version
