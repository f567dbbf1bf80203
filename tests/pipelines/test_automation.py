"""The loop's parts for real (pipelines/defs/automation.py): the raw-data sensor requests the
ingestion exactly when a table changes and skips otherwise; the eager conditions request each
asset below the ingestion once its parents have new materializations, and nothing on an idle
tick. `python -m pytest tests/pipelines/test_automation.py -q`"""

import shutil

import dagster as dg
import polars as pl
import pytest

from pipelines.defs import automation as A
from pipelines.defs import data as D
from pipelines.definitions import defs as ALL
from pipelines.resources import GreatExpectationsResource, SpotdiffParams


@pytest.fixture
def download(smoke_dataset, tmp_path):
    root = tmp_path / "download"
    shutil.copytree(smoke_dataset / "medical-diff-vqa", root / "vqa")
    shutil.copytree(smoke_dataset / "mimic-cxr-jpg", root / "mimic")
    return root


def _params(download, tmp_path) -> SpotdiffParams:
    return SpotdiffParams(profile="smoke", mimic_root=str(download / "mimic"), diffvqa_root=str(download / "vqa"),
                          prepared_root=str(tmp_path / "prepared"), residuals_root=str(tmp_path / "residuals"))


def test_the_sensor_fires_on_new_tables_and_skips_when_nothing_changed(download, tmp_path):
    params = _params(download, tmp_path)
    first = A.raw_data_sensor(dg.build_sensor_context(resources={"params": params}))
    assert isinstance(first, dg.RunRequest)
    assert {k.to_user_string() for k in first.asset_selection} == {"embedded_dataset", "mimic_images",
                                                                   "diffvqa_questions"}
    cursor = first.run_key  # the sensor's cursor is the key of what it saw
    idle = A.raw_data_sensor(dg.build_sensor_context(cursor=cursor, resources={"params": params}))
    assert isinstance(idle, dg.SkipReason) and "no new or changed" in idle.skip_message
    with (download / "vqa" / "mimic_pair_questions.csv").open("a") as f:  # a batch arrives
        f.write("\n")
    again = A.raw_data_sensor(dg.build_sensor_context(cursor=cursor, resources={"params": params}))
    assert isinstance(again, dg.RunRequest) and again.run_key != cursor


@pytest.mark.timeout(300)
def test_assets_below_the_ingestion_follow_new_data_and_idle_ticks_request_nothing(download, tmp_path):
    graph = ALL.resolve_asset_graph()
    for key in A.FOLLOWERS:
        assert graph.get(dg.AssetKey(key)).automation_condition is not None, key
    for key in ("embedded_dataset", *A.INGESTION):  # started by the sensor, not by conditions
        assert graph.get(dg.AssetKey(key)).automation_condition is None, key

    instance = dg.DagsterInstance.ephemeral()
    res = {"params": _params(download, tmp_path), "gx": GreatExpectationsResource()}
    assets = dg.Definitions(assets=[D.mimic_images, D.diffvqa_questions, D.study_pairs, D.quarantine], resources=res)
    tick = dg.evaluate_automation_conditions(defs=assets, instance=instance)
    assert tick.total_requested == 0  # nothing materialized upstream yet: nothing to follow
    assert dg.materialize([D.mimic_images, D.diffvqa_questions], resources=res, instance=instance).success
    tick = dg.evaluate_automation_conditions(defs=assets, instance=instance, cursor=tick.cursor)
    assert tick.get_num_requested(dg.AssetKey("study_pairs")) == 1
    # its other parent, study_pairs, is requested in the same tick: both go in one run, in order
    assert tick.get_num_requested(dg.AssetKey("quarantine")) == 1
    idle = dg.evaluate_automation_conditions(defs=assets, instance=instance, cursor=tick.cursor)
    assert idle.total_requested == 0


@pytest.mark.timeout(600)
def test_new_subjects_recompute_only_the_residual_groups_they_land_in(tmp_path):
    """A batch of new subjects (`synth.added_subjects`): after the ingestion and the pairs, every
    residual_images group is requested; run as one run over the range (what the daemon makes of
    the request: tests/pipelines/test_dagster_ui.py), only the groups whose rows changed are
    recomputed; the next tick, with nothing new, requests nothing."""
    from assets.synth.generate import generate
    from assets.synth.plan import SynthConfig

    base = dict(subjects=6, seed=3, image_size=64, render_size=48, workers=1)
    root = tmp_path / "emb"
    generate(root, SynthConfig(**base))
    params = SpotdiffParams(profile="smoke", mimic_root=str(root / "mimic-cxr-jpg"),
                            diffvqa_root=str(root / "medical-diff-vqa"), prepared_root=str(tmp_path / "prepared"),
                            residuals_root=str(tmp_path / "residuals"))
    res = {"params": params, "gx": GreatExpectationsResource()}
    follow = [D.study_pairs, D.residual_images]
    defs = dg.Definitions(assets=[D.mimic_images, D.diffvqa_questions, *follow], resources=res)
    instance = dg.DagsterInstance.ephemeral()
    groups = D.mimic_groups.get_partition_keys()

    def ingest_and_pair():
        assert dg.materialize([D.mimic_images, D.diffvqa_questions, D.study_pairs], resources=res,
                              instance=instance).success

    def residuals_as_requested(tick) -> list[str]:
        """The tick's request, run as the backfill daemon runs it under the single-run policy:
        one run over the range; returns the groups that run recomputed."""
        assert tick.get_requested_partitions(D.residual_images.key) == set(groups)
        rng = {"dagster/asset_partition_range_start": groups[0], "dagster/asset_partition_range_end": groups[-1]}
        done = dg.materialize([D.residual_images], resources=res, instance=instance, tags=rng)
        assert done.success
        metas = {m.partition: m.metadata for m in (e.materialization for e in done.get_asset_materialization_events())}
        assert set(metas) == set(groups)  # every partition of the range is recorded
        return next(iter(metas.values()))["recomputed"].value

    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance)  # before any data
    ingest_and_pair()
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    first = set(pl.read_parquet(tmp_path / "prepared/pairs.parquet")["group"])
    assert set(residuals_as_requested(tick)) == first  # first time: every group that has pairs
    # a tick sees that run before the batch lands (the daemon ticks every few seconds)
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    assert tick.total_requested == 0

    before = set(pl.read_parquet(tmp_path / "prepared/pairs.parquet")["subject_id"])
    generate(root, SynthConfig(**base, added_subjects=2))  # a batch arrives
    ingest_and_pair()
    pairs = pl.read_parquet(tmp_path / "prepared/pairs.parquet")
    grown = set(pairs.filter(~pl.col("subject_id").is_in(list(before)))["group"])
    assert grown and grown < set(pairs["group"]), "the batch should land in some groups, not all"
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    assert set(residuals_as_requested(tick)) == grown
    idle = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    assert idle.total_requested == 0
