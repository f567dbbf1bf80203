"""The model half of the Dagster code location and the CLI wiring:
python -m pytest tests/pipelines/test_model_defs.py -q"""

from pathlib import Path

import dagster as dg
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.commands.common import UserError
from assets.params import parse_sets
from pipelines.definitions import defs


def test_model_assets_hang_under_the_data_assets():
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("real_model")).parent_keys == {
        dg.AssetKey("residual_images"), dg.AssetKey("pretrained_encoder")}
    assert graph.get(dg.AssetKey("pretrained_encoder")).parent_keys == {dg.AssetKey("residual_images")}
    # the shards hang under pairs.parquet; a backfill of their groups is one run
    assert graph.get(dg.AssetKey("residual_images")).parent_keys == {dg.AssetKey("study_pairs")}
    assert graph.get(dg.AssetKey("residual_images")).backfill_policy == dg.BackfillPolicy.single_run()
    assert graph.get(dg.AssetKey("evaluation")).parent_keys == {dg.AssetKey("real_model")}


def test_set_overrides_parse_as_yaml_into_nested_sections():
    assert parse_sets(["train.epochs=3", "model.use_rfa=false", "train.resources_per_worker={CPU: 2}"]) == {
        "train": {"epochs": 3, "resources_per_worker": {"CPU": 2}}, "model": {"use_rfa": False}}
    with pytest.raises(UserError):
        parse_sets(["train.epochs"])


def test_train_without_data_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((Path(__file__).parents[2] / "params.yaml").read_text())
    monkeypatch.setenv("SPOTDIFF_PARAMS", str(tmp_path / "params.yaml"))
    result = CliRunner().invoke(app, ["train", "--profile", "smoke"])
    assert result.exit_code == 2
    flat = "".join(result.output.split())  # rich wraps long lines
    assert "residuals/manifest.json:notfound" in flat and "Traceback" not in result.output
