"""The Dagster UI path and the loop, for real: what "Materialize all" in a headless Chromium and
the automation sensors on the daemon did to a fresh clone (the run itself:
tests/pipelines/dagster_chain.py, whose process then goes on with `dvc repro` in the same clone,
judged by test_registry_chain.py).

`python -m pytest tests/pipelines/test_dagster_ui.py` (source scripts/env.sh first);
SPOTDIFF_SCREENSHOT=path.png keeps the asset-graph picture (docs/img/dagster_asset_graph.png is
made that way)."""

import pytest

from assets.residuals import GROUPS

CHAIN_ASSETS = {"embedded_dataset", "mimic_images", "diffvqa_questions", "study_pairs", "quarantine", "residual_images",
                "pretrained_encoder", "real_model", "evaluation", "registered_model", "champion_model"}

# the chain's first test waits for its process when it has not ended yet (above its bounded waits)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def test_the_asset_graph_is_one_chain_from_the_embedded_data(dagster_chain):
    deps = dagster_chain["deps"]
    assert CHAIN_ASSETS <= set(deps), set(deps)
    # one connected graph: data -> model -> evaluation -> registry
    assert "residual_images" in deps["real_model"] and "evaluation" in deps["registered_model"]
    assert deps["champion_model"] == {"registered_model"}
    assert deps["mimic_images"] == deps["diffvqa_questions"] == {"embedded_dataset"}


def test_materialize_all_goes_from_no_data_to_a_champion(dagster_chain):
    seen = dagster_chain
    assert not seen["data_before"]  # a fresh clone has no data: "Materialize all" renders it
    assert len(seen["backfills"]) == 1, seen["backfills"]  # the button's one backfill of every partition
    runs = seen["backfill_runs"]
    assert runs and all(r["status"] == "SUCCESS" for r in runs), runs
    # the ten residual groups in one run, not ten (single-run backfill policy)
    assert len(seen["residual_runs"]) == 1, seen["residual_runs"]
    checks = seen["checks"]
    assert ("champion_model", "promotion_rule") in checks
    failed = {k: v for k, v in checks.items() if v is None or v["status"] != "SUCCEEDED"}
    assert not failed, failed
    # the evaluation pictures are in the registered model's metadata, inline
    for label in ("sample_sheet", "change_confusion"):
        assert seen["pictures"][label].startswith(f"![{label}.png](data:image/png;base64,"), label
    # the backfill itself ended as a success (its status flips on the daemon's next tick)
    assert seen["backfill_status"] in ("COMPLETED", "COMPLETED_SUCCESS")
    print(f"materialize all (backfill) took {seen['materialize_all_s']:.0f} s")


def test_the_loop_runs_itself_on_the_daemon(dagster_chain):
    seen = dagster_chain
    assert seen["registered_after_loop"] == seen["registered_before_loop"] + 1  # one new version
    assert seen["new_groups"], "the batch added no pairs"
    # one run over every group (single-run backfill policy), which recomputed only the new ones
    assert seen["loop_partitions"] == set(GROUPS) and len(seen["loop_runs"]) == 1, seen["loop_runs"]
    assert seen["recomputed"] == seen["new_groups"], (seen["recomputed"], seen["new_groups"])
    assert len(seen["new_groups"]) < len(seen["all_groups"])  # not everything was recomputed
    failed = {k: v for k, v in seen["loop_checks"].items() if v is None or v["status"] != "SUCCEEDED"}
    assert not failed, failed
    # idle: three polls with no new file start nothing, and nothing is left running
    assert set(seen["runs_after_idle"]) == set(seen["runs_before_idle"])
    assert set(seen["runs_after_idle"].values()) == {"SUCCESS"}, seen["runs_after_idle"]


def test_the_asset_graph_is_pictured(dagster_chain):
    assert dagster_chain["screenshot"].stat().st_size > 10_000
