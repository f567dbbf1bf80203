"""The Dagster data assets for real: definitions load, `dagster.materialize` of every data asset
with its checks (tiny fixture and the synth smoke dataset), the planted-defect copy, a blocking
check stopping downstream, and the `dagster asset materialize` command line.
`python -m pytest tests/pipelines/test_data_defs.py`"""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from assets.residuals import GROUPS
from assets.shards import iter_pairs
from pipelines.defs import data as D
from pipelines.resources import GreatExpectationsResource, SpotdiffParams
from tests.fixtures.defects import plant
from tests.fixtures.tiny_mimic import write_tiny

REPO = Path(__file__).resolve().parents[2]
ASSETS = [D.mimic_images, D.diffvqa_questions, D.study_pairs, D.quarantine, D.residual_images]
CHECKS = [D.mimic_images_valid, D.diffvqa_questions_valid, D.study_pairs_valid, D.study_pairs_controls_valid,
          D.study_pairs_subject_disjoint, D.quarantine_accounts]


def resources(mimic, diffvqa, out: Path, **kw):
    return {"params": SpotdiffParams(profile="smoke", mimic_root=str(mimic), diffvqa_root=str(diffvqa),
                                     prepared_root=str(out / "prepared"), residuals_root=str(out / "residuals"), **kw),
            "gx": GreatExpectationsResource()}


def materialize_all(res, groups):
    """Every data asset and check in one run over the range of groups, as a backfill of
    residual_images (single-run policy) launches it; then one group alone, as a user
    materializing one partition does (up to date: its shards are kept)."""
    rng = {"dagster/asset_partition_range_start": groups[0], "dagster/asset_partition_range_end": groups[-1]}
    first = dg.materialize(ASSETS + CHECKS, resources=res, tags=rng, raise_on_error=False)
    rest = [dg.materialize([D.residual_images], resources=res, partition_key=groups[-1], raise_on_error=False)]
    return first, rest


def checks_of(result):
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def materializations(result):
    return {m.asset_key.to_user_string(): m.materialization.metadata for m in result.get_asset_materialization_events()}


def test_definitions_list_every_data_asset_check_and_the_job():
    keys = {k.to_user_string() for k in D.defs.resolve_all_asset_keys()}
    assert keys == {"embedded_dataset", "mimic_images", "diffvqa_questions", "study_pairs", "quarantine",
                    "residual_images"}
    job = D.defs.resolve_job_def("data")
    assert job.name == "data"
    graph = D.defs.resolve_asset_graph()
    checks = {k.name for k in graph.asset_check_keys}
    assert checks == {c.check_key.name for c in CHECKS} | {"residuals_finite_in_range"}
    assert graph.get(dg.AssetKey("residual_images")).partitions_def.get_partition_keys() == list(GROUPS)
    from pipelines.definitions import defs as location  # one process per run, not one per step
    assert location.resolve_job_def("data").executor_def.name == "in_process"
    assert location.resolve_implicit_global_asset_job_def().executor_def.name == "in_process"


def _assert_clean_run(first, rest, out: Path):
    assert first.success and all(r.success for r in rest)
    checks = checks_of(first)
    assert all(checks.values()), checks
    assert all(all(checks_of(r).values()) for r in rest)
    meta = materializations(first)
    for asset in ("mimic_images", "diffvqa_questions", "study_pairs"):
        m = meta[asset]
        assert m["rows_in"].value == m["rows_out"].value + m["rows_quarantined"].value
        assert m["dagster/row_count"].value == m["rows_out"].value
    manifest = json.loads((out / "residuals/manifest.json").read_text())
    pairs = pl.read_parquet(out / "prepared/pairs.parquet")
    assert sum(s["rows"] for s in manifest["shards"]) == pairs["pair_id"].n_unique()
    assert {r.pair_id for r in iter_pairs(out / "residuals")} == set(pairs["pair_id"])
    assert "data:image/png;base64," in meta["residual_images"]["preview"].value
    # the range computed every group that has pairs; the group alone again had nothing to do
    assert set(meta["residual_images"]["recomputed"].value) == set(pairs["group"])
    again = materializations(rest[0])["residual_images"]
    assert again["recomputed"].value == [] and again["rows_out"].value == again["rows_in"].value - again["rows_quarantined"].value


@pytest.mark.slow
def test_materialize_all_on_tiny(tmp_path):
    t = write_tiny(tmp_path / "raw")
    groups = sorted({f"p{str(r['subject_id'])[:2]}" for r in t.images})
    first, rest = materialize_all(resources(t.mimic_root, t.diffvqa_root, tmp_path), groups)
    _assert_clean_run(first, rest, tmp_path)


@pytest.mark.slow
def test_materialize_all_on_smoke_dataset(smoke_dataset, tmp_path):
    res = resources(smoke_dataset / "mimic-cxr-jpg", smoke_dataset / "medical-diff-vqa", tmp_path)
    first, rest = materialize_all(res, list(GROUPS))
    _assert_clean_run(first, rest, tmp_path)
    assert materializations(first)["study_pairs"]["rows_out"].value > 0


