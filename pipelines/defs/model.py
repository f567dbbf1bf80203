"""Dagster assets of the model: `real_model` launches the Ray Train run (same `launch()` as
`spotdiff train` and the DVC stage), `evaluation` re-scores its test predictions with the
field's metrics plus change-F1. Upstream: the data assets `residual_images` (the shards) and
`study_pairs` (pairs.parquet)."""

# No `from __future__ import annotations` here: Dagster resolves an asset's Config parameter
# annotation at definition time, and a string "TrainRunConfig" fails to load the code location.
import json
from pathlib import Path

import dagster as dg

from pipelines.params import load_params


class TrainRunConfig(dg.Config):
    profile: str | None = None      # params.yaml profile; None: params' own `profile`
    sets: list[str] = []            # overrides, e.g. ["train.epochs=3"]
    run_name: str = ""              # reuse a name to resume that Ray Train run


class EvaluationConfig(dg.Config):
    profile: str | None = None


@dg.asset(deps=["residual_images", "study_pairs"], group_name="model", kinds={"pytorch", "mlflow"})
def pretrained_encoder(context: dg.AssetExecutionContext, config: TrainRunConfig) -> dg.MaterializeResult:
    """E_I pretrained on single images (finding presence and level); skipped, and said so, when
    pretrain.epochs is 0 or model.pretrained_resnet names the user's own weights."""
    from pipelines.commands.pretrain import pretrain_from_params
    from pipelines.commands.train import parse_sets

    params = load_params(profile=config.profile, overrides=parse_sets(config.sets) or None)
    report = pretrain_from_params(params)
    return dg.MaterializeResult(metadata={k: (v if isinstance(v, (int, float, str)) else json.dumps(v))
                                          for k, v in report.items()})


@dg.asset(deps=["residual_images", "study_pairs", pretrained_encoder], group_name="model",
          kinds={"pytorch", "ray", "mlflow"})
def real_model(context: dg.AssetExecutionContext, config: TrainRunConfig) -> dg.MaterializeResult:
    """ReAl trained on Ray Train; the best-on-validation checkpoint, tracked in MLflow."""
    from pipelines.commands.train import launch, parse_sets

    params = load_params(profile=config.profile, overrides=parse_sets(config.sets) or None)
    result = launch(params, config.run_name or None, tags={"dagster_run_id": context.run_id})
    return dg.MaterializeResult(metadata={
        "run_name": result.run_name,
        "mlflow_run_id": result.mlflow_run_id or "",
        "best_checkpoint": dg.MetadataValue.path(str(result.best_checkpoint)),
        "steps": result.steps,
        **{k: float(v) for k, v in result.val_metrics.items() if k.startswith("val_")},
    })


@dg.asset(deps=[real_model], group_name="model", kinds={"python"})
def evaluation(context: dg.AssetExecutionContext, config: EvaluationConfig) -> dg.MaterializeResult:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr and change P/R/F1 of the test predictions."""
    from models.metrics import score_predictions
    from pipelines.params import resolve_path

    params = load_params(profile=config.profile)
    out = Path(resolve_path(params["train"]["output_dir"]))
    records = [json.loads(line) for line in (out / "test_predictions.jsonl").read_text().splitlines()]
    scores = score_predictions([r["prediction"] for r in records], [r["answer"] for r in records])
    (out / "evaluation.json").write_text(json.dumps(scores, indent=2, sort_keys=True))
    return dg.MaterializeResult(metadata={
        "questions": len(records),
        **{k: float(v) for k, v in scores.items() if isinstance(v, (int, float))}})


defs = dg.Definitions(assets=[pretrained_encoder, real_model, evaluation])
