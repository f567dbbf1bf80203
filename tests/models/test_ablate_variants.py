"""The See-in-Pairs row of the ablation, end to end on the smoke dataset: `run_variants` builds
the variant's own pairs (single-image questions against matched normal controls, GX-gated) and
residual shards, trains on all seven question types on real Ray Train, and logs per-type test
metrics to a real MLflow store. `python -m pytest tests/models/test_ablate_variants.py -q`"""

from pathlib import Path

import polars as pl
import pytest

pytestmark = pytest.mark.slow  # a real data build and a Ray Train run (~2 min)

VARIANT = "+all question types+See-in-Pairs controls"


@pytest.fixture
def ray_down_after():
    """train() starts Ray in this process when none runs (as `spotdiff ablate` does in its own);
    later tests start theirs, so it goes down here."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def test_see_in_pairs_variant_runs_from_the_ingested_tables_to_mlflow(smoke_dataset, tmp_path, ray_down_after):
    from mlflow import MlflowClient

    from assets import prepare
    from assets.params import load_params, storage_for
    from models.lifecycle.ablate import run_variants

    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml", profile="smoke")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params["data"].update(mimic_root=str(smoke_dataset / "mimic-cxr-jpg"),
                          diffvqa_root=str(smoke_dataset / "medical-diff-vqa"),
                          prepared_root=str(tmp_path / "prepared"), residuals_root=str(tmp_path / "residuals"))
    params["tracking"]["uri"] = uri
    params["train"].update(epochs=1, storage_path=str(tmp_path / "ray"), log_dir=str(tmp_path / "logs"))
    prepare.run_ingest(storage_for(params["data"]["mimic_root"]), storage_for(params["data"]["diffvqa_root"]),
                       storage_for(params["data"]["prepared_root"]), True, ["all"])

    lines: list[str] = []
    run_variants(params, [0], [VARIANT], "see", log=lines.append, root=str(tmp_path / "ablate"))

    data = tmp_path / "ablate/see/pall-question-typespSee-in-Pairs-controls-data"
    pairs = pl.read_parquet(data / "prepared/pairs.parquet")
    ctl = pairs.filter(pl.col("reference") == "control")
    assert ctl.height > 0 and (ctl["question_type"] != "difference").all()
    assert (ctl["subject_id"] != ctl["ref_subject_id"]).all()
    assert (pairs.filter(pl.col("question_type") == "difference")["reference"] == "previous").all()
    assert any("variant data:" in line for line in lines)
    # the variant's shards hold the control pairs too
    assert (data / "residuals/manifest.json").exists()

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(params["tracking"]["experiment"]).experiment_id],
                              "tags.ablation = 'see'")
    assert len(runs) == 1 and runs[0].data.tags["variant"] == VARIANT
    metrics = runs[0].data.metrics
    scored = {k.split("/")[1] for k in metrics if k.startswith("test_type/")}
    assert "difference" in scored and len(scored) >= 4, sorted(scored)
    # trained where the variant's data is, not on the default pairs
    assert runs[0].data.params.get("data.prepared_root", "").endswith("-data/prepared")
