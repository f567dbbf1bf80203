"""Dagster assets of the model: `pretrained_encoder`, `real_model` (the Ray Train run) and
`evaluation` (the test predictions scored into evaluate.metrics_file) — each one call of
models.lifecycle, the same as `spotdiff pretrain|train|evaluate` and the DVC stages. Upstream:
`residual_images`, which runs after every new pairs.parquet and recomputes the groups whose rows
changed: training reads both, and hanging it under the shards alone means it starts once those
groups are recomputed, not while they still are."""

# No `from __future__ import annotations` here: Dagster resolves an asset's Config parameter
# annotation at definition time, and a string "TrainRunConfig" fails to load the code location.
import json

import dagster as dg

from assets.params import load_params, parse_sets
from pipelines.defs.automation import FOLLOW
from pipelines.defs.failures import one_line_failures


class TrainRunConfig(dg.Config):
    profile: str | None = None      # params.yaml profile; None: params' own `profile`
    sets: list[str] = []            # overrides, e.g. ["train.epochs=3"]
    run_name: str = ""              # reuse a name to resume that Ray Train run


class EvaluationConfig(dg.Config):
    profile: str | None = None


@dg.asset(automation_condition=FOLLOW, deps=["residual_images"], group_name="model", kinds={"pytorch", "mlflow"})
@one_line_failures
def pretrained_encoder(context: dg.AssetExecutionContext, config: TrainRunConfig) -> dg.MaterializeResult:
    """E_I pretrained on single images (finding presence and level); skipped, and said so, when
    pretrain.epochs is 0 or model.pretrained_resnet names the user's own weights."""
    from models.lifecycle.pretrain import pretrain

    report = pretrain(load_params(profile=config.profile, overrides=parse_sets(config.sets) or None))
    return dg.MaterializeResult(metadata={k: (v if isinstance(v, (int, float, str)) else json.dumps(v))
                                          for k, v in report.items()})


@dg.asset(automation_condition=FOLLOW, deps=["residual_images", pretrained_encoder], group_name="model",
          kinds={"pytorch", "ray", "mlflow"})
@one_line_failures
def real_model(context: dg.AssetExecutionContext, config: TrainRunConfig) -> dg.MaterializeResult:
    """ReAl trained on Ray Train; the best-on-validation checkpoint, tracked in MLflow."""
    from models.lifecycle.train import train

    params = load_params(profile=config.profile, overrides=parse_sets(config.sets) or None)
    result = train(params, config.run_name or None, tags={"dagster_run_id": context.run_id})
    return dg.MaterializeResult(metadata={
        "run_name": result.run_name,
        "mlflow_run_id": result.mlflow_run_id or "",
        "best_checkpoint": dg.MetadataValue.path(str(result.best_checkpoint)),
        "steps": result.steps,
        "reused": result.reused,  # the model of the same inputs was already there: no new run
        **{k: float(v) for k, v in result.val_metrics.items() if k.startswith("val_")},
    })


@dg.asset(automation_condition=FOLLOW, deps=[real_model], group_name="model", kinds={"python"})
@one_line_failures
def evaluation(context: dg.AssetExecutionContext, config: EvaluationConfig) -> dg.MaterializeResult:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr and change P/R/F1 (with intervals) of the test
    predictions, in evaluate.metrics_file."""
    from models.lifecycle.evaluate import evaluate

    report, out = evaluate(load_params(profile=config.profile))
    return dg.MaterializeResult(metadata={
        "questions": report["n"], "metrics_file": dg.MetadataValue.path(str(out)),
        **{k: float(v) for k, v in report.items() if isinstance(v, (int, float))}})


defs = dg.Definitions(assets=[pretrained_encoder, real_model, evaluation])