@pytest.mark.slow
def test_planted_defects_are_quarantined_and_counted(tmp_path):
    t = write_tiny(tmp_path / "raw")
    expected, group = plant(t)
    res = resources(t.mimic_root, t.diffvqa_root, tmp_path)
    result = dg.materialize(ASSETS + CHECKS, resources=res, partition_key=group, raise_on_error=False)
    assert result.success and all(checks_of(result).values()), checks_of(result)
    q = pl.read_parquet(tmp_path / "prepared/quarantine.parquet")
    meta = materializations(result)
    for e in expected:
        if e.asset == "residual_images":
            assert meta["residual_images"]["quarantine_reasons"].value == {"corrupt_image": 1}
        else:
            hit = q.filter((pl.col("asset") == e.asset) & (pl.col("reason") == e.reason) & (pl.col("row") == e.row))
            assert hit.height == 1 and hit["source"][0].endswith(e.source), e
    for asset in ("mimic_images", "diffvqa_questions", "study_pairs"):
        m = meta[asset]
        assert m["rows_in"].value == m["rows_out"].value + q.filter(pl.col("asset") == asset).height
    r = meta["residual_images"]
    assert r["rows_in"].value == r["rows_out"].value + r["rows_quarantined"].value == r["rows_out"].value + 1


@pytest.mark.slow
def test_blocking_check_stops_downstream(tmp_path):
    # with the ingestion-time file check off, a missing image passes mimic_images; its blocking GX
    # check must then fail and keep study_pairs from running on it
    t = write_tiny(tmp_path / "raw", subjects=3)
    next((t.mimic_root / "files").rglob("*.jpg")).unlink()
    res = resources(t.mimic_root, t.diffvqa_root, tmp_path, check_files=False)
    result = dg.materialize([D.mimic_images, D.diffvqa_questions, D.study_pairs, D.mimic_images_valid],
                            resources=res, raise_on_error=False)
    assert checks_of(result)["mimic_images_valid"] is False
    assert "study_pairs" not in materializations(result)
    assert not (tmp_path / "prepared/pairs.parquet").exists()


@pytest.mark.slow
def test_dagster_cli_materializes_an_asset(tmp_path):
    t = write_tiny(tmp_path / "raw", subjects=2)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(mimic_root=str(t.mimic_root), diffvqa_root=str(t.diffvqa_root),
                          prepared_root=str(tmp_path / "prepared"), residuals_root=str(tmp_path / "residuals"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "home").mkdir()
    env = {**os.environ, "SPOTDIFF_PARAMS": str(tmp_path / "params.yaml"), "DAGSTER_HOME": str(tmp_path / "home"),
           "PYTHONPATH": str(REPO)}
    for var in ("SPOTDIFF_MIMIC_ROOT", "SPOTDIFF_DIFFVQA_ROOT", "SPOTDIFF_PROFILE"):
        env.pop(var, None)
    dagster = Path(sys.executable).parent / "dagster"
    (tmp_path / "home/dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    # the code location's executor runs the steps in the run's process (pipelines/definitions.py)
    res = subprocess.run([str(dagster), "asset", "materialize", "--select", "mimic_images,diffvqa_questions",
                          "-m", "pipelines.definitions"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # the checks as the instance recorded them (its event log, not the console's lines)
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        (run,) = instance.get_runs()
        records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
        evaluations = {r.event_log_entry.dagster_event.event_specific_data.asset_key.to_user_string():
                       r.event_log_entry.dagster_event.event_specific_data.passed for r in records}
    assert evaluations == {"mimic_images": True, "diffvqa_questions": True}, evaluations
    images = pl.read_parquet(tmp_path / "prepared/images.parquet")
    assert images.height == len(t.images)
    assert (tmp_path / "prepared/questions.parquet").exists()


def test_control_pairing_from_a_dagster_run_config(smoke_dataset, tmp_path):
    """`sets` on the params resource switches the pairing (See-in-Pairs) as `--set` does in the
    CLI; the blocking control suite runs on what the asset wrote."""
    res = resources(smoke_dataset / "mimic-cxr-jpg", smoke_dataset / "medical-diff-vqa", tmp_path,
                    sets=["pairs.single_image_reference=control"])
    result = dg.materialize([D.mimic_images, D.diffvqa_questions, D.study_pairs, D.study_pairs_valid,
                             D.study_pairs_controls_valid], resources=res)
    assert result.success and all(checks_of(result).values()), checks_of(result)
    pairs = pl.read_parquet(tmp_path / "prepared/pairs.parquet")
    ctl = pairs.filter(pl.col("reference") == "control")
    assert ctl.height > 0 and (ctl["ref_subject_id"] != ctl["subject_id"]).all()
    assert materializations(result)["study_pairs"]["controls"].value == ctl["ref_study_id"].n_unique()
